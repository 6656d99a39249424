"""Dependencies injected into the routers: the database, the caller, the planned fleets."""
from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from .db import Database
from .fleets import FleetStore
from .jobs import RunManager
from .security import Principal, authenticate, bearer, require_operator
from .settings import Settings


def get_db(request: Request) -> Database:
    return request.app.state.database


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_fleets(request: Request) -> FleetStore:
    return request.app.state.fleets


def get_runs(request: Request) -> RunManager:
    return request.app.state.runs


def get_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                  db: Database = Depends(get_db)) -> Principal:
    with db.sessions() as session:
        return authenticate(request, session, credentials)


def get_operator(principal: Principal = Depends(get_principal)) -> Principal:
    require_operator(principal)
    return principal
