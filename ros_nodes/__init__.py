"""ROS 2 bridge of the mase service: robot executors, the metareasoner bridge and a kinematic
Turtlebot simulator (issue 5).

The nodes (`executor_node`, `bridge_node`, `turtlebot_sim_node`) are thin rclpy adapters; what
they decide lives in plain modules tested without ROS: `geometry` (pose <-> cell), `controller`
(drive to a cell), `kinematics` (the simulated differential drive), `policy` (policy tables and
successor-state tracking), `execution` (the executor's state machine), `backoff` (retry policy),
`messages` (validation of what arrives on topics and from the service), `client` (the service's
HTTP API), `links` (background threads that talk to the service) and `launching` (reading the
ROS 2 Python launch files in `launch/` without `launch_ros`). See README.md here.
"""
