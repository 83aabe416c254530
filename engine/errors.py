"""Errors the use cases raise; the web layers map them to HTTP statuses in one place."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["EngineError", "NotFound", "Conflict", "Forbidden", "InvalidRequest", "DeploymentRejected"]


class EngineError(Exception):
    """Base of every error a caller can act on. ``message`` is for people."""

    status = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(EngineError):
    """The thing asked for does not exist."""

    status = "not_found"


class Conflict(EngineError):
    """The request clashes with the current state (already done, changed meanwhile)."""

    status = "conflict"


class Forbidden(EngineError):
    """The person asking may not do this (wrong role or agency)."""

    status = "forbidden"


class InvalidRequest(EngineError):
    """The request itself is wrong (bad data, wrong task)."""

    status = "invalid"


class DeploymentRejected(EngineError):
    """A diagram did not pass validation; ``problems`` says why."""

    status = "rejected"

    def __init__(self, problems: Sequence[Any]) -> None:
        errors = [p for p in problems if getattr(p, "severity", "error") == "error"]
        super().__init__(f"The diagram was rejected with {len(errors)} problem(s).")
        self.problems = list(problems)
