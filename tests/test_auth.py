"""Sign-in rules at the engine level: expiry, revocation, slowing down, jurisdiction."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from engine import auth, organisation
from engine.errors import InvalidRequest

from .conftest import FIXTURES

PASSWORD = "mat-khau-an-toan"


@pytest.fixture
def officers(session: Session, now: datetime) -> Session:
    organisation.load_organisation(
        session, organisation.parse_organisation((FIXTURES / "org_three_tier.yaml").read_text(), "org.yaml"), "admin", now
    )
    extra = "officers:\n  - {username: gs.huyen, full_name: Giám sát huyện, roles: [{agency: 000.00.15.H19, role: supervisor}]}\n"
    organisation.load_organisation(session, organisation.parse_organisation(extra), "admin", now)
    for username in ("desk3", "branch3", "gs.huyen"):
        auth.set_password(session, username, PASSWORD)
    return session


def test_tokens_expire_after_their_lifetime_and_on_logout(officers: Session, now: datetime) -> None:
    token, expires = auth.login(officers, "desk3", PASSWORD, now)
    assert expires == now + auth.TOKEN_LIFETIME
    assert auth.authenticate(officers, token, now + auth.TOKEN_LIFETIME - timedelta(seconds=1)).username == "desk3"
    with pytest.raises(auth.Unauthenticated):
        auth.authenticate(officers, token, now + auth.TOKEN_LIFETIME)
    second, _ = auth.login(officers, "desk3", PASSWORD, now)
    auth.logout(officers, second, now)
    with pytest.raises(auth.Unauthenticated):
        auth.authenticate(officers, second, now)
    with pytest.raises(auth.Unauthenticated):
        auth.authenticate(officers, "forged-token", now)


def test_failed_logins_wait_longer_each_time(officers: Session, now: datetime) -> None:
    for _ in range(auth.FREE_ATTEMPTS):
        with pytest.raises(auth.Unauthenticated):
            auth.login(officers, "desk3", "sai", now)
    with pytest.raises(auth.Unauthenticated):
        auth.login(officers, "desk3", "sai", now)  # the fourth failure starts a 2 s wait
    with pytest.raises(auth.TooManyAttempts) as waiting:
        auth.login(officers, "desk3", PASSWORD, now + timedelta(seconds=1))  # even the right password waits
    assert waiting.value.retry_after >= 1
    with pytest.raises(auth.Unauthenticated):
        auth.login(officers, "desk3", "sai", now + timedelta(seconds=3))  # fifth failure: 4 s
    with pytest.raises(auth.TooManyAttempts):
        auth.login(officers, "desk3", PASSWORD, now + timedelta(seconds=6))
    token, _ = auth.login(officers, "desk3", PASSWORD, now + timedelta(seconds=8))
    assert auth.authenticate(officers, token, now + timedelta(seconds=8)).username == "desk3"
    with pytest.raises(auth.Unauthenticated):
        auth.login(officers, "nobody", PASSWORD, now)  # unknown users get the same answer


def test_supervisors_see_the_agencies_below_theirs(officers: Session, now: datetime) -> None:
    tree = organisation.agency_tree(officers, fresh=True)
    district_tree = {tree.by_code[c].id for c in ("000.00.15.H19", "000.15.31.H19", "000.15.40.H19", "000.15.22.H19")}
    token, _ = auth.login(officers, "gs.huyen", PASSWORD, now)
    assert auth.visible_agencies(officers, auth.authenticate(officers, token, now)) == district_tree
    token, _ = auth.login(officers, "branch3", PASSWORD, now)
    assert auth.visible_agencies(officers, auth.authenticate(officers, token, now)) == {tree.by_code["000.15.31.H19"].id}
    with pytest.raises(InvalidRequest):
        auth.set_password(officers, "desk3", "short")


def test_roles_read_at_sign_in_serve_that_request_only(officers: Session, now: datetime) -> None:
    """The roles read with the token answer role checks in the same transaction; a role taken away counts from the next one."""
    from sqlalchemy import delete, select

    from engine.persistence.models import Officer, OfficerRole

    token, _ = auth.login(officers, "branch3", PASSWORD, now)
    identity = auth.authenticate(officers, token, now)
    assert identity.grants and sorted(identity.grants) == sorted(organisation.officer_agencies(officers, "branch3"))
    agency_id, role = identity.grants[0]
    assert organisation.holds_role(officers, "branch3", role, agency_id)
    officer_id = officers.scalar(select(Officer.id).where(Officer.username == "branch3"))
    officers.execute(delete(OfficerRole).where(OfficerRole.officer_id == officer_id, OfficerRole.agency_id == agency_id, OfficerRole.role == role))
    officers.commit()
    assert not organisation.holds_role(officers, "branch3", role, agency_id)  # a new transaction reads the roles again
    again = auth.authenticate(officers, token, now)
    assert (agency_id, role) not in again.grants
    assert sorted(again.grants) == sorted(organisation.officer_agencies(officers, "branch3"))
