"""Read the ROS 2 Python launch files in `launch/` without `launch`/`launch_ros`, and start
the nodes they describe as plain processes (`mase ros demo`, `mase ros launch`).

`ros2 launch` needs the `launch` and `launch_ros` packages, which are not on PyPI. The launch
files here use only `LaunchDescription`, `DeclareLaunchArgument`, `LaunchConfiguration`,
`launch_ros.actions.Node` and `launch_ros.parameter_descriptions.ParameterValue`; this module
provides stand-ins for exactly those, imports a launch file with them, resolves its arguments
and turns each Node into a command line: `python -m <module> --ros-args -r __node:=<name>
-r __ns:=/<namespace> --params-file <yaml>`. On a machine with ROS 2 the same files work with
`ros2 launch` once the package is installed in a colcon workspace.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .params import EXECUTABLES

LAUNCH_DIR = Path(__file__).resolve().parent / "launch"


# -- stand-ins --------------------------------------------------------------------------------
class LaunchDescription:
    def __init__(self, entities=None) -> None:
        self.entities = list(entities or [])

    def add_action(self, action) -> None:
        self.entities.append(action)


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value: str | None = None, description: str = "", **_: Any) -> None:
        self.name, self.default_value, self.description = name, default_value, description


class LaunchConfiguration:
    def __init__(self, variable_name: str, default: str | None = None) -> None:
        self.variable_name, self.default = variable_name, default


class ParameterValue:
    def __init__(self, value, value_type=None) -> None:
        self.value, self.value_type = value, value_type


class Node:
    def __init__(self, *, package: str, executable: str, name: str | None = None, namespace: str | None = None,
                 parameters=None, remappings=None, output: str | None = None, **_: Any) -> None:
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.output = output


def stub_modules() -> dict[str, types.ModuleType]:
    modules = {}
    for name, attrs in {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
        "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
    }.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        modules[name] = module
    modules["launch"].actions = modules["launch.actions"]
    modules["launch"].substitutions = modules["launch.substitutions"]
    modules["launch_ros"].actions = modules["launch_ros.actions"]
    modules["launch_ros"].parameter_descriptions = modules["launch_ros.parameter_descriptions"]
    return modules


# -- reading a launch file ----------------------------------------------------------------------
@dataclass
class NodeSpec:
    package: str
    executable: str
    name: str
    namespace: str
    parameters: dict[str, Any] = field(default_factory=dict)
    typed: dict[str, type] = field(default_factory=dict)  # parameters given with ParameterValue(value_type=...)

    @property
    def fqn(self) -> str:
        return f"/{self.namespace.strip('/')}/{self.name}" if self.namespace.strip("/") else f"/{self.name}"

    @property
    def module(self) -> str:
        if self.executable not in EXECUTABLES:
            raise ValueError(f"unknown executable {self.executable!r}; known: {', '.join(EXECUTABLES)}")
        return EXECUTABLES[self.executable][0]


def _yaml_scalar(text: str) -> Any:
    """How launch_ros reads a substituted parameter value (YAML scalars)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _convert(text: str, kind) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return lowered == "true"
    return kind(text)


def load_launch_file(path: str | Path) -> LaunchDescription:
    """Import a launch file with the stand-ins and return its LaunchDescription."""
    path = Path(path)
    saved = {name: sys.modules.get(name) for name in stub_modules()}
    sys.modules.update(stub_modules())
    try:
        spec = importlib.util.spec_from_file_location(f"_mase_launch_{path.stem.replace('.', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
    finally:
        for name, original in saved.items():
            if original is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = original
    if not isinstance(description, LaunchDescription):
        raise ValueError(f"{path}: generate_launch_description() must return a LaunchDescription")
    return description


def launch_arguments(description: LaunchDescription) -> dict[str, DeclareLaunchArgument]:
    return {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}


def resolve(description: LaunchDescription, arguments: dict[str, str] | None = None) -> list[NodeSpec]:
    """The nodes of a launch description with every substitution resolved."""
    declared = launch_arguments(description)
    arguments = dict(arguments or {})
    unknown = sorted(set(arguments) - set(declared))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}; declared: {', '.join(sorted(declared))}")

    def text_of(value) -> str:
        if isinstance(value, LaunchConfiguration):
            name = value.variable_name
            if name in arguments:
                return str(arguments[name])
            if name in declared and declared[name].default_value is not None:
                return str(declared[name].default_value)
            if value.default is not None:
                return str(value.default)
            raise ValueError(f"launch argument {name!r} has no value and no default")
        if isinstance(value, (list, tuple)):
            return "".join(text_of(v) for v in value)
        return str(value)

    nodes = []
    for entity in description.entities:
        if not isinstance(entity, Node):
            continue
        params: dict[str, Any] = {}
        typed: dict[str, type] = {}
        for block in entity.parameters:
            if not isinstance(block, dict):
                raise ValueError(f"{entity.executable}: only dict parameters are supported, got {type(block).__name__}")
            for key, value in block.items():
                if isinstance(value, ParameterValue):
                    kind = value.value_type
                    raw = value.value
                    if isinstance(raw, (LaunchConfiguration, list, tuple)):
                        params[key] = _convert(text_of(raw), kind) if kind else _yaml_scalar(text_of(raw))
                    else:
                        params[key] = kind(raw) if kind else raw
                    if kind:
                        typed[key] = kind
                elif isinstance(value, LaunchConfiguration):
                    params[key] = _yaml_scalar(text_of(value))
                else:
                    params[key] = value
        nodes.append(NodeSpec(entity.package, entity.executable, entity.name or entity.executable,
                              (entity.namespace or "").strip("/"), params, typed))
    return nodes


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`name:=value` launch arguments, as `ros2 launch` takes them."""
    out = {}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"launch arguments are name:=value, got {item!r}")
        name, value = item.split(":=", 1)
        out[name] = value
    return out


def write_params_file(spec: NodeSpec, path: Path) -> Path:
    """A ROS 2 parameters file (JSON is YAML, and quoting keeps strings strings)."""
    path.write_text(json.dumps({spec.fqn: {"ros__parameters": spec.parameters}}, indent=1))
    return path


def node_command(spec: NodeSpec, params_file: Path, python: str = sys.executable) -> list[str]:
    args = [python, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:=/{spec.namespace}"]
    return args + ["--params-file", str(params_file)]
