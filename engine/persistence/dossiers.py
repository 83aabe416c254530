"""Statements on the hot path: a dossier, its open steps and its audit rows.

Receiving a dossier and completing a step run a handful of plain SQL
statements through SQLAlchemy Core (no unit of work), each taking the caller's
:class:`~sqlalchemy.orm.Session` and never committing (but see
:meth:`Writes.flush`). ORM objects of these tables loaded elsewhere in the same
session must be read with ``populate_existing`` afterwards.

The hottest statements skip SQLAlchemy's per-execution machinery: they are
compiled once per process and run on the driver's connection with the same
type processing (:func:`_direct`, :func:`_fetch`). A step's writes go together
(:class:`Writes`): one round trip on PostgreSQL, COMMIT included.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Connection, Engine, Integer, Row, String, bindparam, func, insert, literal_column, or_, select, update
from sqlalchemy.engine import Compiled, Dialect
from sqlalchemy.exc import DBAPIError
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
    "Writes",
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
_OWNER = _T.alias("owner")
# The dossier row alone, FOR NO KEY UPDATE: rows that only point at the dossier
# (audit events, escalations, task claims) may still be written meanwhile, so a
# step waiting here cannot deadlock with them.
_LOCK = (
    select(*_COLUMNS)
    .where(_D.c.id == select(_OWNER.c.dossier_id).where(_OWNER.c.id == bindparam("task_id")).scalar_subquery())
    .with_for_update(key_share=True)
)
# Plain comparisons, not IN: an IN list is re-rendered at every execution.
_IS_OPEN = or_(*(_T.c.state == literal_column(f"'{state}'") for state in TaskState.OPEN))
_OPEN_TASKS = select(_T).where(_T.c.dossier_id == bindparam("dossier_id"), _IS_OPEN).order_by(_T.c.id)
_SIBLING = _T.alias("sibling")
# The open steps of the dossier owning a task, by the task's id: sent right
# behind _LOCK (one round trip on PostgreSQL); it runs once the lock is held,
# with a snapshot of its own, so it sees the change that held the lock.
_OPEN_TASKS_OF_TASK = (
    select(_T)
    .where(_T.c.dossier_id == select(_SIBLING.c.dossier_id).where(_SIBLING.c.id == bindparam("task_id")).scalar_subquery(), _IS_OPEN)
    .order_by(_T.c.id)
)
_OPEN_TASKS_BY_CODE = (
    select(_T)
    .join(_D, _D.c.id == _T.c.dossier_id)
    .where(_D.c.code == bindparam("code"), _IS_OPEN)
    .order_by(_T.c.id)
)
_INSERT_DOSSIER = insert(_D).returning(_D.c.id)
_SAVE_DOSSIER = update(_D).where(_D.c.id == bindparam("b_id"), _D.c.revision == bindparam("b_revision"))
_INSERT_TASK = insert(_T).returning(_T.c.id)
_UPDATE_TASK = update(_T).where(_T.c.id == bindparam("b_id"))
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
    """The dossier owning ``task_id``, locked, with its open steps.

    Two statements on purpose: on PostgreSQL a statement that waits for the
    dossier's lock re-reads only the locked row, so open steps read in the same
    statement could be those of before the change that held the lock. The
    second runs after the first has the lock, in a snapshot of its own; both
    go in one round trip (pipeline mode).
    """
    connection = session.connection()
    params = {"task_id": task_id}
    (_k1, locked), (_k2, rows) = _fetch_all(connection, [(_LOCK, params), (_OPEN_TASKS_OF_TASK, params)])
    if not locked:
        return None, []
    record = DossierRecord(**dict(zip(_RECORD_FIELDS, locked[0])))
    return record, [OpenTask._make(row) for row in rows]


_RECORD_FIELDS = [c.name for c in _COLUMNS]
#: An open step as :func:`lock_dossier_with_open_tasks` gives it (the columns of ``tasks``).
OpenTask = namedtuple("OpenTask", [c.name for c in _T.columns])  # type: ignore[misc]


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
    """Append audit rows (one statement for all of them); see :meth:`Writes.add_audit`."""
    writes = Writes()
    writes.add_audit(events)
    writes.flush(session)


# --------------------------------------------------------------------------- batched writes

#: The newest task row of a dossier for a Spiff task id: how a step's audit rows
#: and hand-overs name the task rows it inserts, without waiting for their ids.
_NEW_TASK_ID = (
    select(_T.c.id)
    .where(_T.c.dossier_id == bindparam("b_dossier", type_=Integer), _T.c.spiff_task_id == bindparam("b_spiff", type_=String))
    .order_by(_T.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
_INSERT_TASK_ROW = insert(_T)
_INSERT_HANDOVER_TO_NEW = insert(_H).values(to_task_id=_NEW_TASK_ID)
_INSERT_AUDIT_ROWS = insert(_A).values(task_id=func.coalesce(bindparam("b_task_id", type_=Integer), _NEW_TASK_ID))
#: The dossier update that fails (division by zero) when the row had changed
#: meanwhile, so that a COMMIT sent behind it in the same round trip does not
#: happen (PostgreSQL).
_SAVED = (
    update(_D)
    .where(_D.c.id == bindparam("b_id"), _D.c.revision == bindparam("b_revision"))
    .values({name: bindparam(f"v_{name}", type_=_D.c[name].type) for name in (*_MUTABLE, "updated_at", "revision")})
    .returning(_D.c.id)
    .cte("saved")
)
_SAVE_DOSSIER_OR_FAIL = select(literal_column("1") / select(func.count()).select_from(_SAVED).scalar_subquery())
_CHANGED_MEANWHILE = "22012"  # SQLSTATE division_by_zero


class Writes:
    """The writes of one step, sent to the database together by :meth:`flush`.

    On PostgreSQL (psycopg) they travel in one round trip (pipeline mode); on
    other backends they run one after the other. New task rows are referred to
    by their Spiff task id, so no statement waits for a generated key. Nothing
    is written before :meth:`flush`, which runs in the caller's transaction and
    commits it only when asked to.
    """

    def __init__(self) -> None:
        self._ops: list[tuple[Any, list[dict[str, Any]]]] = []
        self._save: tuple[int, DossierRecord] | None = None

    def update_task(self, task_id: int, values: Mapping[str, Any]) -> None:
        self._ops.append((_UPDATE_TASK, [{"b_id": task_id, **values}]))

    def insert_task(self, values: Mapping[str, Any]) -> None:
        """A new task row; refer to it later by ``values["spiff_task_id"]``."""
        self._ops.append((_INSERT_TASK_ROW, [dict(values)]))

    def add_handover(self, values: Mapping[str, Any], to_spiff_task_id: str) -> None:
        """A hand-over to the task row inserted (in this batch) for ``to_spiff_task_id``."""
        params = {k: v for k, v in values.items() if k != "to_task_id"}
        params.update(b_dossier=values["dossier_id"], b_spiff=to_spiff_task_id)
        self._ops.append((_INSERT_HANDOVER_TO_NEW, [params]))

    def save_dossier(self, record: DossierRecord, updated_at: datetime) -> None:
        """Write ``record`` back; :meth:`flush` reports whether nobody changed it meanwhile."""
        params = {
            "b_id": record.id,
            "b_revision": record.revision,
            **{name: getattr(record, name) for name in _MUTABLE},
            "updated_at": updated_at,
            "revision": record.revision + 1,
        }
        self._save = (len(self._ops), record)
        self._ops.append((_SAVE_DOSSIER, [params]))

    def add_audit(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Audit rows, in order (one statement). A row may name a task row inserted
        in this batch by ``new_task`` (its Spiff task id) instead of ``task_id``."""
        params = []
        for row in rows:
            values = {k: v for k, v in row.items() if k not in ("task_id", "new_task")}
            values.update(b_task_id=row.get("task_id"), b_dossier=row.get("dossier_id"), b_spiff=row.get("new_task"))
            params.append(values)
        if params:
            self._ops.append((_INSERT_AUDIT_ROWS, params))

    def flush(self, session: Session, commit: bool = False) -> bool:
        """Run the writes; False when the saved dossier had changed meanwhile (roll back then).

        With ``commit`` the transaction may be committed in the same round trip
        (PostgreSQL); the caller still calls ``session.commit()``, which then
        has nothing left to do on the database. Pending ORM changes of the
        session are flushed first, so they commit together with these writes.
        The use cases do not ask for it: a COMMIT already sent is carried out
        by the server even when the client dies while a statement before it
        waits for a lock, and a step must not count when its process is killed.
        """
        ops, self._ops = self._ops, []
        save, self._save = self._save, None
        connection = session.connection()
        pipelined = _pipeline_supported(connection.dialect)
        # Only a session that owns its whole transaction may have it committed
        # here (not inside a savepoint, nor on a connection lent by a caller).
        commit = commit and pipelined and isinstance(session.get_bind(), Engine) and not session.in_nested_transaction()
        if commit and (session.new or session.dirty or session.deleted):
            session.flush()
        if ops:
            if commit and save is not None:
                [params] = ops[save[0]][1]
                renamed = {k if k.startswith("b_") else f"v_{k}": v for k, v in params.items()}
                ops[save[0]] = (_SAVE_DOSSIER_OR_FAIL, [renamed])
            try:
                counts = _direct(connection, ops, commit=commit)
            except DBAPIError as err:
                if commit and save is not None and getattr(err.orig, "sqlstate", None) == _CHANGED_MEANWHILE:
                    return False
                raise
            if commit and save is not None:
                counts[save[0]] = 1  # the statement would have failed otherwise
        else:
            counts = []
        if save is not None:
            position, record = save
            if counts[position] != 1:
                return False
            record.revision += 1
        return True


