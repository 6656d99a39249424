"""The FastAPI application: `create_app(settings)` wires settings, database, caches, jobs
and routers; `app_from_env()` is the factory each uvicorn worker calls."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from fastapi.staticfiles import StaticFiles
from sqlalchemy import delete, select, update
from starlette.convertors import CONVERTOR_TYPES
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from planner.backends import BACKENDS
from planner.budget import DEFAULT_BUDGET

from . import http
from .cache import ChangeFeed, ScenarioCache
from .db import Database
from .errors import http_error_response, install_handlers
from .fastlane import FastLane
from .http import BodyReader, SafeJSONResponse
from .jobs import JobManager
from .models import ScenarioRow, ServiceLockRow, utcnow
from .repository import prune_observations
from .events import Broker
from .models import EventTicketRow
from .routers import console, events, logs, meta, robots, rules, runs, scenarios
from .schemas import ErrorDetail, Health, ScenarioCreate
from .security import operator_entry, read_operator_tokens
from .settings import Settings

log = logging.getLogger("mase.api")
ROUTERS = (robots, meta, scenarios, rules, runs, console, events, logs)  # robots first: their queries are matched with the fewest routes tried

#: created in an empty database at start-up: (name, map, robots, task budget, auto-deploy). The
#: default budget (10 % of a robot's task cost) lets a replanned Turtlebot take the demo's
#: two-step detour. No shipped scenario deploys by itself: a run is a proposal until an operator
#: deploys it; the ROS bridge's `replan` service asks for its run to be deployed (it means
#: "replan the robots"), and the history records that deployment as any other.
SHIPPED_SCENARIOS = (("salp demo (two Turtlebots)", "salp-demo", 2, DEFAULT_BUDGET, False),
                     ("salp-1", "salp-1", 10, DEFAULT_BUDGET, False),
                     ("overcooked-1", "overcooked-1", 10, DEFAULT_BUDGET, False),
                     ("warehouse-1", "warehouse-1", 10, DEFAULT_BUDGET, False))


def load_shipped_scenarios(database: Database, settings: Settings) -> bool:
    """Create the shipped scenarios if the database has none; once, however many processes
    start at the same time (the `startup` lock row)."""
    rows = [scenarios.new_scenario(settings, ScenarioCreate(name=name, map=map_name, robots=n, slack=slack,
                                                            auto_deploy=auto))
            for name, map_name, n, slack, auto in SHIPPED_SCENARIOS]
    with database.transaction() as session:
        session.execute(update(ServiceLockRow).where(ServiceLockRow.name == "startup").values(taken_at=utcnow()))
        if session.scalar(select(ScenarioRow.id).limit(1)) is not None:
            return False
        for row in rows:
            scenarios.insert_scenario(session, row)
    return True


class Maintenance:
    """Work done every `interval` seconds in the background: retention of the reports'
    history, and of the change feed."""

    def __init__(self, database: Database, feed: ChangeFeed, settings: Settings) -> None:
        self.database, self.feed, self.settings = database, feed, settings
        self._last = 0.0

    def __call__(self) -> None:
        import time

        if time.monotonic() - self._last < self.settings.maintenance_interval:
            return
        self._last = time.monotonic()
        pruned = prune_observations(self.database, self.settings.observations_keep)
        if pruned:
            log.info("pruned %d state reports (keeping %s)", pruned, self.settings.observations_keep)
        self.feed.prune()
        with self.database.transaction() as session:  # event-stream tickets live seconds
            session.execute(delete(EventTicketRow).where(EventTicketRow.expires_at < utcnow()))


def _allowed_methods(app: FastAPI):
    """path -> methods of every route (for the Allow header of a 405): compiled from our own
    routers' paths, which works whatever FastAPI does with included routers."""
    table = []
    for route in [*app.router.routes, *(r for module in ROUTERS for r in module.router.routes)]:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:
            table.append((compile_path(path)[0], set(methods)))

    def allowed(path: str) -> str:
        found = set()
        for regex, methods in table:
            if regex.match(path):
                found |= methods
        return ", ".join(sorted(found))

    return allowed


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.backend not in BACKENDS:
        raise ValueError(f"MASE_BACKEND={settings.backend!r} is not a backend; backends: {', '.join(BACKENDS)}")
    if http.TimedHttpToolsProtocol is not None:
        http.TimedHttpToolsProtocol.header_timeout = settings.read_timeout

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        database = Database(settings.database_url)
        database.migrate()
        feed = ChangeFeed(database, settings.change_poll_interval)
        cache = ScenarioCache(database)
        feed.subscribe(cache.on_change)
        manager = JobManager(database, feed, run_workers=settings.run_workers, plan_workers=settings.plan_workers,
                             progress_interval=settings.progress_interval, backend=settings.backend,
                             ray_address=settings.ray_address, poll_interval=settings.job_poll_interval,
                             heartbeat_interval=settings.heartbeat_interval, stale_after=settings.stale_after,
                             maintenance=Maintenance(database, feed, settings))
        broker = Broker(database, cache, interval=settings.events_interval, queue_size=settings.events_queue,
                        per_token=settings.events_per_token, send_timeout=settings.events_send_timeout,
                        send_buffer=settings.events_send_buffer,
                        ping_interval=settings.events_ping)
        feed.subscribe(broker.on_change)
        broker.start()
        feed.start()
        if settings.load_shipped and load_shipped_scenarios(database, settings):
            manager.submit()
        app.state.settings = settings
        app.state.database = database
        app.state.feed = feed
        app.state.cache = cache
        app.state.runs = manager
        app.state.events = broker
        app.state.health = Health(status="ok", version="1", database=database.dialect,
                                  worker=manager.process_id).model_dump_json().encode()
        app.state.operator_tokens = read_operator_tokens(settings.tokens_file) + [
            entry for t in settings.extra_operator_tokens if (entry := operator_entry(t))]
        if not app.state.operator_tokens:
            log.warning("no operator tokens: %s is missing or empty", settings.tokens_file)
        try:
            yield
        finally:
            manager.shutdown()
            broker.stop()
            feed.stop()
            cache.clear()
            database.dispose()

    # /docs and /redoc with Swagger UI and ReDoc served from the installed fastapi-offline
    # package: they work without a network (FastAPI's own pages load them from a CDN)
    app = FastAPIOffline(
        title="mase: multi-robot NSE mitigation service",
        version="1",
        description="Robots fetch their policies and local NSE penalties and report their states; operators "
                    "create scenarios, edit NSE rules, start mitigation runs and compare them. Every endpoint "
                    "except health needs a bearer token (operator, or a robot token bound to one robot).",
        lifespan=lifespan,
        responses={400: {"model": ErrorDetail, "description": "The request could not be read"},
                   408: {"model": ErrorDetail, "description": "The body did not arrive in time"},
                   413: {"model": ErrorDetail, "description": "The body is larger than the limit"}},
    )
    install_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    allowed = _allowed_methods(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> SafeJSONResponse:
        # a 405 names every method of the path, not just the first route's
        return http_error_response(error, allowed(request.url.path) if error.status_code == 405 else None)

    app.mount("/static", StaticFiles(directory=meta.STATIC), name="static")
    app.add_middleware(BodyReader, limit=settings.max_body_bytes, timeout=settings.read_timeout)
    if settings.fast_lane:  # added last: the outermost of our middleware, before the body reader and routing
        app.add_middleware(FastLane)
    return app


def app_from_env() -> FastAPI:
    """The factory of `uvicorn --factory api.app:app_from_env` (each worker process calls it)."""
    return create_app(Settings.from_env())


__all__ = ["CONVERTOR_TYPES", "SHIPPED_SCENARIOS", "app_from_env", "create_app", "load_shipped_scenarios"]
