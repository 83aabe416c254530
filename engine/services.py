"""Use cases of the engine: deploy procedures, start dossiers, complete steps.

Every function takes an SQLAlchemy :class:`~sqlalchemy.orm.Session` and the
current instant ``now`` (the core never reads the clock), commits its own unit
of work, and raises only :mod:`engine.errors` exceptions for things a caller can
act on. The web layers and the CLI are thin wrappers around these.

Example::

    with sessions() as session:
        result = deploy(session, {"khai-sinh.bpmn": data}, actor="designer", now=now)
        dossier = start_dossier(session, result.code, {"applicant": "Lê Thị B"}, actor="desk", now=now)
        task = open_tasks(session, dossier.code)[0]
        complete_task(session, task.id, {"approved": True}, actor="officer", now=now)
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from time import monotonic as _monotonic
from typing import Any, Mapping, Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import fees, notify, organisation, results, workflow_cache
from .core import bpmn, runtime
from .core.assignment import AgencyTree, AssignmentError
from .core.calendar import VN_TZ, WorkingCalendar
from .core.durations import Duration
from .errors import Conflict, DeploymentRejected, Forbidden, InvalidRequest, NotFound
from .persistence import dossiers
from .persistence.db import unit_of_work
from .persistence.dossiers import DossierRecord
from .persistence.models import (
    AuditEvent,
    CalendarOverride,
    Dossier,
    Procedure,
    ProcedureFile,
    ProcedureVersion,
    Task,
    TaskState,
)

__all__ = [
    "DeployResult",
    "DossierStatus",
    "add_calendar_override",
    "complete_task",
    "deploy",
    "dossier_history",
    "get_dossier",
    "inbox",
    "load_calendar",
    "open_tasks",
    "start_dossier",
    "validate",
]


class DossierStatus:
    """National portal statuses (TrangThaiHoSo) every dossier maps to."""

    REGISTERED = 1  # mới đăng ký
    RECEIVED = 2  # được tiếp nhận
    REFUSED = 3  # không được tiếp nhận
    PROCESSING = 4  # đang xử lý
    SUPPLEMENT_REQUESTED = 5  # yêu cầu bổ sung
    FINANCIAL_OBLIGATION = 6  # yêu cầu thực hiện nghĩa vụ tài chính
    WITHDRAWN = 7  # công dân yêu cầu rút hồ sơ
    STOPPED = 8  # dừng xử lý
    PROCESSED = 9  # đã xử lý xong
    RETURNED = 10  # đã trả kết quả

    LABELS = {
        1: "Mới đăng ký",
        2: "Được tiếp nhận",
        3: "Không được tiếp nhận",
        4: "Đang xử lý",
        5: "Yêu cầu bổ sung",
        6: "Yêu cầu thực hiện nghĩa vụ tài chính",
        7: "Công dân yêu cầu rút hồ sơ",
        8: "Dừng xử lý",
        9: "Đã xử lý xong",
        10: "Đã trả kết quả",
    }


@dataclass(frozen=True)
class DeployResult:
    """Outcome of a deployment: which version, and whether it is new."""

    code: str
    name: str
    version: int
    created: bool
    warnings: list[bpmn.Problem] = field(default_factory=list)


# --------------------------------------------------------------------------- catalog


def validate(files: Mapping[str, bytes]) -> list[bpmn.Problem]:
    """Problems of ``files`` as one procedure (empty when it would deploy)."""
    _, problems = bpmn.analyse(files)
    return problems


@unit_of_work
def deploy(session: Session, files: Mapping[str, bytes], actor: str, now: datetime) -> DeployResult:
    """Deploy ``files`` as a version of the procedure they declare.

    Identical content deploys once (the same version comes back, ``created`` is
    False); changed content becomes the next version. Raises
    :class:`DeploymentRejected` with the problem list.
    """
    definition, problems = bpmn.analyse(files)
    if definition is None:
        raise DeploymentRejected(problems)
    procedure = session.scalar(select(Procedure).where(Procedure.code == definition.code))
    if procedure is not None:
        existing = session.scalar(
            select(ProcedureVersion).where(
                ProcedureVersion.procedure_id == procedure.id,
                ProcedureVersion.content_hash == definition.content_hash,
            )
        )
        if existing is not None:
            return DeployResult(procedure.code, procedure.name, existing.version, False, definition.warnings)
    else:
        procedure = Procedure(code=definition.code, name=definition.name, latest_version=0, created_at=now)
        session.add(procedure)
    procedure.name = definition.name
    procedure.field = definition.field
    procedure.level = definition.level
    procedure.latest_version += 1
    version = ProcedureVersion(
        procedure=procedure,
        version=procedure.latest_version,
        content_hash=definition.content_hash,
        process_id=definition.process_id,
        meta=definition.metadata(),
        spec_json=definition.spec.to_json(),
        deployed_at=now,
        deployed_by=actor,
    )
    version.files = [ProcedureFile(filename=name, content=content) for name, content in files.items()]
    session.add(version)
    session.flush()
    _remember_version(version.id, _VersionRuntime(definition.spec, version.meta, version.version))
    session.add(
        AuditEvent(
            at=now,
            actor=actor,
            action="procedure.deploy",
            subject=f"{procedure.code}@{version.version}",
            to_state=f"version {version.version}",
            details={"files": sorted(files), "content_hash": definition.content_hash},
        )
    )
    try:
        session.commit()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(
            f"Procedure {definition.code} was deployed by someone else at the same moment; deploy again."
        ) from err
    return DeployResult(procedure.code, procedure.name, version.version, True, definition.warnings)


def _checked_code(code: str, what: str) -> str:
    """Refuse codes no row can have (NUL, overlong) before they reach the database."""
    if not isinstance(code, str) or not code or len(code) > 64 or "\x00" in code:
        raise NotFound(f"No {what} with code {code!r:.80}.")
    return code


def _checked_id(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 < value < 2**31:  # ids are 32-bit integers
        raise NotFound(f"No {what} {value}.")
    return value


def get_procedure(session: Session, code: str) -> Procedure:
    _checked_code(code, "procedure")
    procedure = session.scalar(select(Procedure).where(Procedure.code == code))
    if procedure is None:
        raise NotFound(f"No procedure with code {code}.")
    return procedure


def get_version(session: Session, code: str, version: int | None = None) -> ProcedureVersion:
    """A version of procedure ``code``; the latest when ``version`` is None."""
    procedure = get_procedure(session, code)
    number = version or procedure.latest_version
    found = session.scalar(
        select(ProcedureVersion).where(
            ProcedureVersion.procedure_id == procedure.id, ProcedureVersion.version == number
        )
    )
    if found is None:
        raise NotFound(f"Procedure {code} has no version {number}.")
    return found


@dataclass(frozen=True)
class _VersionRuntime:
    """What running a dossier needs from its version: the parsed spec and metadata."""

    spec: runtime.ProcedureSpec
    meta: Mapping[str, Any]
    version: int


# Versions are immutable, and restoring a spec costs far more than a step, so
# every process keeps the recent ones.
_VERSIONS: "OrderedDict[int, _VersionRuntime]" = OrderedDict()
_VERSIONS_SIZE = 256
_VERSIONS_LOCK = threading.Lock()


def _remember_version(version_id: int, item: _VersionRuntime) -> None:
    with _VERSIONS_LOCK:
        _VERSIONS[version_id] = item
        _VERSIONS.move_to_end(version_id)
        while len(_VERSIONS) > _VERSIONS_SIZE:
            _VERSIONS.popitem(last=False)


def _version_runtime(session: Session, version_id: int) -> _VersionRuntime:
    with _VERSIONS_LOCK:
        item = _VERSIONS.get(version_id)
        if item is not None:
            _VERSIONS.move_to_end(version_id)
            return item
    row = session.execute(
        select(ProcedureVersion.spec_json, ProcedureVersion.meta, ProcedureVersion.version).where(ProcedureVersion.id == version_id)
    ).first()
    if row is None:
        raise NotFound(f"Procedure version {version_id} does not exist.")
    item = _VersionRuntime(runtime.ProcedureSpec.from_json(row.spec_json), row.meta, row.version)
    _remember_version(version_id, item)
    return item


@dataclass(frozen=True)
class VersionSummary:
    """What a dossier shows of the procedure version it runs on."""

    code: str
    name: str
    version: int


def version_summary(session: Session, version_id: int) -> VersionSummary:
    """Code, name and number of a procedure version (as deployed; read from the process's cache)."""
    item = _version_runtime(session, version_id)
    return VersionSummary(item.meta["code"], item.meta["name"], item.version)


# --------------------------------------------------------------------------- calendar


#: How long a process trusts its copy of the calendar overrides, in seconds.
CALENDAR_TTL = 30.0
_calendar_seen: dict[str, tuple[float, WorkingCalendar]] = {}


def load_calendar(session: Session, fresh: bool = False) -> WorkingCalendar:
    """The working calendar with the administrators' overrides.

    Overrides change a few times a year, so a process re-reads them at most
    every :data:`CALENDAR_TTL` seconds (and at once after changing them itself).
    """
    database = str(session.get_bind().url)
    clock = _monotonic()
    seen = _calendar_seen.get(database)
    if not fresh and seen is not None and clock - seen[0] < CALENDAR_TTL:
        return seen[1]
    rows = session.execute(select(CalendarOverride.day, CalendarOverride.kind)).all()
    calendar = _calendar(
        frozenset(day for day, kind in rows if kind == "day_off"),
        frozenset(day for day, kind in rows if kind == "working_day"),
    )
    _calendar_seen[database] = (clock, calendar)
    return calendar


@lru_cache(maxsize=16)
def _calendar(days_off: frozenset[date], working_days: frozenset[date]) -> WorkingCalendar:
    # A calendar builds its tables of working time lazily; sharing one per set
    # of overrides keeps them warm across requests.
    return WorkingCalendar(extra_days_off=days_off, extra_working_days=working_days)


@unit_of_work
def add_calendar_override(session: Session, day: Any, kind: str, note: str | None, actor: str, now: datetime) -> None:
    """Declare ``day`` an extra day off (``day_off``) or working day (``working_day``)."""
    if kind not in ("day_off", "working_day"):
        raise InvalidRequest(f"Kind must be 'day_off' or 'working_day', not '{kind}'.")
    row = session.get(CalendarOverride, day)
    before = row.kind if row else None
    if row is None:
        row = CalendarOverride(day=day, kind=kind, note=note, created_by=actor, created_at=now)
        session.add(row)
    else:
        row.kind, row.note = kind, note
    session.add(
        AuditEvent(at=now, actor=actor, action="calendar.override", subject=day.isoformat(), from_state=before, to_state=kind, details={"note": note})
    )
    session.commit()
    load_calendar(session, fresh=True)


def due_after(calendar: WorkingCalendar, start: datetime, duration: Duration, cutoff: str | None = None) -> datetime:
    """When ``duration`` (a deadline or allotment) that starts at ``start`` falls due."""
    if duration.unit == "working_days":
        return calendar.add_working_days(start, float(duration.amount))
    if duration.unit == "working_hours":
        return calendar.add_working_hours(start, float(duration.amount))
    if duration.unit == "calendar_days":
        return calendar.add_calendar_days(start, int(duration.amount))
    hours, minutes = (int(p) for p in (cutoff or "15:00").split(":"))
    return calendar.due_same_day(start, time(hours, minutes))


def _deadline(meta: Mapping[str, Any], channel: str | None) -> Duration | None:
    """The procedure's legal deadline for a dossier that came by ``channel`` (online may have its own)."""
    if channel == "online" and meta.get("deadline_online_amount"):
        return _duration(meta.get("deadline_online_amount"), meta.get("deadline_online_unit"))
    return _duration(meta.get("deadline_amount"), meta.get("deadline_unit"))


def _step_allotment(step: Mapping[str, Any], channel: str | None) -> Duration | None:
    """A step's allotment for a dossier that came by ``channel`` (online may have its own)."""
    if channel == "online" and step.get("allotment_online_amount"):
        return _duration(step.get("allotment_online_amount"), step.get("allotment_online_unit"))
    return _duration(step.get("allotment_amount"), step.get("allotment_unit"))


def _duration(amount: str | None, unit: str | None) -> Duration | None:
    if not amount or not unit:
        return None
    return Duration(Decimal(amount), unit)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dossiers


def _next_dossier_code(session: Session, agency_code: str, now: datetime) -> str:
    """``<agency>-<yyMMdd>-<NNNN>``, gap-free per agency and day.

    The counter row is updated in the dossier's own transaction: a rollback
    gives the number back, and concurrent receipts queue on the row lock.
    """
    day = now.astimezone(VN_TZ).date()
    number = dossiers.next_number(session, agency_code, day)
    return f"{agency_code}-{day:%y%m%d}-{number:04d}"


@unit_of_work
def start_dossier(
    session: Session,
    procedure_code: str,
    data: Mapping[str, Any],
    actor: str,
    now: datetime,
    agency_code: str = "000.00.00.H00",
    version: int | None = None,
    home_agency_code: str | None = None,
    applicant: Mapping[str, str | None] | None = None,
    channel: str = "in_person",
) -> DossierRecord:
    """Receive a dossier for ``procedure_code`` and run it to its first human step.

    ``agency_code`` is the receiving desk (its code prefixes the dossier code);
    ``home_agency_code`` the agency the dossier belongs to — any desk of the
    province may receive for any other (phi địa giới hành chính). Lanes resolve
    from the home agency. ``applicant`` carries ``name``, ``phone``, ``email``.
    """
    if not isinstance(data, Mapping):
        raise InvalidRequest("Dossier data must be an object of field names and values.")
    if channel not in CHANNELS:
        raise InvalidRequest(f"Channel must be one of {', '.join(CHANNELS)}, not '{channel}'.")
    tree = organisation.agency_tree(session)
    receiving = tree.by_code.get(agency_code)
    home = tree.by_code.get(home_agency_code) if home_agency_code else receiving
    if home_agency_code and home is None:
        raise NotFound(f"No agency with code {home_agency_code}.")
    applicant = applicant or {}
    found = dossiers.find_version(session, procedure_code, version)
    if found is None:
        get_version(session, procedure_code, version)  # raises NotFound with the precise reason
        raise NotFound(f"No procedure with code {procedure_code}.")
    version_id, _number = found
    known = _version_runtime(session, version_id)
    try:
        wf = runtime.start_workflow(known.spec, copy.deepcopy(dict(data)))
    except runtime.EngineError as err:
        raise InvalidRequest(str(err)) from err
    except Exception as err:  # a condition failing on the given data, etc.
        raise InvalidRequest(f"The procedure could not start with this data: {_reason(err)}") from err
    calendar = load_calendar(session)
    meta = known.meta
    deadline = _deadline(meta, channel)
    code = _next_dossier_code(session, agency_code, now)
    values = {
        "code": code,
        "procedure_version_id": version_id,
        "agency_code": agency_code,
        "status": DossierStatus.RECEIVED,
        "sub_status": "received",
        "data": dict(data),
        "workflow_state": "",
        "received_at": now,
        "due_at": due_after(calendar, now, deadline, meta.get("cutoff")) if deadline else None,
        "finished_at": None,
        "updated_at": now,
        "home_agency_id": home.id if home else None,
        "receiving_agency_id": receiving.id if receiving else None,
        "applicant_name": applicant.get("name"),
        "applicant_phone": applicant.get("phone"),
        "applicant_email": applicant.get("email"),
        "channel": channel,
    }
    dossier_id = dossiers.insert_dossier(session, values)
    record = DossierRecord(id=dossier_id, revision=1, **{k: v for k, v in values.items() if k != "updated_at"})
    audit = _Audit(actor, now, record.id)
    audit.add("dossier.receive", None, None, str(DossierStatus.RECEIVED), code, {"clock_start": calendar.next_working_instant(now).isoformat()})
    if record.due_at is not None:
        notify_applicant(
            session, record, "dossier.received", f"Hồ sơ {code} đã được tiếp nhận",
            f"Hồ sơ {code} đã được tiếp nhận; hẹn trả kết quả {record.due_at.astimezone(VN_TZ):%H:%M ngày %d/%m/%Y}.", now,
        )
    fees.on_receipt(session, record, meta, now, audit=audit)  # fees due; may hold the dossier until they are paid
    _sync(session, record, wf, meta, calendar, audit, [], completed=None, tree=tree)
    session.commit()
    workflow_cache.keep(_cache_key(session, record.id), record.workflow_state, wf)
    return record


def _cache_key(session: Session, dossier_id: int) -> tuple[str, int]:
    """Key of a dossier's live workflow in :mod:`engine.workflow_cache`."""
    return (str(session.get_bind().url), dossier_id)


def _live_workflow(session: Session, known: "_VersionRuntime", record: DossierRecord) -> Any:
    """The dossier's workflow as stored in ``record``: kept from the last step, or restored."""
    wf = workflow_cache.take(_cache_key(session, record.id), record.workflow_state)
    return wf if wf is not None else runtime.load_state(known.spec, record.workflow_state)


def get_dossier(session: Session, code: str) -> Dossier:
    """The dossier ``code`` as stored now."""
    _checked_code(code, "dossier")
    dossier = session.scalar(select(Dossier).where(Dossier.code == code).execution_options(populate_existing=True))
    if dossier is None:
        raise NotFound(f"No dossier with code {code}.")
    return dossier


def open_tasks(session: Session, dossier_code: str) -> Sequence[Any]:
    """The open human steps of a dossier, oldest first (rows with the columns of ``tasks``)."""
    _checked_code(dossier_code, "dossier")
    rows = dossiers.open_task_rows_by_code(session, dossier_code)
    if not rows and dossiers.find_dossier(session, dossier_code) is None:
        raise NotFound(f"No dossier with code {dossier_code}.")
    return rows


@dataclass(frozen=True)
class Inbox:
    """An officer's work: steps they hold, and steps offered to their roles."""

    mine: Sequence[Any]
    queue: Sequence[Any]


def inbox(session: Session, username: str, limit: int = 50, offset: int = 0) -> Inbox:
    """The officer's claimed steps and their roles' queue, most urgent first (rows of ``tasks``)."""
    grants = organisation.officer_agencies(session, username)
    table = Task.__table__
    mine = session.execute(
        select(table)
        .where(table.c.assignee == username, table.c.state == TaskState.CLAIMED)
        .order_by(table.c.due_at.is_(None), table.c.due_at, table.c.id)
        .offset(offset)
        .limit(limit)
    ).all()
    queue: Sequence[Any] = []
    if grants:
        offered = or_(*(and_(table.c.agency_id == agency_id, table.c.role == role) for agency_id, role in grants))
        queue = session.execute(
            select(table)
            .where(table.c.state == TaskState.READY, offered)
            .order_by(table.c.due_at.is_(None), table.c.due_at, table.c.id)
            .offset(offset)
            .limit(limit)
        ).all()
    return Inbox(mine, queue)


@unit_of_work
def complete_task(session: Session, task_id: int, data: Mapping[str, Any], actor: str, now: datetime) -> DossierRecord:
    """Complete an open step with its form ``data`` and move the dossier on."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("Form data must be an object of field names and values.")
    _checked_id(task_id, "task")
    # Lock the dossier first, then read its open steps: two officers completing
    # steps of one dossier at once queue here instead of overwriting each other.
    record, open_rows = dossiers.lock_dossier_with_open_tasks(session, task_id)
    if record is None:
        session.rollback()
        raise NotFound(f"No task {task_id}.")
    task = next((row for row in open_rows if row.id == task_id), None)
    if task is None:
        state = session.scalar(select(Task.state).where(Task.id == task_id))
        name = session.scalar(select(Task.step_name).where(Task.id == task_id))
        session.rollback()
        raise Conflict(f"Step '{name}' of dossier {record.code} is already {state}.")
    # Someone without the step's role there is refused before learning who holds it.
    if task.agency_id is not None and task.assignee != actor and not organisation.holds_role(session, actor, task.role, task.agency_id):
        session.rollback()
        raise Forbidden(f"{actor} does not hold the role '{task.role}' at the agency of step '{task.step_name}'.")
    if task.assignee and task.assignee != actor:
        session.rollback()
        raise Conflict(f"Step '{task.step_name}' is claimed by {task.assignee}.")
    if record.paused_at is not None:
        session.rollback()
        raise Conflict(f"Dossier {record.code} is paused ({record.pause_reason}); resume it first.")
    known = _version_runtime(session, record.procedure_version_id)
    meta = known.meta
    try:
        _check_form(meta, task.step_id, data)
        results.check_before_completion(session, meta, task, now=now)  # a signed result, where the step asks for one
        wf = _live_workflow(session, known, record)
        runtime.complete_task(wf, task.spiff_task_id, copy.deepcopy(dict(data)))
    except runtime.EngineError as err:
        session.rollback()
        raise Conflict(str(err)) from err
    except InvalidRequest:
        session.rollback()
        raise
    except Exception as err:
        session.rollback()
        raise InvalidRequest(f"Step '{task.step_name}' could not be completed: {_reason(err)}") from err
    result = judge(now, task.due_at)
    writes = dossiers.Writes()
    writes.update_task(task.id, {"state": TaskState.COMPLETED, "completed_at": now, "completed_by": actor, "result": result})
    record.data = {**record.data, **dict(data)}
    audit = _Audit(actor, now, record.id)
    audit.add("task.complete", task.id, task.state, TaskState.COMPLETED, task.step_id, {"data": dict(data), "result": result})
    still_open = [row for row in open_rows if row.id != task.id]
    _sync(session, record, wf, meta, load_calendar(session), audit, still_open, completed=task, writes=writes)
    session.commit()
    workflow_cache.keep(_cache_key(session, record.id), record.workflow_state, wf)
    return record


def _check_form(meta: Mapping[str, Any], step_id: str, data: Mapping[str, Any]) -> None:
    step = meta.get("steps", {}).get(step_id, {})
    missing = [f["label"] for f in step.get("form", []) if f.get("required") and data.get(f["id"]) in (None, "")]
    if missing:
        raise InvalidRequest("Required fields are missing: " + ", ".join(missing) + ".", missing=missing)


class _Audit:
    """Audit rows of one unit of work, written with one statement."""

    def __init__(self, actor: str, now: datetime, dossier_id: int | None) -> None:
        self.actor, self.now, self.dossier_id = actor, now, dossier_id
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        action: str,
        task_id: int | None,
        from_state: str | None,
        to_state: str | None,
        subject: str | None,
        details: Mapping[str, Any] | None = None,
        new_task: str | None = None,
    ) -> None:
        """One row; ``new_task`` (a Spiff task id) names a task row inserted in the same batch of writes."""
        row = {
            "at": self.now,
            "actor": self.actor,
            "action": action,
            "dossier_id": self.dossier_id,
            "task_id": task_id,
            "subject": subject,
            "from_state": from_state,
            "to_state": to_state,
            "details": dict(details or {}),
        }
        if new_task is not None:
            row["new_task"] = new_task
        self.rows.append(row)


def _sync(
    session: Session,
    record: DossierRecord,
    wf: Any,
    meta: Mapping[str, Any],
    calendar: WorkingCalendar,
    audit: _Audit,
    open_rows: Sequence[Any],
    completed: Any | None,
    tree: AgencyTree | None = None,
    writes: dossiers.Writes | None = None,
) -> None:
    """Store the workflow state, make the task rows match its ready steps, audit it all.

    ``completed`` is the task row just completed (None at receipt): a new step
    at another agency is a hand-over (liên thông) from it. ``writes`` may hold
    writes of the caller's to send with these (one round trip on PostgreSQL);
    everything is written when this returns.
    """
    writes = writes if writes is not None else dossiers.Writes()
    now = audit.now
    step_completed = completed is not None
    record.workflow_state = runtime.dump_state(wf)
    ready = {t.task_id: t for t in runtime.human_tasks(wf)}
    known = {row.spiff_task_id: row for row in open_rows}
    for spiff_id, row in known.items():
        if spiff_id not in ready:  # cancelled by the workflow (e.g. a branch was cut)
            writes.update_task(row.id, {"state": TaskState.CANCELLED, "completed_at": now})
            audit.add("task.cancel", row.id, row.state, TaskState.CANCELLED, row.step_id)
    steps = meta.get("steps", {})
    for spiff_id, human in ready.items():
        if spiff_id in known:
            continue
        step = steps.get(human.step_id, {})
        allotment = _step_allotment(step, record.channel)
        agency_id = _resolve_agency(session, tree, record, step, human.step_name)
        due_at = due_after(calendar, now, allotment) if allotment else None
        first_rung = next_rung(calendar, ladder_of(meta), now, due_at, None) if due_at else None
        writes.insert_task(
            {
                "dossier_id": record.id,
                "spiff_task_id": spiff_id,
                "step_id": human.step_id,
                "step_name": human.step_name,
                "process_id": human.process_id,
                "lane": step.get("lane_name") or human.lane,
                "role": step.get("role"),
                "agency": tree_code(session, tree, agency_id),
                "agency_id": agency_id,
                "state": TaskState.READY,
                "assignee": None,
                "started_at": now,
                "due_at": due_at,
                "completed_at": None,
                "completed_by": None,
                "escalation_level": first_rung[0] if first_rung else None,
                "escalation_at": first_rung[1] if first_rung else None,
            },
        )
        audit.add("task.ready", None, None, TaskState.READY, human.step_id, {"agency_id": agency_id}, new_task=spiff_id)
        source = completed.agency_id if completed is not None else record.receiving_agency_id
        if agency_id is not None and source is not None and source != agency_id:
            writes.add_handover(
                {
                    "dossier_id": record.id,
                    "from_agency_id": source,
                    "to_agency_id": agency_id,
                    "from_task_id": completed.id if completed is not None else None,
                    "sent_by": audit.actor,
                    "sent_at": now,
                },
                to_spiff_task_id=spiff_id,
            )
    if wf.is_completed():
        _set_status(record, DossierStatus.PROCESSED, "processed", audit)
        record.finished_at = now
        notify_applicant(
            session, record, "dossier.result_ready", f"Hồ sơ {record.code}: đã có kết quả",
            f"Hồ sơ {record.code} đã giải quyết xong; mời ông/bà nhận kết quả.", now,
        )
    elif step_completed and record.status == DossierStatus.RECEIVED:
        _set_status(record, DossierStatus.PROCESSING, "processing", audit)
    writes.save_dossier(record, now)
    writes.add_audit(audit.rows)
    if not writes.flush(session):
        session.rollback()
        raise Conflict(f"Dossier {record.code} changed meanwhile; reload and try again.")


#: Channels a dossier can come in by.
CHANNELS = ("in_person", "online", "post")


def judge(finished_at: datetime, due_at: datetime | None) -> str | None:
    """Trước hạn / đúng hạn / trễ hạn: ``early`` (before the due day), ``on_time`` (on it), ``late``."""
    if due_at is None:
        return None
    if finished_at > due_at:
        return "late"
    if finished_at.astimezone(VN_TZ).date() < due_at.astimezone(VN_TZ).date():
        return "early"
    return "on_time"


#: The default ladder: who hears of a step, and when (working hours from its due time).
ESCALATION_LADDER = (("warning", -4.0), ("head_of_unit", 0.0), ("leader", 8.0), ("supervisor", 16.0))


def ladder_of(meta: Mapping[str, Any]) -> list[tuple[str, float]]:
    """A procedure's escalation ladder: its own (property ``escalation``) or the default."""
    return [(str(level), float(hours)) for level, hours in (meta.get("escalation") or ESCALATION_LADDER)]


def rung_instants(
    calendar: WorkingCalendar, ladder: Sequence[tuple[str, float]], started_at: datetime, due_at: datetime
) -> list[tuple[str, datetime]]:
    """When each rung of ``ladder`` falls for a step that became ready at ``started_at``, due at ``due_at``.

    Offsets are working hours from the due time (negative: before it); a
    warning never comes earlier than half-way through the step's allotment.
    """
    allotted = calendar.working_time_between(started_at, due_at)
    rungs = []
    for level, hours in ladder:
        if hours < 0:
            lead = min(timedelta(hours=-hours), allotted / 2)
            at = calendar.add_working_time(started_at, allotted - lead)
        elif hours == 0:
            at = due_at
        else:
            at = calendar.add_working_hours(due_at, hours)
        rungs.append((level, at))
    return rungs


def next_rung(
    calendar: WorkingCalendar, ladder: Sequence[tuple[str, float]], started_at: datetime, due_at: datetime, after: str | None
) -> tuple[str, datetime] | None:
    """The rung that follows ``after`` (the first when None), or None at the top of the ladder."""
    rungs = rung_instants(calendar, ladder, started_at, due_at)
    if after is None:
        return rungs[0] if rungs else None
    levels = [level for level, _ in rungs]
    position = levels.index(after) + 1 if after in levels else len(rungs)
    return rungs[position] if position < len(rungs) else None


def _resolve_agency(session: Session, tree: AgencyTree | None, record: DossierRecord, step: Mapping[str, Any], name: str) -> int | None:
    if record.home_agency_id is None:
        return None
    tree = tree or organisation.agency_tree(session)
    try:
        return tree.resolve(step.get("agency"), record.home_agency_id)
    except AssignmentError as err:
        session.rollback()
        raise Conflict(f"No agency for step '{name}' of dossier {record.code}: {err}") from err


def tree_code(session: Session, tree: AgencyTree | None, agency_id: int | None) -> str | None:
    if agency_id is None:
        return None
    tree = tree or organisation.agency_tree(session)
    return tree.nodes[agency_id].code


def notify_applicant(session: Session, record: DossierRecord, event: str, subject: str, body: str, now: datetime) -> None:
    """Queue a message to the applicant in the caller's transaction (outbox)."""
    for channel, recipient in (("sms", record.applicant_phone), ("email", record.applicant_email)):
        if recipient:
            notify.enqueue(
                session, channel=channel, recipient=recipient, subject=subject, body=body, event=event, now=now, dossier_id=record.id
            )


def _set_status(record: DossierRecord, status: int, sub_status: str, audit: _Audit) -> None:
    before = record.status
    record.status, record.sub_status = status, sub_status
    audit.add("dossier.status", None, str(before), str(status), record.code, {"sub_status": sub_status})


def dossier_history(session: Session, code: str) -> Sequence[AuditEvent]:
    """Every recorded change of a dossier, in order."""
    dossier = get_dossier(session, code)
    return list(session.scalars(select(AuditEvent).where(AuditEvent.dossier_id == dossier.id).order_by(AuditEvent.id)))


def _reason(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]
