"""Health and the dashboard page."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, RedirectResponse

from ..db import Database
from ..deps import get_db
from ..schemas import Health

router = APIRouter(tags=["meta"])
STATIC = Path(__file__).resolve().parent.parent / "static"


@router.get("/api/v1/health", response_model=Health, summary="Is the service up")
def health(db: Database = Depends(get_db)):
    return Health(status="ok", version="1", database=db.engine.dialect.name)


@router.get("/", include_in_schema=False)
def root():
    return RedirectResponse("/dashboard")


@router.get("/dashboard", include_in_schema=False)
def dashboard():
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")