_COMPILED: dict[tuple[int, type, Any, tuple[str, ...]], Compiled] = {}


def _pipeline_supported(dialect: Dialect) -> bool:
    """Whether the driver can send several statements in one round trip (psycopg 3 on libpq ≥ 14)."""
    return dialect.driver == "psycopg" and bool(dialect.loaded_dbapi.Pipeline.is_supported())


def _compiled(stmt: Any, dialect: Dialect, keys: tuple[str, ...]) -> Compiled:
    """``stmt`` compiled for ``dialect`` and these parameter names, once per process."""
    key = (id(stmt), type(dialect), dialect.server_version_info, keys)
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        if (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.escaped_bind_names
        ):
            raise RuntimeError(f"Statement needs SQLAlchemy's full execution path: {compiled.string}")
        _COMPILED[key] = compiled
    return compiled


def _driver_parameters(compiled: Compiled, rows: list[dict[str, Any]]) -> list[Any]:
    """``rows`` as the driver takes them, after SQLAlchemy's type processing (dates, JSON, …)."""
    processors = compiled._bind_processors
    result: list[Any] = []
    for row in rows:
        values = compiled.construct_params(row)
        processed = {k: processors[k](v) if k in processors else v for k, v in values.items()}
        result.append([processed[k] for k in compiled.positiontup or ()] if compiled.positional else processed)
    return result


