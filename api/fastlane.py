"""The robots' fast lane: their polled GET queries answered in front of FastAPI's routing.

A robot polls `GET /api/v1/health`, its policy status (`.../robots/{robot}`), its penalty in
one state (`.../robots/{robot}/penalty?state=...`) and its policy table (`.../robots/{robot}/policy`).
Through FastAPI each pays for route matching over every route, dependency solving and the
validation of its parameters, several times the work of the answer, which is in memory
(api.cache). This ASGI middleware recognises exactly those requests with one precompiled
regex and answers them by calling the functions the FastAPI routes call (api.routers.robots,
api.routers.meta), with the same authentication (api.security) and the same error rendering
(api.errors): one source of truth, byte-identical answers (tests/test_fast_lane.py).

Whatever it is not sure to answer identically goes on to FastAPI untouched: any other path
or method, an id or a `state` that FastAPI would refuse (its 422 bodies come from its own
validation), a query string other than exactly `state=...` on the penalty query, a missing
or malformed Authorization header, and any error it does not render itself (a database
outage, a 405). The routes stay declared in FastAPI, so the OpenAPI schema is unchanged.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

from fastapi.security.utils import get_authorization_scheme_param
from starlette.responses import Response

from .errors import robot_error_response
from .routers import meta, robots
from .schemas import MAX_ID
from .security import principal_of_token

HEALTH = "/api/v1/health"
#: what FastAPI's routes admit for these paths: ids of plain digits, robot ids of 1 to 100
#: characters (Starlette's `{param}` is `[^/]+`); a longer or other id falls through (its 422)
ROBOT_PATH = re.compile(r"/api/v1/scenarios/([0-9]{1,19})/robots/([^/]{1,100})(/policy|/penalty)?")
#: the whole raw query string of a penalty query: `state=` and what STATE_PATTERN admits once
#: URL-decoded: digits and commas, or commas encoded as `%2C` (what httpx's `params=` sends);
#: anything else (a `+`, another parameter, a second `state`) FastAPI decides
PENALTY_QUERY = re.compile(rb"state=([0-9]{1,9}(?:(?:,|%2[Cc])[0-9]{1,9}){0,63})")


def bearer_token(headers) -> str | None:
    """The token of the first Authorization header if it reads `Bearer <token>` (what
    fastapi.security.HTTPBearer accepts); None otherwise (FastAPI answers 401 itself)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, token = get_authorization_scheme_param(value.decode("latin-1"))
            return token if scheme and token and scheme.lower() == "bearer" else None
    return None


class FastLane:
    """ASGI middleware: the robots' GET queries answered without FastAPI (see the module's
    docstring); everything else passed to `app`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            response = await self.answer(scope)
            if response is not None:
                return await response(scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    async def answer(scope) -> Response | None:
        """The response to a robot query, or None: FastAPI answers it."""
        path, app = scope["path"], scope["app"]
        if path == HEALTH:
            return meta.health_response(app)  # it has no parameters: a query string changes nothing
        match = ROBOT_PATH.fullmatch(path)
        if match is None:
            return None
        scenario_id, robot_id, what = int(match[1]), match[2], match[3]
        if not 1 <= scenario_id <= MAX_ID:
            return None
        if what == "/penalty":
            query = PENALTY_QUERY.fullmatch(scope["query_string"])
            if query is None:
                return None
        token = bearer_token(scope["headers"])
        if token is None:
            return None
        try:
            cache, principal = app.state.cache, await principal_of_token(app, token)
            if what is None:
                body = await robots.robot_status(cache, principal, scenario_id, robot_id)
            elif what == "/policy":
                body = await robots.robot_policy(cache, principal, scenario_id, robot_id)
            else:
                body = await robots.robot_penalty(cache, principal, scenario_id, robot_id, unquote(query[1].decode()))
        except Exception as error:  # noqa: BLE001 - what it does not render, FastAPI answers afresh
            return robot_error_response(error)
        return Response(body, media_type=robots.JSON)


__all__ = ["FastLane", "HEALTH", "PENALTY_QUERY", "ROBOT_PATH", "bearer_token"]
