"""Every parameter each node declares, with its default (and so its type). The nodes
declare exactly these; the launch-file test checks launch files against them."""
from __future__ import annotations

EXECUTOR = {
    "service_url": "http://127.0.0.1:8000",  # the service (…/api/v1 is appended if missing)
    "scenario_id": 1,
    "robot_id": "tb1",
    "token": "",  # bearer token: a robot token for this robot (or an operator token)
    "cell_size": 0.5,  # m: side of a grid cell on the floor
    "origin_x": 0.0,  # m: odometry-frame x of the centre of cell (0, 0)
    "origin_y": 0.0,  # m: odometry-frame y of the centre of cell (0, 0)
    "origin_yaw": 0.0,  # rad: odometry-frame direction of the map's +x axis
    "flip_y": True,  # map rows grow towards -y (the map reads as seen from above)
    "control_rate": 20.0,  # Hz: control loop and cmd_vel rate
    "odom_timeout": 0.5,  # s: older odometry stops the robot (zero Twist)
    "arrive_tolerance": 0.05,  # m: this close to a cell's centre the robot is in that cell
    "action_duration": 1.0,  # s spent on an in-place action (pick up, deposit, wait)
    "max_linear_speed": 0.22,  # m/s
    "max_angular_speed": 2.84,  # rad/s
    "linear_gain": 3.0,
    "angular_gain": 4.0,
    "heading_tolerance": 0.35,  # rad: larger heading errors are turned in place
    "request_timeout": 2.0,  # s per HTTP request
    "backoff_initial": 0.5,  # s: first retry delay when the service is unreachable
    "backoff_max": 10.0,  # s: longest retry delay
    "policy_poll_period": 5.0,  # s: also check the scenario's current run this often (0: only on announcements)
    "policy_topic": "/mase/policy_updates",
    "go_topic": "/mase/go",
    "wait_for_go": False,  # hold still until a std_msgs/Empty arrives on go_topic
    "status_rate": 2.0,  # Hz: status messages (also sent on every change)
}

BRIDGE = {
    "service_url": "http://127.0.0.1:8000",
    "scenario_id": 1,
    "token": "",  # an operator token (runs, monitor and penalties need one)
    "method": "gen-recon-cf",  # mitigation method of runs started by the replan service
    "update_fraction": 0.25,
    "rounds": 1,
    "episodes": 100,
    "seed": 0,
    "poll_period": 1.0,  # s: how often the scenario's current run is checked
    "monitor_period": 1.0,  # s: how often the NSE monitor is relayed
    "request_timeout": 3.0,
    "backoff_initial": 0.5,
    "backoff_max": 10.0,
}

TURTLEBOT_SIM = {
    "start_x": 0.0,  # m
    "start_y": 0.0,  # m
    "start_yaw": 0.0,  # rad
    "rate": 50.0,  # Hz: integration and odom rate
    "max_linear_speed": 0.22,
    "max_angular_speed": 2.84,
    "linear_noise": 0.0,  # relative std of the executed linear velocity
    "angular_noise": 0.0,  # relative std of the executed angular velocity
    "drift_noise": 0.0,  # rad/s std added to the angular velocity while moving
    "seed": 0,  # noise seed (combined with the namespace, so robots differ)
    "cmd_timeout": 0.5,  # s without cmd_vel: stop (as a Turtlebot base does)
    "frame_id": "odom",
    "child_frame_id": "base_footprint",
}

#: executable name (console script, and `executable=` in launch files) -> (module, parameters)
EXECUTABLES = {
    "mase-executor": ("ros_nodes.executor_node", EXECUTOR),
    "mase-bridge": ("ros_nodes.bridge_node", BRIDGE),
    "mase-turtlebot-sim": ("ros_nodes.turtlebot_sim_node", TURTLEBOT_SIM),
}
PACKAGE = "mase"
