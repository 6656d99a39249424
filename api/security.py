"""Bearer tokens with roles. Operator tokens come from the tokens file (one per line, with
the operator's name after it: what the scenario's history records); robot tokens are made
over the API, bound to one robot of one scenario, and only their SHA-256 is stored. Tokens
are random (256 bits), so a plain hash suffices."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

bearer = HTTPBearer(auto_error=False, description="An operator token, or a robot token bound to one robot")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def operator_entry(line: str) -> tuple[str, str] | None:
    """(hash, name) of a tokens-file line `TOKEN [NAME]` ('#' starts a comment); None for a
    blank line. A token without a name is named `operator-` and its hash's first 6 digits
    (stable, and it gives nothing of the token away)."""
    parts = line.split("#", 1)[0].split(None, 1)
    if not parts:
        return None
    digest = hash_token(parts[0])
    name = parts[1].strip()[:100] if len(parts) > 1 else ""
    return digest, name or f"operator-{digest[:6]}"


def read_operator_tokens(path: Path) -> list[tuple[str, str]]:
    """(hash, name) of every operator token in `path`."""
    if not path.exists():
        return []
    return [entry for line in path.read_text().splitlines() if (entry := operator_entry(line))]


def ensure_tokens_file(path: Path) -> str | None:
    """Create `path` with one new operator token if it does not exist; return that token."""
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# operator tokens of the mase service, one per line: TOKEN NAME (the name goes in the history)\n"
                f"{token} admin\n")
    return token


@dataclass(frozen=True)
class Principal:
    role: str  # "operator" or "robot"
    scenario_id: int | None = None
    robot_id: str | None = None
    name: str = ""  # an operator's name (robots: their robot id)
    token_key: str = ""  # the token's hash: what per-token limits count
    token_id: int | None = None  # a robot token's id

    @property
    def actor(self) -> str:
        """Who did it, for the history."""
        return self.name if self.role == "operator" else f"robot {self.robot_id}"


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller of a request. Robot tokens are looked up once per process and kept
    (api.cache; a revocation reaches every process through the change feed)."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing bearer token (header 'Authorization: Bearer <token>')")
    return await principal_of_token(request.app, credentials.credentials)


async def principal_of_token(app, secret: str) -> Principal:
    digest = hash_token(secret)
    for known, name in app.state.operator_tokens:
        if hmac.compare_digest(digest, known):
            return Principal("operator", name=name, token_key=digest)
    cache = app.state.cache
    token = cache.peek_token(digest) or await run_in_threadpool(cache.token, digest)
    if token is None:
        raise _unauthorized("unknown or revoked token")
    if token.expires_at is not None and time.time() >= token.expires_at:
        raise _unauthorized("the token has expired")
    return Principal("robot", token.scenario_id, token.robot_id, name=token.robot_id, token_key=digest,
                     token_id=token.id)


def require_operator(principal: Principal) -> None:
    if principal.role != "operator":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an operator token")


def require_robot(principal: Principal, scenario_id: int, robot_id: str) -> None:
    """Operators may act for any robot; a robot token only for its own robot."""
    if principal.role == "operator":
        return
    if principal.scenario_id != scenario_id or principal.robot_id != robot_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token belongs to another robot")


__all__ = ["Principal", "authenticate", "bearer", "ensure_tokens_file", "hash_token", "new_token", "operator_entry",
           "principal_of_token", "read_operator_tokens", "require_operator", "require_robot"]
