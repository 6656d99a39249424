"""Error responses: one shape ({"detail": ...}) for every 4xx, and the library's errors mapped."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from metareasoner.rules import RuleError
from planner.world import MapError

from .fleets import NotFound
from .schemas import ErrorDetail

COMMON = {401: {"model": ErrorDetail, "description": "Missing or unknown bearer token"},
          403: {"model": ErrorDetail, "description": "The token may not do this"}}
NOT_FOUND = {404: {"model": ErrorDetail, "description": "No such scenario, robot, run or version"}}
CONFLICT = {409: {"model": ErrorDetail, "description": "The request conflicts with a run in progress"}}


def map_error_detail(error: MapError, field: str = "map_text") -> list[dict]:
    return [{"loc": ["body", field], "msg": str(error), "type": "map_error", "line": error.line,
             "column": error.column, "field": error.field}]


def rule_error_detail(error: RuleError, index: int | None = None) -> list[dict]:
    loc = ["body", "rules"] + ([index] if index is not None else []) + ([error.field] if error.field else [])
    return [{"loc": loc, "msg": str(error), "type": "rule_error"}]


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, error: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error.args[0] if error.args else error)}, status_code=404)

    @app.exception_handler(MapError)
    async def _map_error(_request: Request, error: MapError) -> JSONResponse:
        return JSONResponse({"detail": map_error_detail(error)}, status_code=422)

    @app.exception_handler(RuleError)
    async def _rule_error(_request: Request, error: RuleError) -> JSONResponse:
        return JSONResponse({"detail": rule_error_detail(error)}, status_code=422)
