"""ROS 2 launch files and executables: the launch files (read with `ast`, and imported with
stand-ins for `launch`/`launch_ros`) name only executables that exist and parameters the
nodes declare, with the declared types; the nodes really declare those parameters and read
the parameter files `mase ros` writes; `mase ros` is registered."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ros_nodes import params as P
from ros_nodes.launching import (LAUNCH_DIR, NodeSpec, ParameterValue, launch_arguments, load_launch_file,
                                 node_command, parse_assignments, resolve, write_params_file)

from conftest import ROOT

pytestmark = pytest.mark.ros
LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))


def test_both_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} == {"turtlebots_real.launch.py", "turtlebots_sim.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_are_standard_ros2_python_launch_files(path):
    tree = ast.parse(path.read_text())
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in functions
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("launch", "LaunchDescription") in imports and ("launch_ros.actions", "Node") in imports
    assert {m for m, _ in imports} <= {"launch", "launch.actions", "launch.substitutions", "launch_ros.actions",
                                       "launch_ros.parameter_descriptions"}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]
    assert calls
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        assert {"package", "executable", "namespace", "parameters"} <= set(keywords)
        executable = ast.literal_eval(keywords["executable"])
        # the executable is a console script of this project whose function exists
        assert executable in scripts, executable
        module, function = scripts[executable].split(":")
        assert P.EXECUTABLES[executable][0] == module  # what `mase ros` runs with python -m
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        source = ast.parse(open(spec.origin).read())
        assert function in {n.name for n in source.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_set_only_declared_parameters_with_their_types(path):
    description = load_launch_file(path)
    specs = resolve(description)  # every LaunchConfiguration has a declared argument with a default
    assert specs
    for spec in specs:
        declared = P.EXECUTABLES[spec.executable][1]
        unknown = set(spec.parameters) - set(declared)
        assert not unknown, f"{spec.fqn} sets undeclared parameters {unknown}"
        for name, value in spec.parameters.items():
            assert type(value) is type(declared[name]), f"{spec.fqn}: {name} is {value!r}, declared {declared[name]!r}"
        for name, kind in spec.typed.items():
            assert kind is type(declared[name]), f"{spec.fqn}: {name} typed {kind}"
    namespaces = {s.namespace for s in specs if s.executable == "mase-executor"}
    assert namespaces == {"tb1", "tb2"}
    assert {s.parameters["robot_id"] for s in specs if s.executable == "mase-executor"} == {"tb1", "tb2"}
    assert [s.fqn for s in specs if s.executable == "mase-bridge"] == ["/mase/bridge"]
    assert len({s.fqn for s in specs}) == len(specs)
    # the tokens can be given; unknown arguments are refused
    arguments = launch_arguments(description)
    resolve(description, {name: "secret" for name in arguments if name.startswith("token")})
    with pytest.raises(ValueError, match="unknown launch argument"):
        resolve(description, {"no_such_argument": "1"})


def test_the_sim_launch_starts_robots_in_their_cells_and_the_real_one_maps_odometry_to_them():
    from ros_nodes.geometry import GridFrame

    sim = resolve(load_launch_file(LAUNCH_DIR / "turtlebots_sim.launch.py"), {"token_tb1": "0123", "seed": "4"})
    real = resolve(load_launch_file(LAUNCH_DIR / "turtlebots_real.launch.py"))
    from planner.maps import load_map

    # the start cells of the map's [robots] section
    starts = {t.robot_id: tuple(t.start) for t in load_map(ROOT / "maps" / "salp" / "salp-demo.map").robots}
    assert starts["tb2"] == (9, 1)
    for spec in sim:
        if spec.executable == "mase-turtlebot-sim":
            executor = next(s for s in sim if s.fqn == f"/{spec.namespace}/executor")
            frame = GridFrame(executor.parameters["cell_size"], executor.parameters["origin_x"],
                              executor.parameters["origin_y"])
            assert frame.cell_of(spec.parameters["start_x"], spec.parameters["start_y"]) == starts[spec.namespace]
            assert spec.parameters["seed"] == 4
    assert next(s for s in sim if s.fqn == "/tb1/executor").parameters["token"] == "0123"  # a string stays one
    assert not [s for s in real if s.executable == "mase-turtlebot-sim"]
    for spec in real:
        if spec.executable == "mase-executor":
            p = spec.parameters
            frame = GridFrame(p["cell_size"], p["origin_x"], p["origin_y"], p.get("origin_yaw", 0.0))
            assert frame.cell_of(0.0, 0.0) == starts[spec.namespace]  # odometry starts at the start cell


def test_stand_ins_do_not_leak_and_assignments_parse():
    before = {name: sys.modules.get(name) for name in ("launch", "launch_ros", "launch_ros.actions")}
    load_launch_file(LAUNCH_FILES[0])
    assert {name: sys.modules.get(name) for name in before} == before
    assert parse_assignments(["a:=1", "b:=x:=y"]) == {"a": "1", "b": "x:=y"}
    with pytest.raises(ValueError):
        parse_assignments(["a=1"])
    assert isinstance(ParameterValue("1", value_type=int), ParameterValue)


def test_nodes_declare_every_parameter_and_read_the_parameter_files(tmp_path):
    """Create each node in this process from the command line `mase ros` would use (its
    parameters file) and compare what it declared with params.py."""
    rclpy = pytest.importorskip("rclpy", reason="needs the ros extra")

    from ros_nodes.bridge_node import BridgeNode
    from ros_nodes.executor_node import ExecutorNode
    from ros_nodes.processes import pick_domain_id
    from ros_nodes.turtlebot_sim_node import TurtlebotSimNode

    classes = {"mase-executor": ExecutorNode, "mase-bridge": BridgeNode, "mase-turtlebot-sim": TurtlebotSimNode}
    overrides = {"mase-executor": {"token": "0123", "service_url": "http://127.0.0.1:9", "cell_size": 0.25,
                                   "wait_for_go": True},
                 "mase-bridge": {"token": "true", "service_url": "http://127.0.0.1:9", "episodes": 7},
                 "mase-turtlebot-sim": {"start_x": 1.5, "seed": 3}}
    for executable, cls in classes.items():
        spec = NodeSpec("mase", executable, "node_under_test", "tb9", overrides[executable])
        params_file = write_params_file(spec, tmp_path / f"{executable}.yaml")
        args = node_command(spec, params_file)[3:]  # what follows `python -m module`
        context = rclpy.Context()
        rclpy.init(args=["x", *args], context=context, domain_id=pick_domain_id())
        try:
            node = cls(context=context)
            try:
                declared = P.EXECUTABLES[executable][1]
                assert set(declared) <= set(node.list_parameters([], 0).names), executable
                for name, default in declared.items():
                    value = node.get_parameter(name).value
                    assert value == overrides[executable].get(name, default), (executable, name, value)
                    assert type(value) is type(default)
                assert node.get_fully_qualified_name() == "/tb9/node_under_test"
            finally:
                if hasattr(node, "on_exit"):
                    node.on_exit()
                node.destroy_node()
        finally:
            rclpy.shutdown(context=context)


def test_bad_parameters_exit_with_status_2(tmp_path):
    pytest.importorskip("rclpy", reason="needs the ros extra")
    spec = NodeSpec("mase", "mase-executor", "executor", "tb1", {"cell_size": -1.0})
    command = node_command(spec, write_params_file(spec, tmp_path / "p.yaml"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "cell_size must be a positive number" in result.stderr


def test_mase_ros_is_registered():
    result = subprocess.run([sys.executable, "-m", "mase", "ros", "demo", "--method", "naive"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and "--sim" in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "mase", "ros", "--help"], capture_output=True, text=True,
                               timeout=60, cwd=ROOT).stdout
    assert "demo" in help_text and "launch" in help_text


def test_an_ament_prefix_lets_ros2_launch_find_the_package(tmp_path):
    """What `ros2 launch mase <file>` and launch_ros's Node(package="mase", executable=...) look
    up, through ament_index_python (a ROS 2 wheel of the ros extra) as they do."""
    pytest.importorskip("ament_index_python", reason="needs the ros extra")
    if not (Path(sys.executable).parent / "mase-executor").is_file():
        pytest.skip("the project's console scripts are not installed beside this Python (make test installs them)")
    prefix = tmp_path / "prefix"
    result = subprocess.run([sys.executable, "-m", "mase", "ros", "install", str(prefix)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert f'export AMENT_PREFIX_PATH="{prefix}' in result.stdout
    probe = ("import json, os\n"
             "from ament_index_python.packages import get_package_prefix, get_package_share_directory\n"
             "share = get_package_share_directory('mase')\n"
             "print(json.dumps({'prefix': get_package_prefix('mase'), 'share': share,"
             " 'launch': sorted(f for _, _, fs in os.walk(share, followlinks=True) for f in fs if f.endswith('.launch.py'))}))")
    env = {**os.environ, "AMENT_PREFIX_PATH": f"{prefix}{os.pathsep}/nonexistent"}
    found = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                                      timeout=60, check=True).stdout)
    assert found["prefix"] == str(prefix) and found["share"] == str(prefix / "share" / "mase")
    assert found["launch"] == sorted(p.name for p in LAUNCH_FILES)
    for path in LAUNCH_FILES:
        assert (prefix / "share" / "mase" / "launch" / path.name).read_text() == path.read_text()
    package = ET.parse(prefix / "share" / "mase" / "package.xml").getroot()
    assert package.get("format") == "3" and package.findtext("name") == "mase"
    assert package.find("export/build_type").text == "ament_python"
    # every executable the launch files name is where launch_ros looks, and runs
    named = {s.executable for path in LAUNCH_FILES for s in resolve(load_launch_file(path))}
    for executable in named:
        assert os.access(prefix / "lib" / "mase" / executable, os.X_OK), executable
    spec = NodeSpec("mase", "mase-executor", "executor", "tb1", {"cell_size": -1.0})
    params = write_params_file(spec, tmp_path / "p.yaml")
    command = node_command(spec, params)  # [python, -m, module, --ros-args, ...]: the executable instead
    run = subprocess.run([str(prefix / "lib" / "mase" / "mase-executor"), *command[3:]], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "cell_size must be a positive number" in run.stderr
    # refreshing the prefix replaces its links
    again = subprocess.run([sys.executable, "-m", "mase", "ros", "install", str(prefix)], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert again.returncode == 0, again.stderr
