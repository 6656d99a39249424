"""Two simulated Turtlebots on the salp demo map (maps/salp/salp-demo.map): the metareasoner
bridge, and per robot (/tb1, /tb2) a kinematic simulator and an executor.

    ros2 launch mase turtlebots_sim.launch.py service_url:=http://127.0.0.1:8000 \
        operator_token:=... token_tb1:=... token_tb2:=...
    mase ros launch ros_nodes/launch/turtlebots_sim.launch.py <the same arguments>   # without launch_ros

The simulators start each robot at the centre of its start cell facing east; the executors'
grid origin is the odometry origin, so cell (x, y) is at (x * cell_size, -y * cell_size).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "mase"
ROBOTS = (("tb1", (1, 1)), ("tb2", (9, 1)))  # robot id, start cell [x, y] (the map's [robots] section)
CELL_SIZE = 0.5  # metres per grid cell (about a Turtlebot's footprint with margin)

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
    ("seed", "0", int, "seed of the mitigation run and of the simulators' noise"),
    ("max_linear_speed", "0.22", float, "m/s (Turtlebot3 burger)"),
    ("max_angular_speed", "2.84", float, "rad/s"),
    ("action_duration", "1.0", float, "seconds per pick up / deposit / wait"),
    ("control_rate", "20.0", float, "executor control rate (Hz)"),
    ("linear_noise", "0.05", float, "relative std of the simulated linear velocity"),
    ("angular_noise", "0.05", float, "relative std of the simulated angular velocity"),
    ("drift_noise", "0.02", float, "rad/s std of the simulated heading drift"),
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
            package=PACKAGE, executable="mase-turtlebot-sim", namespace=robot_id, name="turtlebot_sim",
            output="screen",
            parameters=[{"start_x": x * CELL_SIZE, "start_y": -y * CELL_SIZE, "start_yaw": 0.0,
                         "max_linear_speed": arg("max_linear_speed"), "max_angular_speed": arg("max_angular_speed"),
                         "linear_noise": arg("linear_noise"), "angular_noise": arg("angular_noise"),
                         "drift_noise": arg("drift_noise"), "seed": arg("seed")}]))
        entities.append(Node(
            package=PACKAGE, executable="mase-executor", namespace=robot_id, name="executor", output="screen",
            parameters=[{"service_url": arg("service_url"), "scenario_id": arg("scenario_id"),
                         "robot_id": robot_id, "token": arg(f"token_{robot_id}"), "cell_size": CELL_SIZE,
                         "origin_x": 0.0, "origin_y": 0.0, "max_linear_speed": arg("max_linear_speed"),
                         "max_angular_speed": arg("max_angular_speed"), "action_duration": arg("action_duration"),
                         "control_rate": arg("control_rate"), "wait_for_go": arg("wait_for_go")}]))
    return LaunchDescription(entities)
