"""Officers' sign-in: passwords, bearer tokens that expire and can be revoked,
slowing down repeated failures, and who may see which agencies' work."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .core.assignment import AgencyTree
from .errors import EngineError, Forbidden, InvalidRequest
from .organisation import agency_tree, remember_grants
from .persistence.db import unit_of_work
from .persistence.models import ApiToken, Officer, OfficerRole

__all__ = [
    "Identity",
    "TOKEN_LIFETIME",
    "TooManyAttempts",
    "Unauthenticated",
    "authenticate",
    "login",
    "logout",
    "set_password",
    "visible_agencies",
]

#: How long a token is valid.
TOKEN_LIFETIME = timedelta(hours=8)
#: Failed logins allowed before each further attempt waits.
FREE_ATTEMPTS = 3
MAX_LOCK = timedelta(minutes=15)
# A real hash to compare against when the user does not exist, so that the
# answer takes as long as for a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-password")


class Unauthenticated(EngineError):
    """No valid credentials: unknown user, wrong password, missing, expired or revoked token."""

    status = "unauthenticated"


class TooManyAttempts(EngineError):
    """Too many failed logins: wait ``retry_after`` seconds."""

    status = "too_many_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Identity:
    """Who is calling, with the roles they hold: ``(agency id, role)`` pairs."""

    username: str
    full_name: str
    grants: tuple[tuple[int, str], ...]

    def roles(self) -> set[str]:
        return {role for _, role in self.grants}

    def agencies(self, *roles: str) -> set[int]:
        return {agency for agency, role in self.grants if not roles or role in roles}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@unit_of_work
def set_password(session: Session, username: str, password: str) -> None:
    if len(password) < 8:
        raise InvalidRequest("A password needs at least 8 characters.")
    officer = session.scalar(select(Officer).where(Officer.username == username))
    if officer is None:
        raise InvalidRequest(f"No officer '{username}'.")
    officer.password_hash = generate_password_hash(password)
    session.commit()


@unit_of_work
def login(session: Session, username: str, password: str, now: datetime) -> tuple[str, datetime]:
    """Check the password and issue a token: ``(token, expires_at)``."""
    officer = session.scalar(select(Officer).where(Officer.username == username).with_for_update())
    if officer is not None and officer.locked_until is not None and officer.locked_until > now:
        wait = int((officer.locked_until - now).total_seconds()) + 1
        raise TooManyAttempts(f"Too many failed logins; try again in {wait} seconds.", wait)
    valid = check_password_hash(officer.password_hash if officer and officer.password_hash else _DUMMY_HASH, password)
    if officer is None or not officer.active or not officer.password_hash or not valid:
        if officer is not None:
            officer.failed_logins += 1
            over = officer.failed_logins - FREE_ATTEMPTS
            if over > 0:
                officer.locked_until = now + min(timedelta(seconds=2**over), MAX_LOCK)
            session.commit()
        raise Unauthenticated("Wrong username or password.")
    officer.failed_logins, officer.locked_until = 0, None
    token = secrets.token_urlsafe(32)
    expires = now + TOKEN_LIFETIME
    session.add(ApiToken(officer_id=officer.id, token_hash=_hash(token), created_at=now, expires_at=expires))
    session.commit()
    return token, expires


def authenticate(session: Session, token: str, now: datetime) -> Identity:
    """The identity behind a bearer token; raises :class:`Unauthenticated`.

    One statement reads the token, the officer and their roles; the roles are
    remembered for the rest of the transaction (see :func:`remember_grants`).
    """
    rows = session.execute(
        select(Officer.username, Officer.full_name, Officer.active, ApiToken.expires_at, ApiToken.revoked_at,
               OfficerRole.agency_id, OfficerRole.role)
        .join(ApiToken, ApiToken.officer_id == Officer.id)
        .outerjoin(OfficerRole, OfficerRole.officer_id == Officer.id)
        .where(ApiToken.token_hash == _hash(token))
        .order_by(OfficerRole.id)
    ).all()
    row = rows[0] if rows else None
    if row is None or row.revoked_at is not None or row.expires_at <= now or not row.active:
        raise Unauthenticated("The token is missing, expired or revoked; sign in again.")
    grants = tuple((r.agency_id, r.role) for r in rows if r.agency_id is not None)
    remember_grants(session, row.username, grants)
    return Identity(row.username, row.full_name, grants)


@unit_of_work
def logout(session: Session, token: str, now: datetime) -> None:
    """Revoke a token."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        session.commit()


def visible_agencies(session: Session, identity: Identity) -> set[int]:
    """Agencies whose work ``identity`` may see: where they hold a role, and for
    supervisors every agency below theirs."""
    visible = identity.agencies()
    supervised = identity.agencies("supervisor")
    if supervised:
        tree = agency_tree(session)
        visible |= _descendants(tree, supervised)
    return visible


def _descendants(tree: AgencyTree, roots: set[int]) -> set[int]:
    found, todo = set(roots), list(roots)
    while todo:
        for child in tree.children.get(todo.pop(), []):
            if child.id not in found:
                found.add(child.id)
                todo.append(child.id)
    return found


def require(identity: Identity, *roles: str, agency_id: int | None = None) -> None:
    """Refuse unless ``identity`` holds one of ``roles`` (at ``agency_id`` when given)."""
    held = identity.agencies(*roles)
    if not held or (agency_id is not None and agency_id not in held):
        raise Forbidden(f"This needs the role {' or '.join(roles)}" + (" at that agency." if agency_id else "."))
