"""Service settings, read from the environment (prefix MASE_), with working defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    run_workers: int = 1  # mitigation runs executing at once (each in its own process)
    backend: str = "local"  # where a run plans and replans robots: local cores, serial, or ray
    ray_address: str | None = None  # Ray cluster for backend "ray" (None: a local Ray instance)
    progress_interval: float = 0.25  # seconds between progress writes of a run
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
            load_shipped=_env("LOAD_SHIPPED", "1").lower() not in ("0", "false", "no"),
            max_body_bytes=_env_int("MAX_BODY_BYTES", base.max_body_bytes, minimum=1),
            max_robots=_env_int("MAX_ROBOTS", base.max_robots, minimum=1),
            run_workers=_env_int("RUN_WORKERS", base.run_workers, minimum=1),
            backend=backend,
            ray_address=ray_address,
        )
