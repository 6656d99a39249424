"""The service's REST API (http://host:port/api/v1), over the standard library's urllib.

Errors: `ServiceUnavailable` when the service cannot be reached, times out or answers 5xx
(worth retrying later); `ServiceRejected` when it answers 4xx (retrying the same request will
not help); `ValueError` when a successful answer is not the JSON expected.
"""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

MAX_RESPONSE_BYTES = 50_000_000


class ServiceError(Exception):
    pass


class ServiceUnavailable(ServiceError):
    """Unreachable, timed out, or a server error: try again later."""


class ServiceRejected(ServiceError):
    """The service refused the request (4xx)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class ServiceClient:
    def __init__(self, base_url: str, token: str = "", timeout: float = 3.0) -> None:
        base_url = base_url.rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"service_url must start with http:// or https://, got {base_url!r}")
        if not base_url.endswith("/api/v1"):
            base_url += "/api/v1"
        if not timeout > 0:
            raise ValueError(f"request timeout must be > 0, got {timeout}")
        self.base_url, self.token, self.timeout = base_url, token, timeout

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read(100_000) or b"null").get("detail")
            except (ValueError, AttributeError):
                detail = error.reason
            if error.code >= 500:
                raise ServiceUnavailable(f"{method} {path}: HTTP {error.code}: {detail}") from None
            raise ServiceRejected(error.code, detail) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServiceUnavailable(f"{method} {self.base_url}{path}: {reason}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ValueError(f"{method} {path}: response larger than {MAX_RESPONSE_BYTES} bytes")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{method} {path}: response is not JSON ({error})") from None

    # -- endpoints ---------------------------------------------------------------------------
    def health(self) -> dict:
        return self.request("GET", "/health")

    def scenarios(self) -> list[dict]:
        return self.request("GET", "/scenarios")

    def scenario(self, scenario_id: int) -> dict:
        return self.request("GET", f"/scenarios/{scenario_id}")

    def scenario_map(self, scenario_id: int) -> dict:
        return self.request("GET", f"/scenarios/{scenario_id}/map")

    def policy(self, scenario_id: int, robot_id: str) -> dict:
        return self.request("GET", f"/scenarios/{scenario_id}/robots/{robot_id}/policy")

    def penalties(self, scenario_id: int, robot_id: str) -> dict:
        return self.request("GET", f"/scenarios/{scenario_id}/robots/{robot_id}/penalties")

    def report_state(self, scenario_id: int, robot_id: str, state: list[int]) -> dict:
        return self.request("POST", f"/scenarios/{scenario_id}/robots/{robot_id}/state", {"state": state})

    def monitor(self, scenario_id: int) -> dict:
        return self.request("GET", f"/scenarios/{scenario_id}/monitor")

    def start_run(self, scenario_id: int, method: str, update_fraction: float, rounds: int, episodes: int,
                  seed: int, deploy: bool = True) -> dict:
        """Start a run; by default it is deployed when it succeeds (the bridge's `replan` means
        "replan the robots"), whatever the scenario's auto-deploy setting."""
        return self.request("POST", f"/scenarios/{scenario_id}/runs",
                            {"method": method, "update_fraction": update_fraction, "rounds": rounds,
                             "episodes": episodes, "seed": seed, "deploy": deploy})

    def run(self, run_id: int) -> dict:
        return self.request("GET", f"/runs/{run_id}")

    def create_token(self, scenario_id: int, robot_id: str) -> str:
        return self.request("POST", f"/scenarios/{scenario_id}/tokens", {"robot_id": robot_id})["token"]
