"""Use cases of the organisation: agencies, officers and the roles they hold.

Loaded from a YAML (or CSV) file and editable later. Example YAML::

    agencies:
      - code: 000.00.00.H19
        name: UBND tỉnh Đồng Nai
        level: province
        children:
          - {code: 000.00.31.H19, name: Văn phòng Đăng ký đất đai, level: department, kind: vpdk}
          - {code: 000.17.22.H19, name: UBND xã Phước An, level: commune}
    officers:
      - username: lan.nt
        full_name: Nguyễn Thị Lan
        phone: "0912345678"
        roles: [{agency: 000.17.22.H19, role: receptionist}]

CSV files have the columns ``code,name,level,kind,parent`` (agencies) or
``username,full_name,email,phone,agency,role`` (officer roles, one per line).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from time import monotonic
from typing import Any, Iterable, Mapping

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from .core.assignment import AgencyNode, AgencyTree
from .errors import InvalidRequest, NotFound
from .persistence.db import unit_of_work
from .persistence.models import Agency, AuditEvent, Officer, OfficerRole

__all__ = [
    "LEVELS",
    "ROLES",
    "agency_tree",
    "holds_role",
    "load_organisation",
    "move_dossier_home",
    "officer_agencies",
    "parse_organisation",
    "remember_grants",
    "reorganise",
]

#: Roles an officer can hold at an agency.
ROLES = ("receptionist", "officer", "head_of_unit", "leader", "supervisor", "designer", "administrator")
#: Levels of agencies, from the top.
LEVELS = ("province", "department", "district", "commune", "unit")
ROLE_LABELS = {
    "receptionist": "Công chức Bộ phận Một cửa",
    "officer": "Chuyên viên",
    "head_of_unit": "Lãnh đạo phòng",
    "leader": "Lãnh đạo cơ quan",
    "supervisor": "Giám sát",
    "designer": "Xây dựng quy trình",
    "administrator": "Quản trị",
}

TREE_TTL = 30.0
_trees: dict[str, tuple[float, AgencyTree]] = {}


def parse_organisation(text: str, filename: str = "") -> dict[str, Any]:
    """Read an organisation file (YAML, or CSV by extension) into plain data."""
    if filename.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and "username" in rows[0]:
            officers: dict[str, dict[str, Any]] = {}
            for row in rows:
                entry = officers.setdefault(
                    row["username"],
                    {k: row.get(k) for k in ("username", "full_name", "email", "phone")} | {"roles": []},
                )
                entry["roles"].append({"agency": row["agency"], "role": row["role"]})
            return {"agencies": [], "officers": list(officers.values())}
        return {"agencies": [dict(row) for row in rows], "officers": []}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise InvalidRequest(f"The organisation file is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise InvalidRequest("The organisation file must have 'agencies' and/or 'officers'.")
    return data


@unit_of_work
def load_organisation(session: Session, data: Mapping[str, Any], actor: str, now: datetime) -> dict[str, int]:
    """Create or update agencies and officers from ``data``; return counts."""
    by_code = {a.code: a for a in session.scalars(select(Agency))}
    agencies = 0
    for item, parent_code in _flatten(data.get("agencies") or []):
        code = str(item.get("code") or "").strip()
        if not code or not item.get("name"):
            raise InvalidRequest(f"Every agency needs a code and a name (got {dict(item)}).")
        level = str(item.get("level") or "unit").strip()
        if level not in LEVELS:
            raise InvalidRequest(f"Agency {code}: level '{level}' is not one of {', '.join(LEVELS)}.")
        parent_code = str(item.get("parent") or parent_code or "").strip() or None
        parent = by_code.get(parent_code) if parent_code else None
        if parent_code and parent is None:
            raise InvalidRequest(f"Agency {code}: parent {parent_code} is not defined before it.")
        agency = by_code.get(code)
        if agency is None:
            agency = Agency(code=code)
            session.add(agency)
            by_code[code] = agency
        agency.name = str(item["name"])
        agency.level = level
        agency.kind = str(item.get("kind") or "ubnd").strip().lower()
        agency.email = item.get("email")
        agency.active = bool(item.get("active", True))
        session.flush()
        agency.parent_id = parent.id if parent else None
        agencies += 1
    session.flush()
    officers = 0
    users = {o.username: o for o in session.scalars(select(Officer))}
    for item in data.get("officers") or []:
        username = str(item.get("username") or "").strip()
        if not username:
            raise InvalidRequest("Every officer needs a username.")
        officer = users.get(username)
        if officer is None:
            officer = Officer(username=username, full_name=str(item.get("full_name") or username))
            session.add(officer)
            users[username] = officer
        officer.full_name = str(item.get("full_name") or officer.full_name)
        officer.email = item.get("email")
        officer.phone = str(item["phone"]) if item.get("phone") else None
        if item.get("password"):
            officer.password_hash = generate_password_hash(str(item["password"]))
        session.flush()
        for grant in item.get("roles") or []:
            agency = by_code.get(str(grant.get("agency")))
            role = str(grant.get("role"))
            if agency is None:
                raise InvalidRequest(f"Officer {username}: agency {grant.get('agency')} is unknown.")
            if role not in ROLES:
                raise InvalidRequest(f"Officer {username}: role '{role}' is not one of {', '.join(ROLES)}.")
            exists = session.scalar(
                select(OfficerRole).where(
                    OfficerRole.officer_id == officer.id, OfficerRole.agency_id == agency.id, OfficerRole.role == role
                )
            )
            if exists is None:
                session.add(OfficerRole(officer_id=officer.id, agency_id=agency.id, role=role))
        officers += 1
    session.add(
        AuditEvent(at=now, actor=actor, action="organisation.load", details={"agencies": agencies, "officers": officers})
    )
    session.commit()
    _trees.clear()
    return {"agencies": agencies, "officers": officers}


def _flatten(items: Iterable[Mapping[str, Any]], parent: str | None = None) -> Iterable[tuple[Mapping[str, Any], str | None]]:
    stack = [(item, parent) for item in reversed(list(items))]
    while stack:
        item, parent_code = stack.pop()
        yield item, parent_code
        for child in reversed(list(item.get("children") or [])):
            stack.append((child, str(item.get("code"))))


def agency_tree(session: Session, fresh: bool = False) -> AgencyTree:
    """The agency tree, re-read at most every :data:`TREE_TTL` seconds per process."""
    database = str(session.get_bind().url)
    seen = _trees.get(database)
    if not fresh and seen is not None and monotonic() - seen[0] < TREE_TTL:
        return seen[1]
    rows = session.execute(
        select(Agency.id, Agency.code, Agency.level, Agency.kind, Agency.parent_id, Agency.active)
    ).all()
    tree = AgencyTree(AgencyNode(*row) for row in rows)
    _trees[database] = (monotonic(), tree)
    return tree


def agency_by_code(session: Session, code: str) -> Agency:
    agency = session.scalar(select(Agency).where(Agency.code == code))
    if agency is None:
        raise NotFound(f"No agency with code {code}.")
    return agency


def officer_by_username(session: Session, username: str) -> Officer:
    officer = session.scalar(select(Officer).where(Officer.username == username))
    if officer is None:
        raise NotFound(f"No officer '{username}'.")
    return officer


_GRANTS_KEY = "motcua.grants"


def remember_grants(session: Session, username: str, grants: Iterable[tuple[int, str]]) -> None:
    """Let :func:`officer_agencies` answer from ``grants`` for the rest of the session's current transaction.

    Sign-in reads an officer's roles anyway; the checks that follow in the
    same request need not read them again.
    """
    session.info.setdefault(_GRANTS_KEY, {})[username] = (session.get_transaction(), tuple(grants))


def officer_agencies(session: Session, username: str, role: str | None = None) -> list[tuple[int, str]]:
    """``(agency id, role)`` pairs the officer holds (optionally of one role)."""
    known = session.info.get(_GRANTS_KEY, {}).get(username)
    if known is not None and known[0] is not None and known[0] is session.get_transaction():
        return [(a, r) for a, r in known[1] if role is None or r == role]
    query = (
        select(OfficerRole.agency_id, OfficerRole.role)
        .join(Officer, Officer.id == OfficerRole.officer_id)
        .where(Officer.username == username, Officer.active.is_(True))
    )
    if role is not None:
        query = query.where(OfficerRole.role == role)
    return [(a, r) for a, r in session.execute(query).all()]


def holds_role(session: Session, username: str, role: str, agency_id: int | None) -> bool:
    """True when ``username`` holds ``role`` at ``agency_id``."""
    return any(a == agency_id for a, _ in officer_agencies(session, username, role))


@unit_of_work
def reorganise(
    session: Session, successors: Mapping[str, str], actor: str, now: datetime, move_officers: bool = True
) -> dict[str, int]:
    """Merge or abolish agencies: each old agency code maps to its successor's.

    The old agency is kept (inactive, pointing to its successor) so that
    history, control slips and dossier codes issued before stay valid; its
    child agencies move under the successor, and its in-flight work moves
    there: open steps, the dossiers that belong to it, and (by default) the
    roles its officers held. A split is a merge into one successor followed by
    :func:`move_dossier_home` for the dossiers that belong elsewhere.
    """
    from .persistence.models import Dossier, Task, TaskState

    moved = {"agencies": 0, "tasks": 0, "dossiers": 0, "roles": 0}
    for old_code, new_code in successors.items():
        old, new = agency_by_code(session, old_code), agency_by_code(session, new_code)
        if old.id == new.id:
            raise InvalidRequest(f"Agency {old_code} cannot succeed itself.")
        chain = {a.id for a in _ancestors(session, new)}
        if old.id in chain:
            raise InvalidRequest(f"{new_code} lies under {old_code}; it cannot take over its own parent.")
        for child in session.scalars(select(Agency).where(Agency.parent_id == old.id)):
            if child.id != new.id:
                child.parent_id = new.id
        old.active, old.successor_id = False, new.id
        tasks = session.scalars(select(Task).where(Task.agency_id == old.id, Task.state.in_(TaskState.OPEN)).execution_options(populate_existing=True)).all()
        for task in tasks:
            task.agency_id, task.agency = new.id, new.code
        homes = session.scalars(select(Dossier).where(Dossier.home_agency_id == old.id).execution_options(populate_existing=True)).all()
        for dossier in homes:
            dossier.home_agency_id = new.id
        if move_officers:
            for grant in session.scalars(select(OfficerRole).where(OfficerRole.agency_id == old.id)).all():
                exists = session.scalar(
                    select(OfficerRole).where(
                        OfficerRole.officer_id == grant.officer_id, OfficerRole.agency_id == new.id, OfficerRole.role == grant.role
                    )
                )
                if exists is None:
                    session.add(OfficerRole(officer_id=grant.officer_id, agency_id=new.id, role=grant.role))
                    moved["roles"] += 1
        session.add(
            AuditEvent(
                at=now, actor=actor, action="organisation.succeed", subject=old_code, from_state=old_code, to_state=new_code,
                details={"tasks": [t.id for t in tasks], "dossiers": [d.code for d in homes]},
            )
        )
        moved["agencies"] += 1
        moved["tasks"] += len(tasks)
        moved["dossiers"] += len(homes)
    session.commit()
    _trees.clear()
    return moved


@unit_of_work
def move_dossier_home(session: Session, dossier_code: str, agency_code: str, actor: str, now: datetime) -> None:
    """Give a dossier a new home agency (e.g. after a split); later steps resolve from it."""
    from .persistence.models import Dossier

    dossier = session.scalar(select(Dossier).where(Dossier.code == dossier_code).execution_options(populate_existing=True))
    if dossier is None:
        raise NotFound(f"No dossier with code {dossier_code}.")
    agency = agency_by_code(session, agency_code)
    before = dossier.home_agency_id
    dossier.home_agency_id = agency.id
    session.add(
        AuditEvent(at=now, actor=actor, action="dossier.move_home", dossier_id=dossier.id, subject=dossier_code,
                   from_state=str(before), to_state=agency_code, details={})
    )
    session.commit()


def _ancestors(session: Session, agency: Agency) -> list[Agency]:
    chain, seen = [], set()
    while agency is not None and agency.id not in seen:
        chain.append(agency)
        seen.add(agency.id)
        agency = session.get(Agency, agency.parent_id) if agency.parent_id else None
    return chain
