"""Grid cells <-> floor poses.

A cell (x, y) of the map (column, row from the top-left corner) is a square of side
`cell_size` on the floor. `origin_x, origin_y` are the floor (odometry frame) coordinates of
the centre of cell (0, 0) and `origin_yaw` the direction, in that frame, of the map's +x axis.
With `flip_y` (default) map rows grow towards the frame's -y axis, so seen from above with x
east and y north the floor looks like the map file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Cell = tuple[int, int]


def wrap_angle(angle: float) -> float:
    """The same angle in [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Rotation about z of a unit quaternion (ValueError if it is not finite or is zero)."""
    values = (x, y, z, w)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"orientation {values} is not finite")
    norm = math.sqrt(sum(v * v for v in values))
    if norm < 1e-9:
        raise ValueError("orientation is a zero quaternion")
    x, y, z, w = (v / norm for v in values)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def quaternion_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


@dataclass(frozen=True)
class GridFrame:
    cell_size: float = 0.5
    origin_x: float = 0.0
    origin_y: float = 0.0
    origin_yaw: float = 0.0
    flip_y: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cell_size) and self.cell_size > 0):
            raise ValueError(f"cell_size must be a positive number, got {self.cell_size}")
        for name in ("origin_x", "origin_y", "origin_yaw"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")

    def cell_center(self, cell: Cell) -> tuple[float, float]:
        """Floor coordinates of a cell's centre."""
        gx = cell[0] * self.cell_size
        gy = (-cell[1] if self.flip_y else cell[1]) * self.cell_size
        c, s = math.cos(self.origin_yaw), math.sin(self.origin_yaw)
        return self.origin_x + c * gx - s * gy, self.origin_y + s * gx + c * gy

    def to_grid(self, x: float, y: float) -> tuple[float, float]:
        """Continuous grid coordinates (in cells) of a floor point; cell centres are integers."""
        dx, dy = x - self.origin_x, y - self.origin_y
        c, s = math.cos(self.origin_yaw), math.sin(self.origin_yaw)
        gx, gy = c * dx + s * dy, -s * dx + c * dy
        return gx / self.cell_size, (-gy if self.flip_y else gy) / self.cell_size

    def cell_of(self, x: float, y: float) -> Cell:
        """The cell a floor point lies in (ValueError for a non-finite point)."""
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"position ({x}, {y}) is not finite")
        gx, gy = self.to_grid(x, y)
        return int(math.floor(gx + 0.5)), int(math.floor(gy + 0.5))

    def distance_to_cell(self, x: float, y: float, cell: Cell) -> float:
        cx, cy = self.cell_center(cell)
        return math.hypot(x - cx, y - cy)

    def heading_of(self, direction: str) -> float:
        """Floor yaw of a map direction: east (+x), west, north (up the map), south."""
        up = math.pi / 2 if self.flip_y else -math.pi / 2
        base = {"east": 0.0, "west": math.pi, "north": up, "south": -up}[direction]
        return wrap_angle(base + self.origin_yaw)
