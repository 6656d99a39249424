"""Health, the caller's identity, and the dashboard page."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from ..deps import get_principal
from ..errors import COMMON
from ..schemas import Health, Identity
from ..security import Principal

router = APIRouter(tags=["meta"])
STATIC = Path(__file__).resolve().parent.parent / "static"


def health_response(app) -> Response:
    return Response(app.state.health, media_type="application/json")  # encoded once, at start-up


@router.get("/api/v1/health", response_model=Health, summary="Is the service up")
async def health(request: Request):
    return health_response(request.app)


@router.get("/api/v1/me", response_model=Identity, summary="Who the bearer token belongs to",
            responses={401: COMMON[401]})
async def me(principal: Principal = Depends(get_principal)):
    return Identity(role=principal.role, name=principal.name, scenario_id=principal.scenario_id,
                    robot_id=principal.robot_id)


@router.get("/", include_in_schema=False)
def root():
    return RedirectResponse("/dashboard")


@router.get("/dashboard", include_in_schema=False)
def dashboard():
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")
