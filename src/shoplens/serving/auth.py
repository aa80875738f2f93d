"""Who may change the catalog: a bearer token on the write endpoints.

FastAPI's ``HTTPBearer`` reads the header and declares the scheme in the OpenAPI schema; what is
ours is the policy. No ``Authorization`` header (or not a bearer one) is a 401 with
``WWW-Authenticate: Bearer``; a wrong token is a 403; tokens are compared in constant time
(``secrets.compare_digest``), so the answer's timing does not leak how much of a guess was
right. The token comes from an environment variable or a secret file, never from the config
itself (which DVC and MLflow record).

A service with writes on (or reads protected) and no token refuses to start, unless ``search.auth.open_writes`` says
so explicitly *and* it listens only on localhost: an open write endpoint on a network is how a
catalog gets vandalised.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from omegaconf import DictConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")
bearer = HTTPBearer(auto_error=False, description="the write token (search.auth)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class UnsafeServing(RuntimeError):
    """The configuration would expose catalog writes to anyone."""


def write_token(auth: DictConfig) -> str | None:
    """The configured token: ``$<token_env>``, else the first line of ``token_file``."""
    token = os.environ.get(str(auth.token_env), "").strip()
    if not token and auth.token_file:
        lines = Path(str(auth.token_file)).read_text(encoding="utf-8").splitlines()
        token = lines[0].strip() if lines else ""
    return token or None


def check_write_policy(search: DictConfig, token: str | None) -> None:
    """Refuse a service whose writes would be open to the network, or whose reads the config
    protects without a token to protect them with (raises UnsafeServing)."""
    if token is None and search.auth.protect_reads:
        raise UnsafeServing(
            f"search.auth.protect_reads=true but no token is configured: set "
            f"${search.auth.token_env} (or search.auth.token_file)"
        )
    if not search.writes or token is not None:
        return
    if not search.auth.open_writes:
        raise UnsafeServing(
            f"catalog writes are on but no token is configured: set ${search.auth.token_env} "
            "(or search.auth.token_file), or turn writes off (search.writes=false), or, for a "
            "local trial only, search.auth.open_writes=true"
        )
    if str(search.host) not in LOOPBACK:
        raise UnsafeServing(
            f"search.auth.open_writes=true is allowed only on localhost, not on {search.host}: "
            f"configure a token (${search.auth.token_env})"
        )


def require_token(token: str | None):
    """A dependency that lets a request through only with ``token`` (None: anyone)."""

    def check(credentials: Credentials) -> None:
        if token is None:
            return
        if credentials is None:
            raise HTTPException(
                401, "this endpoint needs a bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(403, "the token is not valid for this service")

    return check
