"""The FastAPI application: `create_app(settings)` wires settings, database, runs and routers."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from sqlalchemy.exc import IntegrityError

from planner.backends import BACKENDS

from .db import Database
from .errors import install_handlers
from .fleets import FleetStore
from .jobs import RunManager
from .models import ScenarioRow
from .routers import meta, robots, rules, runs, scenarios
from .schemas import ErrorDetail, ScenarioCreate
from .security import hash_token, read_operator_tokens
from .settings import Settings

log = logging.getLogger("mase.api")

#: created in an empty database at start-up: (name, map, robots, slack). The demo's slack of
#: 300 (per-state slack 3) lets a replanned Turtlebot take the two-step detour round the reef.
SHIPPED_SCENARIOS = (("salp demo (two Turtlebots)", "salp-demo", 2, 300.0), ("salp-1", "salp-1", 10, 100.0),
                     ("overcooked-1", "overcooked-1", 10, 100.0), ("warehouse-1", "warehouse-1", 10, 100.0))


class BodySizeLimit:
    """Refuse bodies over `limit` bytes with 413, by header or while streaming."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, status_code=413)
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def load_shipped_scenarios(database: Database, settings: Settings) -> None:
    with database.transaction() as session:
        if session.scalar(select(ScenarioRow.id).limit(1)) is not None:
            return
    for name, map_name, n, slack in SHIPPED_SCENARIOS:
        scenarios.create_scenario(database, settings, ScenarioCreate(name=name, map=map_name, robots=n, slack=slack))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.backend not in BACKENDS:
        raise ValueError(f"MASE_BACKEND={settings.backend!r} is not a backend; backends: {', '.join(BACKENDS)}")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        database = Database(settings.database_url)
        database.migrate()
        manager = RunManager(database, settings.run_workers, settings.progress_interval, settings.backend,
                             settings.ray_address)
        stale = manager.mark_interrupted("the service restarted while the run was queued or running")
        if stale:
            log.warning("marked %d unfinished runs as interrupted", stale)
        if settings.load_shipped:
            load_shipped_scenarios(database, settings)
        app.state.settings = settings
        app.state.database = database
        app.state.runs = manager
        app.state.fleets = FleetStore()
        app.state.operator_token_hashes = read_operator_tokens(settings.tokens_file) + [
            hash_token(t) for t in settings.extra_operator_tokens]
        if not app.state.operator_token_hashes:
            log.warning("no operator tokens: %s is missing or empty", settings.tokens_file)
        try:
            yield
        finally:
            manager.shutdown()
            database.dispose()

    app = FastAPI(
        title="mase: multi-robot NSE mitigation service",
        version="1",
        description="Robots fetch their policies and local NSE penalties and report their states; operators "
                    "create scenarios, edit NSE rules, start mitigation runs and compare them. Every endpoint "
                    "except health needs a bearer token (operator, or a robot token bound to one robot).",
        lifespan=lifespan,
        responses={400: {"model": ErrorDetail, "description": "The body could not be read"},
                   413: {"model": ErrorDetail, "description": "The body is larger than the limit"}},
    )
    install_handlers(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:  # name every method of the path, not just the first route's
            allowed = set()
            for route in app.router.routes:
                match, _ = route.matches(request.scope)
                if match is not Match.NONE:
                    allowed |= getattr(route, "methods", None) or set()
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)

    @app.exception_handler(IntegrityError)
    async def _conflict(_request, _error: IntegrityError) -> JSONResponse:
        return JSONResponse({"detail": "the request conflicts with a concurrent change; retry it"}, status_code=409)

    for module in (meta, scenarios, rules, runs, robots):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=meta.STATIC), name="static")
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    return app
