"""What every node shares: QoS profiles, parameter declaration, and a main loop that stops
cleanly on Ctrl-C (SIGINT) or SIGTERM, letting the node send its last messages first."""
from __future__ import annotations

import signal
import sys
from typing import Callable

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

#: odometry in: best effort accepts both best-effort and reliable publishers (a real base's
#: odometry is often best effort); only the newest pose matters
ODOM_IN = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
                     history=HistoryPolicy.KEEP_LAST, depth=5)
#: odometry out (simulator): reliable is readable by best-effort and reliable subscribers
ODOM_OUT = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                      history=HistoryPolicy.KEEP_LAST, depth=5)
#: velocity commands, both ways: reliable, newest first
CMD_VEL = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                     history=HistoryPolicy.KEEP_LAST, depth=10)
#: announcements a late joiner must still get (policy updates, go): the newest one is kept
LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     history=HistoryPolicy.KEEP_LAST, depth=1)
#: status, monitor and run events: reliable stream
EVENTS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                    history=HistoryPolicy.KEEP_LAST, depth=20)


def declare(node: Node, spec: dict) -> dict:
    """Declare every parameter of `spec` with its default; return their values."""
    for name, default in spec.items():
        node.declare_parameter(name, default)
    return {name: node.get_parameter(name).value for name in spec}


def logger_function(node: Node) -> Callable[[str, str], None]:
    """log(level, message) for the plain modules. rclpy wants one severity per call site, so
    each severity has its own line."""
    logger = node.get_logger()

    def log(level: str, message: str) -> None:
        if level == "error":
            logger.error(message)
        elif level == "warn":
            logger.warning(message)
        elif level == "debug":
            logger.debug(message)
        else:
            logger.info(message)

    return log


#: set by the first SIGINT/SIGTERM: from then on the node is stopping
_stopping = {"requested": False}


def _raise_interrupt(signum, frame):  # noqa: ARG001
    """The first SIGINT/SIGTERM stops the node; later ones are ignored, so that a second signal
    (a supervisor signals twice: Ctrl-C, then its own stop) cannot interrupt the stopping itself
    and end the process by an unhandled KeyboardInterrupt (exit status -2)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stopping["requested"] = True
    raise KeyboardInterrupt


def main(factory: Callable[[], Node], argv: list[str] | None = None) -> int:
    """Run one node until SIGINT/SIGTERM; then call its `on_exit()` (if any) while ROS is
    still up, so that it can e.g. stop the robot. Bad parameters exit with status 2."""
    argv = sys.argv if argv is None else argv
    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except ImportError:  # older rclpy: its handler shuts the context down on SIGINT
        rclpy.init(args=argv)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    node = None
    status = 0
    name = getattr(factory, "__name__", "node")
    _stopping["requested"] = False
    try:
        node = factory()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    except ValueError as error:  # a bad parameter: one line, no traceback
        print(f"{name}: error: {error}", file=sys.stderr, flush=True)
        status = 2
    except Exception as error:
        # the stop signal interrupts whatever ROS call was running; the clean-up of that call
        # may then raise in its place (a wait set or handle half-released): still a stop
        if not _stopping["requested"]:
            raise
        print(f"{name}: stopped during a ROS call that then failed: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            try:
                on_exit = getattr(node, "on_exit", None)
                if on_exit is not None and rclpy.ok():
                    on_exit()
            finally:
                node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return status
