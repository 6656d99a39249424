"""The push channel (api.events): a scenario's events as Server-Sent Events, opened with a
bearer token or, for browsers (EventSource cannot send headers), a single-use ticket."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from .. import repository
from ..db import Database
from ..deps import get_db, get_principal
from ..errors import COMMON, NOT_FOUND
from ..events import EventStream, ticket_expiry
from ..models import EventTicketRow, RobotTokenRow
from ..schemas import ScenarioId, TicketIn, TicketOut
from ..security import Principal, authenticate, bearer, hash_token, new_token

router = APIRouter(prefix="/api/v1", tags=["events"])
TOO_MANY = {429: {"description": "Too many event streams open for this token (Retry-After)"}}


def _check_scope(principal: Principal, scenario_id: int) -> None:
    if principal.role == "robot" and principal.scenario_id != scenario_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a robot token sees only its own scenario's events")


@router.post("/events/tickets", response_model=TicketOut, status_code=status.HTTP_201_CREATED,
             responses={**COMMON, **NOT_FOUND},
             summary="A short-lived, single-use ticket that opens a scenario's event stream (for EventSource)")
def post_ticket(body: TicketIn, request: Request, db: Database = Depends(get_db),
                principal: Principal = Depends(get_principal)):
    _check_scope(principal, body.scenario_id)
    ttl = request.app.state.settings.ticket_ttl
    ticket = new_token()
    with db.transaction() as session:
        repository.scenario(session, body.scenario_id)
        session.add(EventTicketRow(ticket_hash=hash_token(ticket), scenario_id=body.scenario_id, role=principal.role,
                                   name=principal.name, robot_id=principal.robot_id, token_key=principal.token_key,
                                   token_id=principal.token_id, expires_at=ticket_expiry(ttl), used=False))
    return TicketOut(ticket=ticket, scenario_id=body.scenario_id, expires_in=ttl)


def _redeem(db: Database, ticket: str, scenario_id: int) -> tuple[Principal, float | None] | None:
    """The principal a ticket stands for, using it up; None if unknown, used, expired or for
    another scenario. A robot's ticket dies with its token."""
    digest = hash_token(ticket)
    now = datetime.now(timezone.utc)
    with db.transaction() as session:
        taken = session.execute(update(EventTicketRow).where(
            EventTicketRow.ticket_hash == digest, EventTicketRow.used.is_(False), EventTicketRow.expires_at > now,
            EventTicketRow.scenario_id == scenario_id).values(used=True)).rowcount
        if not taken:
            return None
        row = session.scalar(select(EventTicketRow).where(EventTicketRow.ticket_hash == digest))
        expires = None
        if row.role == "robot":
            token = session.get(RobotTokenRow, row.token_id)
            if token is None or (token.expires_at is not None and token.expires_at <= now):
                return None
            expires = token.expires_at.timestamp() if token.expires_at is not None else None
        return Principal(row.role, row.scenario_id if row.role == "robot" else None, row.robot_id, name=row.name,
                         token_key=row.token_key, token_id=row.token_id), expires


@router.get("/scenarios/{scenario_id}/events", responses={
    **COMMON, **NOT_FOUND, **TOO_MANY,
    200: {"content": {"text/event-stream": {}},
          "description": "Server-Sent Events: first `snapshot` (scenario, runs, monitor, open alerts, recent history), "
                         "then `run`, `plan`, `deployment`, `rules`, `scenario`, `robots`, `monitor`, `alert`, "
                         "`history`, `deleted`; each `data:` is JSON as the matching GET answers it"}},
    summary="The scenario's live events (bearer token, or ?ticket= from POST /api/v1/events/tickets)",
    # either a bearer token or a ticket: the header is not required (an empty requirement)
    openapi_extra={"security": [{"HTTPBearer": []}, {}]})
async def get_events(scenario_id: ScenarioId, request: Request,
                     ticket: str | None = Query(None, min_length=10, max_length=100, pattern=r"^[A-Za-z0-9_-]+$",
                                                description="A ticket from POST /api/v1/events/tickets (instead of "
                                                            "the Authorization header)"),
                     credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                     db: Database = Depends(get_db)):
    app = request.app
    expires = None
    if credentials is not None or ticket is None:
        principal = await authenticate(request, credentials)
        if principal.role == "robot":
            token = app.state.cache.peek_token(principal.token_key)
            expires = token.expires_at if token is not None else None
    else:
        redeemed = await run_in_threadpool(_redeem, db, ticket, scenario_id)
        if redeemed is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown, used or expired ticket (ask for a new one)",
                                headers={"WWW-Authenticate": "Bearer"})
        principal, expires = redeemed
    _check_scope(principal, scenario_id)

    def exists() -> None:
        with db.sessions() as session:
            repository.scenario(session, scenario_id)

    await run_in_threadpool(exists)
    broker = app.state.events
    try:
        subscriber = broker.join(scenario_id, principal, asyncio.get_running_loop())
    except LookupError as error:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(error), headers={"Retry-After": "5"}) from None
    return EventStream(broker, subscriber, expires)


__all__ = ["router"]
