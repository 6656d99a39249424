"""Dependencies injected into the routers. All are `async` and touch no database on the hot
path (FastAPI runs a plain `def` dependency in its thread pool, a cost on every request)."""
from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from .cache import ScenarioCache
from .db import Database
from .jobs import JobManager
from .security import Principal, authenticate, bearer, require_operator
from .settings import Settings


async def get_db(request: Request) -> Database:
    return request.app.state.database


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_cache(request: Request) -> ScenarioCache:
    return request.app.state.cache


async def get_runs(request: Request) -> JobManager:
    return request.app.state.runs


async def get_principal(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    return await authenticate(request, credentials)


async def get_operator(principal: Principal = Depends(get_principal)) -> Principal:
    require_operator(principal)
    return principal
