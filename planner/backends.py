"""Where independent jobs run: in this process, on this machine's cores, or on a Ray cluster.

A backend has one method that matters, `map(fn, items, progress=None) -> list`: it applies
`fn` (a module-level function, so that it pickles by reference) to every item and returns
the results in the order of `items`. Every job is a deterministic function of its item, so
the results do not depend on the backend (tests/test_backends.py checks it bit for bit).

* `SerialBackend()` runs the jobs one after the other in this process.
* `LocalBackend(workers=None)` runs them in worker processes on this machine, one per core
  by default, started for the call. It runs them in this process instead when there is only
  one job or one worker, or when this process is daemonic (it may not have children, e.g. a
  service's background run).
* `RayBackend(address=None)` sends them to the Ray cluster at `address` (None: start a local
  Ray instance, or use the one already initialised). Ray is the optional `distributed` extra;
  nothing here imports it until a `RayBackend` is used.

`get_backend("local" | "serial" | "ray", workers=..., address=...)` picks one by name (a
`Backend` instance is returned as it is). `with backend.session() as b:` gives a backend whose
`map` calls share one set of workers (local: one pool for the session instead of one per call,
so that what a worker caches, an MDP's solver layouts, lasts from one call to the next); the
others' sessions are themselves. The library's entry points take a `backend`
parameter: `plan_fleet(..., backend=)`, `Fleet.plan(..., backend=)`, `Mitigation(backend=)`.
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

Progress = Callable[[int, int], None] | None
BACKENDS = ("local", "serial", "ray")


class Backend:
    """Runs independent jobs; `map` keeps the order of the items."""

    name = "backend"

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], progress: Progress = None) -> list:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (a closed backend starts new ones if used again)."""

    @contextmanager
    def session(self):
        """A backend for a run of several `map` calls (see the module docstring)."""
        yield self

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SerialBackend(Backend):
    """Every job in this process, one after the other."""

    name = "serial"

    def map(self, fn, items, progress: Progress = None) -> list:
        items = list(items)
        out = []
        for item in items:
            out.append(fn(item))
            if progress is not None:
                progress(len(out), len(items))
        return out


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class LocalBackend(Backend):
    """Worker processes on this machine (`workers`, default one per available core).

    Each `map` call starts its own pool and stops it before returning, so workers always
    see the current code and state and nothing lingers; a `session()` keeps one pool for all
    its calls instead (a mitigation's rounds: workers keep the MDPs' solver layouts). Workers are forked from this process
    when it has a single thread (cheap, nothing re-imported); a threaded process uses the
    forkserver instead, which, like spawn, needs a script's work under
    `if __name__ == "__main__":`. Should the pool still break, the jobs are rerun here.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
            raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
        self.workers = None if workers is None else int(workers)

    @property
    def n_workers(self) -> int:
        return self.workers if self.workers is not None else _cpu_count()

    def __repr__(self) -> str:
        return f"LocalBackend(workers={self.workers!r})"

    def _in_process(self, n_items: int) -> bool:
        return n_items <= 1 or self.n_workers <= 1 or multiprocessing.current_process().daemon

    @staticmethod
    def _context():
        methods = multiprocessing.get_all_start_methods()
        if "fork" in methods and threading.active_count() == 1:
            return multiprocessing.get_context("fork")
        return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")

    def map(self, fn, items, progress: Progress = None) -> list:
        items = list(items)
        if self._in_process(len(items)):
            return SerialBackend().map(fn, items, progress)
        with ProcessPoolExecutor(max_workers=min(self.n_workers, len(items)), mp_context=self._context()) as pool:
            return _map_on(pool, fn, items, progress)[0]

    @contextmanager
    def session(self):
        """One pool for every `map` of the session, started at the first that needs workers."""
        session = _LocalSession(self)
        try:
            yield session
        finally:
            session.close()


class _LocalSession(LocalBackend):
    """`LocalBackend.session()`: the backend's settings, one pool kept until `close`."""

    def __init__(self, backend: LocalBackend) -> None:
        super().__init__(backend.workers)
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn, items, progress: Progress = None) -> list:
        items = list(items)
        if self._in_process(len(items)):
            return SerialBackend().map(fn, items, progress)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.n_workers, mp_context=self._context())
        out, broke = _map_on(self._pool, fn, items, progress)
        if broke:  # not used again: the next call starts another
            self._pool.shutdown(wait=False)
            self._pool = None
        return out

    @contextmanager
    def session(self):
        yield self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _map_on(pool: ProcessPoolExecutor, fn, items: list, progress: Progress) -> tuple[list, bool]:
    """`fn` over `items` on `pool`, in order, and whether the pool broke (then the remaining
    jobs ran here)."""
    out: list = []
    try:
        for result in pool.map(fn, items):
            out.append(result)
            if progress is not None:
                progress(len(out), len(items))
    except BrokenProcessPool as exc:
        warnings.warn(f"the local worker pool broke ({exc}); running the remaining jobs in this process",
                      RuntimeWarning, stacklevel=3)
        for item in items[len(out):]:
            out.append(fn(item))
            if progress is not None:
                progress(len(out), len(items))
        return out, True
    return out, False


