"""Service settings, read from the environment (prefix MASE_), with working defaults."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_AGE = re.compile(r"^([0-9]+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MASE_{name}", default)


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    text = _env(name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"MASE_{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"MASE_{name} must be at least {minimum}, got {value}")
    return value


def _env_seconds(name: str, default: float, minimum: float = 0.0) -> float:
    text = _env(name, repr(default))
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"MASE_{name} must be a number of seconds, got {text!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ValueError(f"MASE_{name} must be a finite number of seconds >= {minimum:g}, got {text!r}")
    return value


def _env_bool(name: str, default: bool) -> bool:
    text = _env(name, "1" if default else "0").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"MASE_{name} must be 1 or 0 (true/false, yes/no), got {text!r}")


@dataclass(frozen=True)
class Retention:
    """How many state reports to keep per scenario (`count`), or for how long (`seconds`)."""

    count: int | None = None
    seconds: int | None = None

    @classmethod
    def parse(cls, text: str, name: str = "MASE_OBSERVATIONS_KEEP") -> "Retention":
        text = text.strip().lower()
        if text in ("all", ""):
            return cls()
        if text.isascii() and text.isdigit():  # a count; 0, however written, keeps every report
            return cls(count=int(text)) if int(text) else cls()
        match = _AGE.match(text)
        if match and int(match[1]) > 0:
            return cls(seconds=int(match[1]) * _SECONDS[match[2]])
        raise ValueError(f"{name} must be a count (100000), an age (30s, 15m, 12h, 7d) or 'all', got {text!r}")

    def __str__(self) -> str:
        if self.count is not None:
            return f"the newest {self.count} reports per scenario"
        if self.seconds is not None:
            return f"reports of the last {self.seconds} s"
        return "every report"


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{ROOT / 'var' / 'mase.db'}"
    host: str = "127.0.0.1"
    port: int = 8000
    tokens_file: Path = ROOT / "var" / "tokens"
    maps_dir: Path = ROOT / "maps"
    load_shipped: bool = True  # create the shipped demo scenarios in an empty database
    max_body_bytes: int = 1_000_000
    max_robots: int = 1000  # per scenario created over the API
    max_fleet_cells: int = 250_000  # grid cells x robots per scenario (memory and planning time grow with it)
    run_workers: int = 1  # mitigation runs executing at once per service process (each in its own process)
    plan_workers: int = 1  # fleet plans executing at once per service process
    backend: str = "local"  # where a run plans and replans robots: local cores, serial, or ray
    ray_address: str | None = None  # Ray cluster for backend "ray" (None: a local Ray instance)
    observations_keep: Retention = Retention(count=1_000_000)
    token_ttl: int = 0  # seconds a new robot token is valid by default (0: until revoked)
    workers: int = 1  # uvicorn worker processes of `mase serve`
    read_timeout: float = 10.0  # seconds a client has to send a request's headers, and its body
    max_connections: int = 2000  # open connections per worker; more get 503
    access_log: bool = True
    fast_lane: bool = True  # the robots' GET queries answered in front of FastAPI's routing (api.fastlane)
    progress_interval: float = 0.25  # seconds between progress writes of a job
    change_poll_interval: float = 0.1  # seconds between polls of the change feed (cross-process caches)
    job_poll_interval: float = 0.5  # seconds between looks for jobs to claim
    heartbeat_interval: float = 2.0  # seconds between a process's heartbeats
    stale_after: float = 15.0  # a process without a heartbeat for this long is taken for gone
    maintenance_interval: float = 30.0  # seconds between prunings of old reports and changes
    events_per_token: int = 20  # event streams one token may hold open per worker process
    events_queue: int = 256  # events queued per stream; a client that falls further behind is dropped
    events_send_timeout: float = 10.0  # seconds a stream's connection has to take an event, or it is dropped
    events_send_buffer: int = 262144  # bytes of kernel send buffer per stream: what a stalled client can pin
    events_interval: float = 0.25  # seconds between looks at the robots' reports of watched scenarios
    events_ping: float = 15.0  # seconds between keep-alive comments on an idle stream
    ticket_ttl: float = 30.0  # seconds an event-stream ticket stays valid (it is used once)
    extra_operator_tokens: tuple[str, ...] = field(default=(), repr=False)  # tests inject tokens here

    @classmethod
    def from_env(cls) -> "Settings":
        """Settings from MASE_* variables; ValueError naming the variable for a bad value."""
        from planner.backends import BACKENDS

        base = cls()
        backend = _env("BACKEND", base.backend)
        if backend not in BACKENDS:
            raise ValueError(f"MASE_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")
        ray_address = os.environ.get("MASE_RAY_ADDRESS") or None
        if ray_address is not None and backend != "ray":
            raise ValueError("MASE_RAY_ADDRESS needs MASE_BACKEND=ray")
        return cls(
            database_url=_env("DATABASE_URL", base.database_url),
            host=_env("HOST", base.host),
            port=_env_int("PORT", base.port, minimum=1),
            tokens_file=Path(_env("TOKENS_FILE", str(base.tokens_file))),
            maps_dir=Path(_env("MAPS_DIR", str(base.maps_dir))),
            load_shipped=_env_bool("LOAD_SHIPPED", True),
            max_body_bytes=_env_int("MAX_BODY_BYTES", base.max_body_bytes, minimum=1),
            max_robots=_env_int("MAX_ROBOTS", base.max_robots, minimum=1),
            max_fleet_cells=_env_int("MAX_FLEET_CELLS", base.max_fleet_cells, minimum=1),
            run_workers=_env_int("RUN_WORKERS", base.run_workers, minimum=1),
            plan_workers=_env_int("PLAN_WORKERS", base.plan_workers, minimum=1),
            backend=backend,
            ray_address=ray_address,
            observations_keep=Retention.parse(_env("OBSERVATIONS_KEEP", "1000000")),
            token_ttl=_env_int("TOKEN_TTL", base.token_ttl, minimum=0),
            workers=_env_int("WORKERS", base.workers, minimum=1),
            read_timeout=_env_seconds("READ_TIMEOUT", base.read_timeout, minimum=0.1),
            max_connections=_env_int("MAX_CONNECTIONS", base.max_connections, minimum=1),
            access_log=_env_bool("ACCESS_LOG", True),
            fast_lane=_env_bool("FAST_LANE", True),
            events_per_token=_env_int("EVENTS_PER_TOKEN", base.events_per_token, minimum=1),
            events_queue=_env_int("EVENTS_QUEUE", base.events_queue, minimum=8),
            events_send_timeout=_env_seconds("EVENTS_SEND_TIMEOUT", base.events_send_timeout, minimum=0.1),
            events_send_buffer=_env_int("EVENTS_SEND_BUFFER", base.events_send_buffer, minimum=4096),
        )
