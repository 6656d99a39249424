"""Two real Turtlebots on the salp demo map (maps/salp/salp-demo.map): the metareasoner
bridge and one executor per robot. Each Turtlebot runs its own base driver in its namespace
(/tb1, /tb2: `odom` out, `cmd_vel` in).

    ros2 launch mase turtlebots_real.launch.py service_url:=http://<service host>:8000 \
        operator_token:=... token_tb1:=... token_tb2:=...
    mase ros launch ros_nodes/launch/turtlebots_real.launch.py <the same arguments>   # without launch_ros

Place each robot at the centre of its start cell facing the map's east (+x, along the rows)
before starting its base: its odometry origin is then that cell, and the executor's grid
origin (the odometry coordinates of cell (0, 0)) follows from the start cell.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "mase"
ROBOTS = (("tb1", (1, 1)), ("tb2", (9, 1)))  # robot id, start cell [x, y] (the map's [robots] section)
CELL_SIZE = 0.5  # metres per grid cell: mark the floor with this grid

ARGUMENTS = (
    # name, default, type, description
    ("service_url", "http://127.0.0.1:8000", str, "the mase service"),
    ("scenario_id", "1", int, "scenario of the salp demo"),
    ("operator_token", "", str, "operator token for the bridge"),
    ("token_tb1", "", str, "robot token of tb1"),
    ("token_tb2", "", str, "robot token of tb2"),
    ("method", "gen-recon-cf", str, "mitigation method of the replan service"),
    ("update_fraction", "0.25", float, "fraction of robots that replan"),
    ("episodes", "100", int, "Monte Carlo episodes blamed"),
    ("seed", "0", int, "seed of the mitigation run"),
    ("max_linear_speed", "0.15", float, "m/s (a Turtlebot3 burger allows 0.22)"),
    ("max_angular_speed", "1.5", float, "rad/s"),
    ("action_duration", "2.0", float, "seconds per pick up / deposit / wait"),
    ("odom_timeout", "0.5", float, "seconds without odometry before the robot is stopped"),
    ("wait_for_go", "false", bool, "executors hold until /mase/go"),
)


def arg(name):
    kind = next(k for n, _, k, _ in ARGUMENTS if n == name)
    return ParameterValue(LaunchConfiguration(name), value_type=kind)


def generate_launch_description():
    entities = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, _, text in ARGUMENTS]
    entities.append(Node(
        package=PACKAGE, executable="mase-bridge", namespace="mase", name="bridge", output="screen",
        parameters=[{"service_url": arg("service_url"), "scenario_id": arg("scenario_id"),
                     "token": arg("operator_token"), "method": arg("method"),
                     "update_fraction": arg("update_fraction"), "episodes": arg("episodes"), "seed": arg("seed")}]))
    for robot_id, (x, y) in ROBOTS:
        entities.append(Node(
            package=PACKAGE, executable="mase-executor", namespace=robot_id, name="executor", output="screen",
            parameters=[{"service_url": arg("service_url"), "scenario_id": arg("scenario_id"),
                         "robot_id": robot_id, "token": arg(f"token_{robot_id}"), "cell_size": CELL_SIZE,
                         "origin_x": -x * CELL_SIZE, "origin_y": y * CELL_SIZE, "origin_yaw": 0.0, "flip_y": True,
                         "max_linear_speed": arg("max_linear_speed"), "max_angular_speed": arg("max_angular_speed"),
                         "action_duration": arg("action_duration"), "odom_timeout": arg("odom_timeout"),
                         "wait_for_go": arg("wait_for_go")}]))
    return LaunchDescription(entities)