def _call(fn, item):
    return fn(item)


class RayBackend(Backend):
    """Jobs as Ray tasks on the cluster at `address` (None: a local Ray instance).

    If Ray is not initialised yet, the first `map` calls `ray.init(address=address, ...)`
    (`num_cpus` only applies to a new local instance) and `close` shuts it down again; a Ray
    session the caller started is used as it is and left running. Workers of a local instance
    import this library as the driver does; when connecting to a cluster from a source
    checkout (not pip-installed), its packages are shipped to the workers (`runtime_env`
    py_modules), so cluster nodes need only its dependencies (numpy, scipy, scikit-learn).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 runtime_env: dict | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.runtime_env = runtime_env
        self._owns_session = False
        self._remote = None

    def __repr__(self) -> str:
        return f"RayBackend(address={self.address!r})"

    def __getstate__(self) -> dict:
        return {"address": self.address, "num_cpus": self.num_cpus, "runtime_env": self.runtime_env}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def connect(self) -> None:
        """Initialise Ray now (otherwise the first `map` does); raises if it cannot."""
        self._ray()

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise ImportError("the ray backend needs Ray: pip install 'mase[distributed]' (or 'ray>=2.9')") from None
        if not ray.is_initialized():
            if self.address is not None:
                check_ray_address(self.address)
            kwargs: dict[str, Any] = {"address": self.address, "ignore_reinit_error": True,
                                      "logging_level": "WARNING"}
            if self.address is None:  # a new local instance (a cluster's own settings are not ours to pass)
                kwargs["include_dashboard"] = False
                if self.num_cpus is not None:
                    kwargs["num_cpus"] = self.num_cpus
            runtime_env = dict(self.runtime_env or {})
            if self.address is not None and "py_modules" not in runtime_env and _from_source_checkout():
                import metareasoner
                import planner

                runtime_env["py_modules"] = [planner, metareasoner]
            if runtime_env:
                kwargs["runtime_env"] = runtime_env
            ray.init(**kwargs)
            self._owns_session = True
        if self._remote is None:
            self._remote = ray.remote(_call)
        return ray

    def map(self, fn, items, progress: Progress = None) -> list:
        items = list(items)
        if not items:
            return []
        ray = self._ray()
        fn_ref = ray.put(fn)
        refs = [self._remote.remote(fn_ref, item) for item in items]
        if progress is not None:
            pending, done = list(refs), 0
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done += len(ready)
                progress(done, len(items))
        return ray.get(refs)

    def close(self) -> None:
        if self._owns_session:
            import ray

            ray.shutdown()
            self._owns_session = False
            self._remote = None


def _from_source_checkout() -> bool:
    """True when `planner` is imported from a folder that is not an installed distribution's."""
    here = Path(__file__).resolve().parent.parent
    return not any(part in ("site-packages", "dist-packages") for part in here.parts) and \
        (here / "pyproject.toml").exists() and not _installed_editable(here)


def _installed_editable(root: Path) -> bool:
    # an editable install (pip install -e) puts the checkout on sys.path of every process,
    # Ray workers included; only a bare checkout (PYTHONPATH, the current folder) needs shipping
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("mase")
    except (ImportError, PackageNotFoundError):
        return False
    direct = dist.read_text("direct_url.json") or ""
    return root.as_uri() in direct


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Raise ValueError for an address that is not `host:port`, `ray://host:port`, `auto` or
    `local`, and ConnectionError when nothing listens at it: `ray.init` would otherwise retry
    for minutes before it says so."""
    if address in ("auto", "local"):
        return
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Ray address {address!r} is not host:port, ray://host:port, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


def get_backend(backend: "str | Backend | None" = "local", *, workers: int | None = None,
                address: str | None = None) -> Backend:
    """A backend by name ("local", "serial", "ray"), or `backend` itself if it is one."""
    if isinstance(backend, Backend):
        return backend
    name = "local" if backend is None else backend
    if name == "local":
        return LocalBackend(workers)
    if name == "serial":
        return SerialBackend()
    if name == "ray":
        return RayBackend(address=address)
    raise ValueError(f"unknown backend {backend!r}; backends: {', '.join(BACKENDS)} (or a Backend instance)")


__all__ = ["BACKENDS", "Backend", "LocalBackend", "RayBackend", "SerialBackend", "check_ray_address", "get_backend"]