def _direct(connection: Connection, ops: list[tuple[Any, list[dict[str, Any]]]], commit: bool = False) -> list[int]:
    """Run the statements on the driver's connection, in the open transaction; their row counts.

    Statements are compiled once and their parameters go through the same
    SQLAlchemy type processing as a normal execution, minus its per-statement
    overhead. With psycopg every statement (and COMMIT with ``commit``) goes
    in one round trip (pipeline mode). Database errors come back as SQLAlchemy
    exceptions.
    """
    dialect = connection.dialect
    raw = connection.connection.driver_connection
    pipelined = _pipeline_supported(dialect)
    cursors: list[Any] = []
    statement, parameters = "", None

    def send() -> None:
        nonlocal statement, parameters
        for stmt, rows in ops:
            compiled = _compiled(stmt, dialect, tuple(sorted(rows[0])))
            statement, parameters = compiled.string, _driver_parameters(compiled, rows)
            cursor = raw.cursor()
            cursors.append(cursor)
            if len(parameters) == 1:
                cursor.execute(statement, parameters[0])
            else:
                cursor.executemany(statement, parameters)

    try:
        if pipelined:
            with raw.pipeline():
                send()
                if commit:
                    # Queued like a statement: an earlier failure then surfaces
                    # when the pipeline ends, and the server skips the COMMIT.
                    cursor = raw.cursor()
                    cursors.append(cursor)
                    cursor.execute("COMMIT")
                statement, parameters = "(pipeline)", None
        else:
            send()
        return [cursor.rowcount for cursor in cursors]
    except dialect.loaded_dbapi.Error as err:
        raise DBAPIError.instance(statement, parameters, err, dialect.loaded_dbapi.Error, dialect=dialect) from err
    finally:
        for cursor in cursors:
            cursor.close()


