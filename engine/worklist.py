"""Read-side queries behind the pages: catalogs, inboxes and dossier lists, one page at a time.

Every list comes as a :class:`Paged` (items of one page and the total), built
with a bounded number of indexed queries whatever the size of the database.
Nothing here writes.

Example::

    page = inbox_page(session, "chuyenvien.phuocan", "queue", page=1, per_page=20, now=now)
    for row in page.items: print(row.dossier_code, row.step_name, row.urgency)
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Sequence, TypeVar

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from . import auth, organisation, services
from .core import bpmn
from .core.calendar import WorkingCalendar
from .persistence.models import (
    Agency,
    Dossier,
    Officer,
    OfficerRole,
    Procedure,
    ProcedureFile,
    ProcedureVersion,
    Task,
    TaskState,
)

__all__ = [
    "Paged",
    "dossier_agencies",
    "dossier_list",
    "dossier_steps",
    "holders",
    "inbox_page",
    "main_file",
    "procedure_catalog",
    "procedure_documents",
    "signers",
    "urgency",
    "visible_filter",
]

T = TypeVar("T")

#: Statuses in which a dossier is still open (its due date matters).
OPEN_STATUSES = (2, 4, 5, 6)


@dataclass(frozen=True)
class Paged(Generic[T]):
    """One page of a list: ``items``, the 1-based ``page``, its size and the ``total`` count."""

    items: Sequence[T]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page)) if self.per_page else 1

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def _page(page: int, per_page: int) -> tuple[int, int]:
    page = page if isinstance(page, int) and 0 < page < 1_000_000 else 1
    per_page = min(max(per_page, 1), 200)
    return page, per_page


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(text: str) -> str:
    return _escape_like(text.lower())


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class CatalogRow:
    code: str
    name: str
    field: str | None
    level: str | None
    latest_version: int
    deadline: str | None
    versions: Sequence[tuple[int, datetime, str]]  # (number, deployed_at, deployed_by), newest first


def procedure_catalog(session: Session, query: str = "", page: int = 1, per_page: int = 20) -> Paged[CatalogRow]:
    """Procedures by code (filtered by code or name), each with its versions."""
    page, per_page = _page(page, per_page)
    filt = _procedure_filter(query)
    total = session.scalar(select(func.count()).select_from(Procedure).where(filt)) or 0
    procedures = session.execute(
        select(Procedure.id, Procedure.code, Procedure.name, Procedure.field, Procedure.level, Procedure.latest_version)
        .where(filt)
        .order_by(Procedure.code)
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    ids = [p.id for p in procedures]
    versions: dict[int, list[tuple[int, datetime, str, dict[str, Any]]]] = {}
    if ids:
        for row in session.execute(
            select(ProcedureVersion.procedure_id, ProcedureVersion.version, ProcedureVersion.deployed_at, ProcedureVersion.deployed_by, ProcedureVersion.meta)
            .where(ProcedureVersion.procedure_id.in_(ids))
            .order_by(ProcedureVersion.version.desc())
        ):
            versions.setdefault(row.procedure_id, []).append((row.version, row.deployed_at, row.deployed_by, row.meta))
    items = []
    for p in procedures:
        mine = versions.get(p.id, [])
        latest = next((v for v in mine if v[0] == p.latest_version), None)
        items.append(
            CatalogRow(p.code, p.name, p.field, p.level, p.latest_version, latest[3].get("deadline") if latest else None,
                       [(v[0], v[1], v[2]) for v in mine])
        )
    return Paged(items, page, per_page, total)


def _procedure_filter(query: str) -> Any:
    text = " ".join((query or "").split())[:100]
    if not text:
        return Procedure.id.is_not(None)
    pattern = f"%{_like_prefix(text)}%"
    return or_(func.lower(Procedure.code).like(pattern, escape="\\"), func.lower(Procedure.name).like(pattern, escape="\\"))


def main_file(session: Session, version: ProcedureVersion) -> tuple[str, bytes] | None:
    """The file of ``version`` that holds its main process (name, content)."""
    files = session.execute(select(ProcedureFile.filename, ProcedureFile.content).where(ProcedureFile.version_id == version.id)).all()
    marker = f'id="{version.process_id}"'.encode()
    for name, content in files:
        if marker in content:
            return name, content
    return (files[0][0], files[0][1]) if files else None


_DOCS_CACHE: "OrderedDict[tuple[str, int], tuple[str, ...]]" = OrderedDict()
_DOCS_LOCK = threading.Lock()


def procedure_documents(session: Session, version: ProcedureVersion) -> tuple[str, ...]:
    """The dossier parts a procedure lists in the optional process property ``documents``
    (one per line or separated by ``;``), for the reception checklist."""
    key = (str(session.get_bind().url), version.id)  # versions never change: cache per database
    with _DOCS_LOCK:
        if key in _DOCS_CACHE:
            return _DOCS_CACHE[key]
    found: tuple[str, ...] = ()
    main = main_file(session, version)
    if main is not None:
        root, _ = bpmn.parse_xml(main[1], main[0])
        if root is not None:
            for process in root.iter(f"{{{bpmn.BPMN_NS}}}process"):
                if process.get("id") == version.process_id:
                    raw = bpmn.extension_properties(process).get("documents", "")
                    found = tuple(part.strip() for part in re.split(r"[;\n]", raw) if part.strip())
    with _DOCS_LOCK:
        _DOCS_CACHE[key] = found
        while len(_DOCS_CACHE) > 256:
            _DOCS_CACHE.popitem(last=False)
    return found


def enum_options(content: bytes, step_id: str) -> dict[str, list[tuple[str, str]]]:
    """Choices of the ``enum`` form fields of step ``step_id``: field id → [(value id, label)]."""
    root, _ = bpmn.parse_xml(content, "diagram.bpmn")
    if root is None:
        return {}
    camunda = bpmn.CAMUNDA_NS
    options: dict[str, list[tuple[str, str]]] = {}
    for element in root.iter():
        if isinstance(element.tag, str) and element.get("id") == step_id:
            for form_field in element.iter(f"{{{camunda}}}formField"):
                if form_field.get("type") == "enum":
                    options[form_field.get("id", "")] = [
                        (v.get("id", ""), v.get("name") or v.get("id", "")) for v in form_field.iter(f"{{{camunda}}}value")
                    ]
            break
    return options


# --------------------------------------------------------------------------- who sees what


def visible_filter(session: Session, identity: auth.Identity) -> Any:
    """A filter on dossiers ``identity`` may see (the same rule as the JSON API)."""
    agencies = auth.visible_agencies(session, identity)
    if not agencies:
        return Dossier.id.is_(None)
    in_steps = select(Task.dossier_id).where(Task.agency_id.in_(agencies))
    return or_(Dossier.home_agency_id.in_(agencies), Dossier.receiving_agency_id.in_(agencies), Dossier.id.in_(in_steps))


def dossier_agencies(session: Session, dossier: Dossier) -> set[int]:
    """Agencies handling a dossier: home, receiving desk and every step's agency."""
    ids = {dossier.home_agency_id, dossier.receiving_agency_id}
    ids |= set(session.scalars(select(Task.agency_id).where(Task.dossier_id == dossier.id)))
    return {i for i in ids if i is not None}


