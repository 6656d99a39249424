"""Metareasoner bridge node (namespace /mase): relays between the service and the robots.

* `policy_updates` (std_msgs/String, JSON, latched): the scenario's current run, announced
  whenever it changes (and at start), with every robot's non-zero local penalties;
* `nse_monitor` (String, JSON): the service's live NSE monitor every `monitor_period` s;
* `runs` (String, JSON): progress of the runs started here;
* `replan` (std_srvs/Trigger): start a mitigation run with the parameters `method`,
  `update_fraction`, `rounds`, `episodes`, `seed` (settable at run time with `ros2 param set`);
  it answers at once with the run id; the new policies are announced when the run succeeds.
Parameters: `params.BRIDGE`. Service I/O: `links.BridgeLink` (a background thread).
"""
from __future__ import annotations

import queue

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from . import params as P
from .backoff import Backoff
from .client import ServiceClient, ServiceRejected, ServiceUnavailable
from .links import BridgeLink
from .runtime import EVENTS, LATCHED, declare, logger_function, main as run_main


class BridgeNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("bridge", **node_options)
        p = self.p = declare(self, P.BRIDGE)
        if not p["poll_period"] > 0 or not p["monitor_period"] > 0:
            raise ValueError("poll_period and monitor_period must be > 0")
        self.log = logger_function(self)
        self.client = ServiceClient(p["service_url"], p["token"], p["request_timeout"])
        self.link = BridgeLink(self.client, p["scenario_id"], Backoff(p["backoff_initial"], p["backoff_max"]),
                               self.log, p["poll_period"], p["monitor_period"])
        self.publishers_ = {
            "policy": self.create_publisher(String, "policy_updates", LATCHED),
            "monitor": self.create_publisher(String, "nse_monitor", EVENTS),
            "run": self.create_publisher(String, "runs", EVENTS),
        }
        self.create_service(Trigger, "replan", self._on_replan)
        self.create_timer(0.1, self._drain)
        self.link.start()
        self.log("info", f"bridge for scenario {p['scenario_id']} at {self.client.base_url}")

    def _on_replan(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        g = lambda name: self.get_parameter(name).value  # noqa: E731 - read now: they may have been set
        try:
            run = self.client.start_run(self.p["scenario_id"], g("method"), float(g("update_fraction")),
                                        int(g("rounds")), int(g("episodes")), int(g("seed")))
        except (ServiceUnavailable, ServiceRejected, ValueError) as error:
            response.success, response.message = False, f"could not start a run: {error}"
            self.log("error", response.message)
            return response
        self.link.watch(run["id"])
        response.success = True
        response.message = f"run {run['id']} {run['status']} ({g('method')}, update fraction {g('update_fraction')})"
        self.log("info", response.message)
        return response

    def _drain(self) -> None:
        while True:
            try:
                topic, text = self.link.outbox.get_nowait()
            except queue.Empty:
                return
            self.publishers_[topic].publish(String(data=text))

    def on_exit(self) -> None:
        self.link.stop(timeout=0.5)


def main(argv: list[str] | None = None) -> int:
    return run_main(BridgeNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
