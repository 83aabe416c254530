"""Statements on the hot path: a dossier, its open steps and its audit rows.

Receiving a dossier and completing a step run a handful of plain SQL
statements through SQLAlchemy Core (no unit of work), each taking the caller's
:class:`~sqlalchemy.orm.Session` and never committing. ORM objects of these
tables loaded elsewhere in the same session must be read with
``populate_existing`` afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.orm import Session

from .models import (
    AuditEvent,
    Dossier,
    DossierCounter,
    Handover,
    Procedure,
    ProcedureVersion,
    Task,
    TaskState,
)

__all__ = [
    "DossierRecord",
    "add_handover",
    "receive_handover",
    "add_audit",
    "find_dossier",
    "find_version",
    "next_number",
    "insert_dossier",
    "insert_task",
    "lock_dossier_of_task",
    "lock_dossier_with_open_tasks",
    "open_task_rows",
    "open_task_rows_by_code",
    "save_dossier",
    "update_task",
]

_D = Dossier.__table__
_T = Task.__table__
_A = AuditEvent.__table__
_COLUMNS = (
    _D.c.id,
    _D.c.code,
    _D.c.procedure_version_id,
    _D.c.agency_code,
    _D.c.status,
    _D.c.sub_status,
    _D.c.data,
    _D.c.workflow_state,
    _D.c.received_at,
    _D.c.due_at,
    _D.c.finished_at,
    _D.c.revision,
    _D.c.home_agency_id,
    _D.c.receiving_agency_id,
    _D.c.applicant_name,
    _D.c.applicant_phone,
    _D.c.applicant_email,
    _D.c.channel,
    _D.c.paused_at,
    _D.c.pause_reason,
    _D.c.supplement_requests,
    _D.c.new_appointment_at,
    _D.c.returned_at,
    _D.c.return_channel,
)
#: Columns a use case may change (written back by :func:`save_dossier`).
_MUTABLE = (
    "status",
    "sub_status",
    "data",
    "workflow_state",
    "due_at",
    "finished_at",
    "paused_at",
    "pause_reason",
    "supplement_requests",
    "new_appointment_at",
    "returned_at",
    "return_channel",
)


@dataclass
class DossierRecord:
    """A dossier row as the use cases change it."""

    id: int
    code: str
    procedure_version_id: int
    agency_code: str
    status: int
    sub_status: str | None
    data: dict[str, Any]
    workflow_state: str
    received_at: datetime
    due_at: datetime | None
    finished_at: datetime | None
    revision: int
    home_agency_id: int | None = None
    receiving_agency_id: int | None = None
    applicant_name: str | None = None
    applicant_phone: str | None = None
    applicant_email: str | None = None
    channel: str = "in_person"
    paused_at: datetime | None = None
    pause_reason: str | None = None
    supplement_requests: int = 0
    new_appointment_at: datetime | None = None
    returned_at: datetime | None = None
    return_channel: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> "DossierRecord":
        return cls(**row._mapping)


# Statements are built once: building one costs more than running it.
_FIND = select(*_COLUMNS).where(_D.c.code == bindparam("code"))
_LOCK = (
    select(*_COLUMNS)
    .join(_T, _T.c.dossier_id == _D.c.id)
    .where(_T.c.id == bindparam("task_id"))
    .with_for_update(of=_D)
)
_OWNER = _T.alias("owner")
_LOCK_WITH_OPEN = (
    select(*(c.label(f"d_{c.name}") for c in _COLUMNS), _T)
    .join(_T, _T.c.dossier_id == _D.c.id)
    .where(
        _D.c.id == select(_OWNER.c.dossier_id).where(_OWNER.c.id == bindparam("task_id")).scalar_subquery(),
        _T.c.state.in_(TaskState.OPEN),
    )
    .order_by(_T.c.id)
    .with_for_update(of=_D)
)
_OPEN_TASKS = select(_T).where(_T.c.dossier_id == bindparam("dossier_id"), _T.c.state.in_(TaskState.OPEN)).order_by(_T.c.id)
_OPEN_TASKS_BY_CODE = (
    select(_T)
    .join(_D, _D.c.id == _T.c.dossier_id)
    .where(_D.c.code == bindparam("code"), _T.c.state.in_(TaskState.OPEN))
    .order_by(_T.c.id)
)
_INSERT_DOSSIER = insert(_D).returning(_D.c.id)
_SAVE_DOSSIER = update(_D).where(_D.c.id == bindparam("b_id"), _D.c.revision == bindparam("b_revision"))
_INSERT_TASK = insert(_T).returning(_T.c.id)
_UPDATE_TASK = update(_T).where(_T.c.id == bindparam("b_id"))
_INSERT_AUDIT = insert(_A)
_C = DossierCounter.__table__
_P = Procedure.__table__
_V = ProcedureVersion.__table__
_VERSION = (
    select(_V.c.id, _V.c.version)
    .join(_P, _P.c.id == _V.c.procedure_id)
    .where(_P.c.code == bindparam("code"), _V.c.version == bindparam("version"))
)
_LATEST_VERSION = (
    select(_V.c.id, _V.c.version)
    .join(_P, _P.c.id == _V.c.procedure_id)
    .where(_P.c.code == bindparam("code"), _V.c.version == _P.c.latest_version)
)


def find_version(session: Session, code: str, version: int | None) -> tuple[int, int] | None:
    """``(version id, version number)`` of procedure ``code``; the latest when ``version`` is None."""
    if version is None:
        row = session.connection().execute(_LATEST_VERSION, {"code": code}).first()
    else:
        row = session.connection().execute(_VERSION, {"code": code, "version": version}).first()
    return (row.id, row.version) if row else None


def next_number(session: Session, agency_code: str, day: Any) -> int:
    """Take the next dossier number of an agency for a day, in the caller's transaction.

    One atomic upsert: concurrent receipts queue on the counter row, and a
    rolled-back receipt gives its number back (codes stay gap-free).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    stmt = upsert(_C).values(agency_code=agency_code, day=day, last_number=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_C.c.agency_code, _C.c.day], set_={"last_number": _C.c.last_number + 1}
    ).returning(_C.c.last_number)
    return int(session.connection().execute(stmt).scalar_one())