_RESULT_PROCESSORS: dict[int, list[Any]] = {}


def _fetch(connection: Connection, stmt: Any, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a SELECT on the driver's connection: its column keys and rows (see :func:`_fetch_all`)."""
    return _fetch_all(connection, [(stmt, params)])[0]


def _fetch_all(connection: Connection, queries: list[tuple[Any, dict[str, Any]]]) -> list[tuple[list[str], list[tuple[Any, ...]]]]:
    """Run SELECTs in order on the driver's connection: each one's column keys
    and rows, values converted as SQLAlchemy would (aware datetimes, JSON, …),
    without the per-execution overhead of a SQLAlchemy result. With psycopg
    they all go in one round trip (pipeline mode); each still runs after the
    one before it has finished."""
    dialect = connection.dialect
    raw = connection.connection.driver_connection
    prepared = []
    for stmt, params in queries:
        compiled = _compiled(stmt, dialect, tuple(sorted(params)))
        [values] = _driver_parameters(compiled, [params])
        prepared.append((compiled, values))
    cursors = [raw.cursor() for _ in prepared]
    statement, values = "", None
    try:
        if len(prepared) > 1 and _pipeline_supported(dialect):
            with raw.pipeline():
                for cursor, (compiled, values) in zip(cursors, prepared):
                    statement = compiled.string
                    cursor.execute(statement, values)
            statement, values = "(pipeline)", None
        else:
            for cursor, (compiled, values) in zip(cursors, prepared):
                statement = compiled.string
                cursor.execute(statement, values)
        fetched = [(cursor.fetchall(), cursor.description) for cursor in cursors]
    except dialect.loaded_dbapi.Error as err:
        raise DBAPIError.instance(statement, values, err, dialect.loaded_dbapi.Error, dialect=dialect) from err
    finally:
        for cursor in cursors:
            cursor.close()
    return [_converted(dialect, compiled, rows, description) for (compiled, _v), (rows, description) in zip(prepared, fetched)]


def _converted(dialect: Dialect, compiled: Compiled, rows: list[Any], description: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = compiled._result_columns
    processors = _RESULT_PROCESSORS.get(id(compiled))
    if processors is None:
        processors = [entry.type._cached_result_processor(dialect, desc[1]) for entry, desc in zip(columns, description)]
        _RESULT_PROCESSORS[id(compiled)] = processors
    keys = [entry.keyname for entry in columns]
    if any(processors):
        pairs = list(enumerate(processors))
        rows = [tuple(p(row[i]) if p else row[i] for i, p in pairs) for row in rows]
    return keys, rows
