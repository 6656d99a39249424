"""The HTTP edge: bodies read whole within a size limit and a deadline, JSON that is really
JSON (finite numbers, valid Unicode) checked before FastAPI sees it, error bodies that always
render, and a uvicorn protocol that drops clients too slow to send their headers.

Everything refused here gets a JSON body: 413 (too large, however it is sent: Content-Length
or chunked), 408 (too slow), 422 (NaN, Infinity, a number that overflows a double or has
hundreds of digits, a lone surrogate, a NUL character, bytes that are not UTF-8), with the field's location.
"""
from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from starlette.responses import JSONResponse

MAX_INT_DIGITS = 300  # far beyond any field's range; Python refuses to parse past 4300 anyway


# -- rendering ------------------------------------------------------------------------------
def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` with everything JSON cannot carry made printable: non-finite floats and
    bytes become strings, lone surrogates are escaped, long strings are cut."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value if len(value) <= 500 else value[:500] + "..."
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value if not isinstance(value, int) or abs(value) < 10**MAX_INT_DIGITS else "a huge integer"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth > 20:
        return "..."
    if isinstance(value, dict):
        return {str(json_safe(k, depth + 1)): json_safe(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in list(value)[:100]]
    if isinstance(value, (bytes, bytearray)):
        return json_safe(bytes(value[:500]).decode("utf-8", "backslashreplace"), depth + 1)
    return json_safe(str(value), depth + 1)


class SafeJSONResponse(JSONResponse):
    """A JSON response that renders whatever an error carries (an echoed NaN, a surrogate)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, TypeError, UnicodeEncodeError):
            return super().render(json_safe(content))


# -- strict JSON --------------------------------------------------------------------------------
class _Unrepresentable:
    def __init__(self, text: str, why: str, kind: str) -> None:
        self.text, self.why, self.kind = text, why, kind


def _parse_constant(name: str) -> _Unrepresentable:
    return _Unrepresentable(name, f"{name} is not a JSON number; send a finite number", "finite_number")


def _parse_int(text: str):
    if len(text) > MAX_INT_DIGITS:
        return _Unrepresentable(text, f"an integer of {len(text.lstrip('-'))} digits is out of range",
                                "number_too_large")
    return int(text)


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def json_errors(value: Any, loc: tuple = ("body",), errors: list | None = None, limit: int = 20) -> list[dict]:
    """Errors for what a parsed JSON document holds that is not a finite number or valid text."""
    errors = [] if errors is None else errors
    stack = [(value, loc)]
    while stack and len(errors) < limit:
        item, where = stack.pop()
        if isinstance(item, str):
            if _has_lone_surrogate(item):
                errors.append({"loc": list(where), "type": "string_unicode",
                               "msg": "the string holds a lone surrogate (not a character); send valid Unicode"})
            elif "\x00" in item:  # valid JSON, but no database column can hold it (PostgreSQL refuses)
                errors.append({"loc": list(where), "type": "string_nul",
                               "msg": "the string holds a NUL character (\\u0000), which is not allowed"})
        elif isinstance(item, float):
            if not math.isfinite(item):
                errors.append({"loc": list(where), "type": "finite_number",
                               "msg": "the number overflows a double (it reads as infinity); send a finite number"})
        elif isinstance(item, _Unrepresentable):
            errors.append({"loc": list(where), "type": item.kind, "msg": item.why})
        elif isinstance(item, dict):
            for key, child in item.items():
                if _has_lone_surrogate(key) or "\x00" in key:
                    errors.append({"loc": [*where, json_safe(key)], "type": "string_unicode",
                                   "msg": "the key holds a lone surrogate or a NUL character; send valid Unicode"})
                stack.append((child, (*where, key)))
        elif isinstance(item, list):
            stack.extend((child, (*where, i)) for i, child in enumerate(item))
    return errors


def check_json_body(body: bytes) -> list[dict]:
    """Errors of a JSON body that FastAPI would otherwise accept or fail on with a 500/400;
    [] for a body it can judge itself (valid, or not JSON at all: its own 422)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return [{"loc": ["body", error.start], "type": "utf8", "msg": "the body is not valid UTF-8"}]
    try:
        value = json.loads(text, parse_constant=_parse_constant, parse_int=_parse_int)
    except (ValueError, RecursionError):
        return []  # FastAPI answers 422 json_invalid with the position
    return json_errors(value)


def _wants_json(headers: dict) -> bool:
    content_type = headers.get(b"content-type")
    if content_type is None:
        return True  # FastAPI parses a body without a content type as JSON
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


# -- the body reader -----------------------------------------------------------------------------
class BodyReader:
    """ASGI middleware: read a request's whole body before the app runs, refusing it with
    413 past `limit` bytes (Content-Length or chunked) and 408 if it takes longer than
    `timeout` seconds; check JSON bodies (422). Requests without a body pass straight on."""

    def __init__(self, app, limit: int, timeout: float) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)  # no body (the robots' GETs)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(scope, receive, send, 413, f"request body larger than {self.limit} bytes")
        chunks, seen = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return await self._refuse(scope, receive, send, 408,
                                          f"the request body did not arrive within {self.timeout:g} s")
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                return await self._refuse(scope, receive, send, 413, f"request body larger than {self.limit} bytes")
            chunks.append(body)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _wants_json(headers):
            errors = check_json_body(body)
            if errors:
                response = SafeJSONResponse({"detail": errors}, status_code=422)
                return await response(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str) -> None:
        # the rest of the body is not read: the connection cannot carry another request
        response = SafeJSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
        await response(scope, receive, send)


# -- slow clients -------------------------------------------------------------------------------
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools missing: uvicorn's h11 protocol, without the header deadline
    HttpToolsProtocol = None

if HttpToolsProtocol is not None:
    class TimedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline for a request's headers: a connection
        that has not sent a whole request head within `header_timeout` seconds of opening,
        or of its previous response, is closed (uvicorn's keep-alive timeout is reset by
        every byte, so a client sending one byte a second would hold it for ever)."""

        header_timeout: float = 10.0
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def on_headers_complete(self) -> None:
            self._disarm()
            # a way for a long response (an event stream) to drop a client that stopped reading
            # at once: closing would wait for the unread bytes to drain, which never happens
            self.scope["mase.abort"] = self.transport.abort
            self.scope["mase.socket"] = self.transport.get_extra_info("socket")  # to bound its send buffer
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            idle = not self.pipeline and (self.cycle is None or self.cycle.response_complete)
            if idle and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()
else:  # pragma: no cover
    TimedHttpToolsProtocol = None
