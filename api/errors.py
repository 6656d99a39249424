"""Error responses: one shape ({"detail": ...}) for every 4xx and 503, always renderable
(api.http.SafeJSONResponse), and the library's and the database's errors mapped."""
from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from metareasoner.fleetlog import LogError
from metareasoner.rules import RuleError
from planner.world import MapError

from .cache import NotFound, NotReady
from .http import SafeJSONResponse, json_safe
from .schemas import ErrorDetail

log = logging.getLogger("mase.api")
COMMON = {401: {"model": ErrorDetail, "description": "Missing, unknown, revoked or expired bearer token"},
          403: {"model": ErrorDetail, "description": "The token may not do this"}}
NOT_FOUND = {404: {"model": ErrorDetail, "description": "No such scenario, robot, run or version"}}
CONFLICT = {409: {"model": ErrorDetail, "description": "The request conflicts with a run in progress"}}
NOT_READY = {503: {"model": ErrorDetail, "description": "The fleet is still being planned; retry after Retry-After seconds"}}
RETRY_AFTER_PLANNING = 2  # seconds


def map_error_detail(error: MapError, field: str = "map_text") -> list[dict]:
    return [{"loc": ["body", field], "msg": str(error), "type": "map_error", "line": error.line,
             "column": error.column, "field": error.field}]


def field_loc(field: str | None) -> list:
    """A library error's field path as a body location: 'policies[2].actions[5]' ->
    ['body', 'policies', 2, 'actions', 5]."""
    loc: list = ["body"]
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field or ""):
        loc.append(int(index) if index else name)
    return loc


def policy_error_detail(error: LogError) -> list[dict]:
    """A policy file's problem (metareasoner.policies) as a 422's detail: where and what."""
    return [{"loc": field_loc(error.field), "msg": error.message, "type": "policy_error", "field": error.field}]


def rule_error_detail(error: RuleError, index: int | None = None) -> list[dict]:
    loc = ["body", "rules"] + ([index] if index is not None else []) + ([error.field] if error.field else [])
    return [{"loc": loc, "msg": str(error), "type": "rule_error"}]


def http_error_response(error: StarletteHTTPException, allow: str | None = None) -> SafeJSONResponse:
    """The answer to an HTTPException (`allow`: the Allow header of a 405)."""
    headers = dict(error.headers or {})
    if allow is not None:
        headers["Allow"] = allow
    if error.status_code in (204, 304):
        return SafeJSONResponse(None, status_code=error.status_code, headers=headers)
    return SafeJSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)


def not_found_response(error: NotFound) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": str(error.args[0] if error.args else error)}, status_code=404)


def not_ready_response(error: NotReady) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_PLANNING)})


def robot_error_response(error: Exception) -> SafeJSONResponse | None:
    """What the app's handlers answer to an error a robot query raises (api.fastlane answers
    with it); None for any other error (a 405, the database's): the app's own handlers judge those."""
    if isinstance(error, StarletteHTTPException) and error.status_code != 405:
        return http_error_response(error)
    if isinstance(error, NotFound):
        return not_found_response(error)
    if isinstance(error, NotReady):
        return not_ready_response(error)
    return None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> SafeJSONResponse:
        # the errors echo the input, which may hold what JSON cannot carry (NaN, a surrogate)
        errors = [{k: v for k, v in e.items() if k != "url"} for e in error.errors()]
        return SafeJSONResponse({"detail": json_safe(errors)}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, error: NotFound) -> SafeJSONResponse:
        return not_found_response(error)

    @app.exception_handler(NotReady)
    async def _not_ready(_request: Request, error: NotReady) -> SafeJSONResponse:
        return not_ready_response(error)

    @app.exception_handler(MapError)
    async def _map_error(_request: Request, error: MapError) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": map_error_detail(error)}, status_code=422)

    @app.exception_handler(RuleError)
    async def _rule_error(_request: Request, error: RuleError) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": rule_error_detail(error)}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def _conflict(_request: Request, _error: IntegrityError) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": "the request conflicts with a concurrent change; retry it"},
                                status_code=409, headers={"Retry-After": "1"})

    @app.exception_handler(OperationalError)
    async def _busy(_request: Request, error: OperationalError) -> SafeJSONResponse:
        log.warning("database unavailable: %s", error.orig)
        return SafeJSONResponse({"detail": "the database is busy or unreachable; retry later"},
                                status_code=503, headers={"Retry-After": "1"})
