"""What travels on the topics, validated. Every parser raises ValueError with a one-line
reason; the nodes log it and drop the message.

* `/mase/policy_updates` (std_msgs/String, JSON): {"type": "policy", "scenario_id", "run_id"
  (null: the naive policies), "method", "summary", "robots": [...], "penalties": {robot_id:
  [[state_index, penalty], ...] (non-zero only)}}; reliable, transient local, depth 1, so a
  robot that starts late still gets the newest one.
* `/mase/nse_monitor` (String, JSON): the service's monitor ({"type": "monitor",
  "scenario_id", "current_penalty", "nse_state_rate", "observations", "zones_in_violation",
  "zone_penalties", "reporting_robots"}).
* `/mase/runs` (String, JSON): {"type": "run", "id", "status", "phase", "progress", ...}.
* `<robot>/status` (String, JSON): the executor's mode, state and cell.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_MESSAGE_CHARS = 5_000_000


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    yaw: float


def pose_from_odometry(position: tuple[float, float, float], orientation: tuple[float, float, float, float]) -> Pose:
    """Pose from an odometry message's position and orientation; ValueError if not finite."""
    from .geometry import yaw_from_quaternion

    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in position):
        raise ValueError(f"odometry position {tuple(position)} is not finite")
    return Pose(float(position[0]), float(position[1]), yaw_from_quaternion(*orientation))


def check_velocity(linear: float, angular: float, max_linear: float = math.inf, max_angular: float = math.inf) -> None:
    """A velocity command must be finite (and within generous bounds)."""
    if not (math.isfinite(linear) and math.isfinite(angular)):
        raise ValueError(f"velocity command ({linear}, {angular}) is not finite")
    if abs(linear) > 10 * max_linear or abs(angular) > 10 * max_angular:
        raise ValueError(f"velocity command ({linear:.3g}, {angular:.3g}) is implausibly large")


def _load(text: str, what: str) -> dict:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(f"{what} must be a JSON text of at most {MAX_MESSAGE_CHARS} characters")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    return data


def _optional_int(data: dict, key: str, what: str) -> int | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{what}: {key} must be an integer or null, got {value!r}")
    return value


@dataclass(frozen=True)
class PolicyUpdate:
    scenario_id: int
    run_id: int | None
    method: str | None
    penalties: dict[str, list[tuple[int, float]]]
    raw: dict


def parse_policy_update(text: str) -> PolicyUpdate:
    data = _load(text, "policy update")
    if data.get("type") != "policy":
        raise ValueError(f"policy update: type must be 'policy', got {data.get('type')!r}")
    scenario_id = _optional_int(data, "scenario_id", "policy update")
    if scenario_id is None:
        raise ValueError("policy update: scenario_id is missing")
    run_id = _optional_int(data, "run_id", "policy update")
    method = data.get("method")
    if method is not None and not isinstance(method, str):
        raise ValueError("policy update: method must be a string")
    penalties = data.get("penalties", {})
    if not isinstance(penalties, dict):
        raise ValueError("policy update: penalties must map robot ids to [state_index, penalty] pairs")
    clean: dict[str, list[tuple[int, float]]] = {}
    for robot, pairs in penalties.items():
        if not isinstance(pairs, list):
            raise ValueError(f"policy update: penalties of {robot!r} must be a list")
        rows = []
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int)
                    and isinstance(pair[1], (int, float)) and math.isfinite(pair[1]) and pair[1] >= 0):
                raise ValueError(f"policy update: bad penalty entry {pair!r} of {robot!r}")
            rows.append((pair[0], float(pair[1])))
        clean[robot] = rows
    return PolicyUpdate(scenario_id, run_id, method, clean, data)


def policy_update(scenario_id: int, run: dict | None, penalties: dict[str, list[float]]) -> str:
    """The JSON announced on the policy topic for the scenario's current run (None: naive)."""
    sparse = {robot: [[i, float(p)] for i, p in enumerate(values) if p > 0] for robot, values in penalties.items()}
    body = {"type": "policy", "scenario_id": scenario_id, "run_id": run["id"] if run else None,
            "method": run["method"] if run else "naive", "summary": run.get("summary") if run else None,
            "robots": run.get("robots", []) if run else [], "penalties": sparse}
    return json.dumps(body)


def parse_status(text: str) -> dict:
    data = _load(text, "status")
    if data.get("type") != "status" or not isinstance(data.get("robot_id"), str) \
            or not isinstance(data.get("mode"), str):
        raise ValueError("status needs type 'status', robot_id and mode")
    return data


def parse_monitor(text: str) -> dict:
    data = _load(text, "monitor")
    if data.get("type") != "monitor":
        raise ValueError("monitor needs type 'monitor'")
    return data