def find_dossier(session: Session, code: str) -> DossierRecord | None:
    row = session.connection().execute(_FIND, {"code": code}).first()
    return DossierRecord.from_row(row) if row else None


def lock_dossier_of_task(session: Session, task_id: int) -> DossierRecord | None:
    """The dossier that owns ``task_id``, locked until the transaction ends (PostgreSQL)."""
    row = session.connection().execute(_LOCK, {"task_id": task_id}).first()
    return DossierRecord.from_row(row) if row else None


def lock_dossier_with_open_tasks(session: Session, task_id: int) -> tuple[DossierRecord | None, list[Any]]:
    """The dossier owning ``task_id``, locked, with its open steps — in one round trip.

    When the dossier has no open step the record is looked up on its own.
    """
    rows = session.connection().execute(_LOCK_WITH_OPEN, {"task_id": task_id}).all()
    if not rows:
        return lock_dossier_of_task(session, task_id), []
    first = rows[0]._mapping
    record = DossierRecord(**{c.name: first[f"d_{c.name}"] for c in _COLUMNS})
    return record, list(rows)  # task columns keep their names; dossier ones are prefixed d_


def open_task_rows(session: Session, dossier_id: int) -> Sequence[Row[Any]]:
    """Open steps of a dossier, oldest first (rows with the columns of ``tasks``)."""
    return session.connection().execute(_OPEN_TASKS, {"dossier_id": dossier_id}).all()


def open_task_rows_by_code(session: Session, code: str) -> Sequence[Row[Any]]:
    return session.connection().execute(_OPEN_TASKS_BY_CODE, {"code": code}).all()


def insert_dossier(session: Session, values: Mapping[str, Any]) -> int:
    return session.connection().execute(_INSERT_DOSSIER, {"revision": 1, **values}).scalar_one()


def save_dossier(session: Session, record: DossierRecord, updated_at: datetime) -> bool:
    """Write ``record`` back if nobody changed it meanwhile; False when they did."""
    result = session.connection().execute(
        _SAVE_DOSSIER,
        {
            "b_id": record.id,
            "b_revision": record.revision,
            **{name: getattr(record, name) for name in _MUTABLE},
            "updated_at": updated_at,
            "revision": record.revision + 1,
        },
    )
    if result.rowcount != 1:
        return False
    record.revision += 1
    return True


def insert_task(session: Session, values: Mapping[str, Any]) -> int:
    return session.connection().execute(_INSERT_TASK, dict(values)).scalar_one()


def update_task(session: Session, task_id: int, values: Mapping[str, Any]) -> None:
    session.connection().execute(_UPDATE_TASK, {"b_id": task_id, **values})


_H = Handover.__table__
_INSERT_HANDOVER = insert(_H)
_RECEIVE_HANDOVER = (
    update(_H)
    .where(_H.c.to_task_id == bindparam("b_task_id"), _H.c.received_at.is_(None))
    .values(received_by=bindparam("received_by"), received_at=bindparam("received_at"))
)


def add_handover(session: Session, values: Mapping[str, Any]) -> None:
    session.connection().execute(_INSERT_HANDOVER, dict(values))


def receive_handover(session: Session, task_id: int, username: str, at: datetime) -> None:
    session.connection().execute(_RECEIVE_HANDOVER, {"b_task_id": task_id, "received_by": username, "received_at": at})


def add_audit(session: Session, events: Iterable[Mapping[str, Any]]) -> None:
    """Append audit rows (one statement for all of them)."""
    rows = [dict(e) for e in events]
    if rows:
        session.connection().execute(_INSERT_AUDIT, rows)