def can_see(session: Session, identity: auth.Identity, dossier: Dossier) -> bool:
    return session.scalar(select(Dossier.id).where(Dossier.id == dossier.id, visible_filter(session, identity))) is not None


# --------------------------------------------------------------------------- inbox and dossiers


def urgency(due_at: datetime | None, now: datetime, calendar: WorkingCalendar) -> str | None:
    """``overdue`` (past due), ``soon`` (due within one working day) or ``normal``; None without a due date."""
    if due_at is None:
        return None
    if due_at < now:
        return "overdue"
    if due_at <= calendar.add_working_days(now, 1):
        return "soon"
    return "normal"


@dataclass(frozen=True)
class InboxRow:
    task_id: int
    step_id: str
    step_name: str
    state: str
    assignee: str | None
    role: str | None
    agency_name: str | None
    due_at: datetime | None
    started_at: datetime
    dossier_code: str
    applicant_name: str | None
    procedure_name: str
    urgency: str | None


def inbox_page(session: Session, username: str, which: str, page: int, per_page: int, now: datetime) -> Paged[InboxRow]:
    """``mine`` (steps the officer holds) or ``queue`` (steps offered to their roles), most urgent first."""
    page, per_page = _page(page, per_page)
    if which == "mine":
        cond = and_(Task.assignee == username, Task.state == TaskState.CLAIMED)
    else:
        grants = organisation.officer_agencies(session, username)
        if not grants:
            return Paged([], page, per_page, 0)
        cond = and_(Task.state == TaskState.READY, or_(*(and_(Task.agency_id == a, Task.role == r) for a, r in grants)))
    total = session.scalar(select(func.count()).select_from(Task).where(cond)) or 0
    rows = session.execute(
        select(Task.id, Task.step_id, Task.step_name, Task.state, Task.assignee, Task.role, Agency.name, Task.due_at,
               Task.started_at, Dossier.code, Dossier.applicant_name, Procedure.name)
        .join(Dossier, Dossier.id == Task.dossier_id)
        .join(ProcedureVersion, ProcedureVersion.id == Dossier.procedure_version_id)
        .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
        .outerjoin(Agency, Agency.id == Task.agency_id)
        .where(cond)
        .order_by(Task.due_at.is_(None), Task.due_at, Task.id)
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    calendar = services.load_calendar(session)
    items = [InboxRow(*row, urgency=urgency(row[7], now, calendar)) for row in rows]
    return Paged(items, page, per_page, total)


@dataclass(frozen=True)
class DossierRow:
    code: str
    procedure_code: str
    procedure_name: str
    applicant_name: str | None
    status: int
    received_at: datetime
    due_at: datetime | None
    overdue: bool


def dossier_list(session: Session, identity: auth.Identity, query: str, page: int, per_page: int, now: datetime,
                 status: int | None = None) -> Paged[DossierRow]:
    """Dossiers ``identity`` may see, newest first; ``query`` matches the start of the code or of the applicant's name."""
    page, per_page = _page(page, per_page)
    base = (
        select(Dossier.code, Procedure.code, Procedure.name, Dossier.applicant_name, Dossier.status, Dossier.received_at, Dossier.due_at)
        .join(ProcedureVersion, ProcedureVersion.id == Dossier.procedure_version_id)
        .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
        .where(visible_filter(session, identity))
    )
    text = " ".join((query or "").split())[:100]
    if text:
        prefix = _like_prefix(text) + "%"
        base = base.where(or_(Dossier.code.like(_escape_like(text) + "%", escape="\\"),
                              func.lower(Dossier.applicant_name).like(prefix, escape="\\")))
    if status:
        base = base.where(Dossier.status == status)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(base.order_by(Dossier.received_at.desc(), Dossier.id.desc()).offset((page - 1) * per_page).limit(per_page)).all()
    items = [DossierRow(*row, overdue=bool(row[6] and row[6] < now and row[4] in OPEN_STATUSES)) for row in rows]
    return Paged(items, page, per_page, total)


def dossier_steps(session: Session, dossier_id: int) -> Sequence[Any]:
    """Every step of a dossier (open, done, cancelled) in order, with the agency's name."""
    return session.execute(
        select(Task.id, Task.step_id, Task.step_name, Task.state, Task.assignee, Task.role, Task.started_at, Task.due_at,
               Task.completed_at, Task.completed_by, Task.result, Task.note, Task.agency_id, Agency.name.label("agency_name"))
        .outerjoin(Agency, Agency.id == Task.agency_id)
        .where(Task.dossier_id == dossier_id)
        .order_by(Task.started_at, Task.id)
    ).all()


def holders(session: Session, role: str, agency_id: int) -> Sequence[Any]:
    """Active officers holding ``role`` at ``agency_id`` (username, full name), by name."""
    return session.execute(
        select(Officer.username, Officer.full_name)
        .join(OfficerRole, OfficerRole.officer_id == Officer.id)
        .where(OfficerRole.role == role, OfficerRole.agency_id == agency_id, Officer.active.is_(True))
        .order_by(Officer.full_name)
    ).all()


def signers(session: Session, agency_ids: set[int] | None = None) -> Sequence[Any]:
    """Officers holding the ``leader`` role (who may sign an apology), with their agency."""
    query = (
        select(Officer.username, Officer.full_name, Agency.code, Agency.name)
        .join(OfficerRole, OfficerRole.officer_id == Officer.id)
        .join(Agency, Agency.id == OfficerRole.agency_id)
        .where(OfficerRole.role == "leader", Officer.active.is_(True))
        .order_by(Agency.name, Officer.full_name)
    )
    if agency_ids is not None:
        query = query.where(Agency.id.in_(agency_ids))
    return session.execute(query).all()
