"""Bearer tokens with roles. Operator tokens come from the tokens file (one per line);
robot tokens are made over the API, bound to one robot of one scenario, and only their
SHA-256 is stored. Tokens are random (256 bits), so a plain hash suffices."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import RobotTokenRow

bearer = HTTPBearer(auto_error=False, description="An operator token, or a robot token bound to one robot")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def read_operator_tokens(path: Path) -> list[str]:
    """Hashes of the operator tokens in `path` ('#' starts a comment)."""
    if not path.exists():
        return []
    hashes = []
    for line in path.read_text().splitlines():
        token = line.split("#", 1)[0].strip()
        if token:
            hashes.append(hash_token(token))
    return hashes


def ensure_tokens_file(path: Path) -> str | None:
    """Create `path` with one new operator token if it does not exist; return that token."""
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# operator tokens of the mase service, one per line\n" + token + "\n")
    return token


@dataclass(frozen=True)
class Principal:
    role: str  # "operator" or "robot"
    scenario_id: int | None = None
    robot_id: str | None = None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing bearer token (header 'Authorization: Bearer <token>')")
    digest = hash_token(credentials.credentials)
    if any(hmac.compare_digest(digest, known) for known in request.app.state.operator_token_hashes):
        return Principal("operator")
    row = session.scalar(select(RobotTokenRow).where(RobotTokenRow.token_hash == digest))
    if row is None:
        raise _unauthorized("unknown or revoked token")
    return Principal("robot", row.scenario_id, row.robot_id)


def require_operator(principal: Principal) -> None:
    if principal.role != "operator":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an operator token")


def require_robot(principal: Principal, scenario_id: int, robot_id: str) -> None:
    """Operators may act for any robot; a robot token only for its own robot."""
    if principal.role == "operator":
        return
    if principal.scenario_id != scenario_id or principal.robot_id != robot_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token belongs to another robot")


__all__ = ["Principal", "authenticate", "bearer", "ensure_tokens_file", "hash_token", "new_token",
           "read_operator_tokens", "require_operator", "require_robot"]
