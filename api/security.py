"""Bearer-token authentication for the API."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Callable, TypeVar

from flask import g, request

from engine import auth
from engine.core.calendar import VN_TZ

from .app import db_session

__all__ = ["bearer_token", "current", "login_required", "now"]

F = TypeVar("F", bound=Callable[..., Any])


def now() -> datetime:
    """The request's clock (the one place the web layer reads it)."""
    if "now" not in g:
        g.now = datetime.now(VN_TZ)
    return g.now


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current() -> auth.Identity:
    """The signed-in officer (after :func:`login_required`)."""
    return g.identity


def login_required(function: F) -> F:
    """Let the view run only with a valid bearer token."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = bearer_token()
        if token is None:
            raise auth.Unauthenticated("Sign in first: send 'Authorization: Bearer <token>' from POST /api/v1/auth/login.")
        g.identity = auth.authenticate(db_session(), token, now())
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
