"""Register this project as the ROS 2 package `mase` in an ament prefix, so that a system
ROS 2's `ros2 launch mase turtlebots_real.launch.py ...` finds its launch files and node
executables without a colcon build.

`launch_ros` finds a node's executable as `<prefix>/lib/<package>/<executable>` of the first
prefix on AMENT_PREFIX_PATH whose ament index lists the package, and `ros2 launch` finds a
launch file under `<prefix>/share/<package>/`. So the prefix gets, as symbolic links (a source
checkout's edits take effect, as with `colcon build --symlink-install`):

    share/ament_index/resource_index/packages/mase   (the index marker, empty)
    share/mase/package.xml                           (format 3, ament_python)
    share/mase/launch/*.launch.py                    -> ros_nodes/launch/
    lib/mase/mase-executor, mase-bridge, mase-turtlebot-sim -> the console scripts
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .launching import LAUNCH_DIR
from .params import EXECUTABLES, PACKAGE

MESSAGE_PACKAGES = ("rclpy", "geometry_msgs", "nav_msgs", "std_msgs", "std_srvs")


def package_xml(version: str) -> str:
    depends = "\n".join(f"  <exec_depend>{name}</exec_depend>" for name in MESSAGE_PACKAGES)
    return f"""<?xml version="1.0"?>
<package format="3">
  <name>{PACKAGE}</name>
  <version>{version}</version>
  <description>Multi-robot NSE mitigation: the executor, bridge and Turtlebot simulator nodes</description>
  <maintainer email="mase@example.invalid">mase</maintainer>
  <license>MIT</license>
{depends}
  <export>
    <build_type>ament_python</build_type>
  </export>
</package>
"""


def find_console_script(name: str) -> Path:
    """The installed console script `name`: next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / name
    found = beside if beside.is_file() else (Path(p) if (p := shutil.which(name)) else None)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable} or on PATH; "
                                "install the project first (pip install -e .)")
    return found.resolve()


def _link(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            raise FileExistsError(f"{link} is a folder; remove it or choose another prefix")
        link.unlink()
    link.symlink_to(target)
    return link


def install_prefix(prefix: str | Path) -> list[Path]:
    """Create (or refresh) the ament prefix; the paths made, in order."""
    from importlib.metadata import PackageNotFoundError, version

    prefix = Path(prefix).resolve()
    scripts = {name: find_console_script(name) for name in EXECUTABLES}  # all found before anything is written
    try:
        release = version("mase")
    except PackageNotFoundError:
        release = "0.0.0"
    made = []
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    made.append(marker)
    share = prefix / "share" / PACKAGE
    share.mkdir(parents=True, exist_ok=True)
    (share / "package.xml").write_text(package_xml(release))
    made.append(share / "package.xml")
    for launch_file in sorted(LAUNCH_DIR.glob("*.launch.py")):
        made.append(_link(launch_file.resolve(), share / "launch" / launch_file.name))
    for name, script in scripts.items():
        made.append(_link(script, prefix / "lib" / PACKAGE / name))
    return made


def environment_line(prefix: str | Path) -> str:
    """The shell line that puts the prefix first on AMENT_PREFIX_PATH."""
    return f'export AMENT_PREFIX_PATH="{Path(prefix).resolve()}${{AMENT_PREFIX_PATH:+{os.pathsep}$AMENT_PREFIX_PATH}}"'
