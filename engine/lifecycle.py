"""Use cases of a dossier's life beyond its steps: claiming and handing work
back, pausing for a supplement or a payment, withdrawing, stopping, the
apology with a new appointment, returning the result.

Each function takes a session, the actor's username and ``now``; commits its
own unit of work; and refuses a request that does not fit the dossier's state
with a :mod:`engine.errors` exception, changing nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import organisation, services
from .core import runtime
from .errors import Conflict, Forbidden, InvalidRequest, NotFound
from .persistence import dossiers
from .persistence.db import unit_of_work
from .persistence.dossiers import DossierRecord
from .persistence.models import Task, TaskState
from .services import DossierStatus, _Audit

__all__ = [
    "claim",
    "issue_apology",
    "reassign",
    "recall",
    "refuse",
    "request_payment",
    "request_supplement",
    "reset_to_step",
    "resume",
    "return_result",
    "return_to_previous",
    "stop",
    "transfer",
    "unclaim",
    "withdraw",
]

#: Statuses in which the dossier is still being handled.
ACTIVE = (DossierStatus.RECEIVED, DossierStatus.PROCESSING)
PAUSED = (DossierStatus.SUPPLEMENT_REQUESTED, DossierStatus.FINANCIAL_OBLIGATION)
RETURN_CHANNELS = ("desk", "post", "online")
LEADER_ROLES = ("leader", "head_of_unit")


def _fresh(query: Any) -> Any:
    """Rows re-read from the database: the hot path writes these tables with plain SQL."""
    return query.execution_options(populate_existing=True)


def _task(session: Session, task_id: int) -> Task:
    services._checked_id(task_id, "task")
    task = session.get(Task, task_id, populate_existing=True, with_for_update=True)
    if task is None:
        raise NotFound(f"No task {task_id}.")
    return task


def _record(session: Session, code: str) -> DossierRecord:
    services._checked_code(code, "dossier")
    record = dossiers.find_dossier(session, code)
    if record is None:
        raise NotFound(f"No dossier with code {code}.")
    return record


def _save(session: Session, record: DossierRecord, audit: _Audit) -> None:
    if not dossiers.save_dossier(session, record, audit.now):
        session.rollback()
        raise Conflict(f"Dossier {record.code} changed meanwhile; reload and try again.")
    dossiers.add_audit(session, audit.rows)
    session.commit()


def _require_role(session: Session, username: str, roles: Sequence[str], agency_id: int | None, what: str) -> None:
    if agency_id is None:
        return  # no organisation loaded: nothing to check against
    if not any(organisation.holds_role(session, username, role, agency_id) for role in roles):
        session.rollback()
        raise Forbidden(f"{username} may not {what}: it needs the role {' or '.join(roles)} at that agency.")


# ----------------------------------------------------------------- work on steps


@unit_of_work
def claim(session: Session, task_id: int, actor: str, now: datetime) -> Task:
    """Take an offered step into one's own inbox (and receive its hand-over).

    Two officers claiming at once: the conditional update lets exactly one win.
    """
    task = _task(session, task_id)
    if task.state != TaskState.READY:
        session.rollback()
        raise Conflict(f"Step '{task.step_name}' is {task.state}" + (f" by {task.assignee}." if task.assignee else "."))
    _require_role(session, actor, [task.role or "officer"], task.agency_id, f"claim step '{task.step_name}'")
    won = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.state == TaskState.READY)
        .values(state=TaskState.CLAIMED, assignee=actor, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    if won.rowcount != 1:
        session.rollback()
        raise Conflict(f"Step '{task.step_name}' was just claimed by someone else.")
    dossiers.receive_handover(session, task.id, actor, now)
    audit = _Audit(actor, now, task.dossier_id)
    audit.add("task.claim", task.id, TaskState.READY, TaskState.CLAIMED, task.step_id)
    dossiers.add_audit(session, audit.rows)
    session.commit()
    return session.get(Task, task_id, populate_existing=True)  # re-read without keeping a lock


@unit_of_work
def unclaim(session: Session, task_id: int, actor: str, now: datetime) -> Task:
    """Put a claimed step back in its role's queue."""
    task = _task(session, task_id)
    if task.state != TaskState.CLAIMED:
        session.rollback()
        raise Conflict(f"Step '{task.step_name}' is not claimed.")
    if task.assignee != actor:
        _require_role(session, actor, LEADER_ROLES, task.agency_id, f"release a step claimed by {task.assignee}")
    audit = _Audit(actor, now, task.dossier_id)
    audit.add("task.unclaim", task.id, TaskState.CLAIMED, TaskState.READY, task.step_id, {"was": task.assignee})
    task.state, task.assignee, task.claimed_at = TaskState.READY, None, None
    dossiers.add_audit(session, audit.rows)
    session.commit()
    return task


@unit_of_work
def reassign(session: Session, task_id: int, to_username: str, actor: str, now: datetime) -> Task:
    """A leader gives an open step to another officer holding its role there."""
    task = _task(session, task_id)
    if task.state not in TaskState.OPEN:
        session.rollback()
        raise Conflict(f"Step '{task.step_name}' is already {task.state}.")
    _require_role(session, actor, LEADER_ROLES, task.agency_id, f"reassign step '{task.step_name}'")
    organisation.officer_by_username(session, to_username)
    _require_role(session, to_username, [task.role or "officer"], task.agency_id, f"take step '{task.step_name}'")
    audit = _Audit(actor, now, task.dossier_id)
    audit.add("task.reassign", task.id, task.state, TaskState.CLAIMED, task.step_id, {"from": task.assignee, "to": to_username})
    task.state, task.assignee, task.claimed_at = TaskState.CLAIMED, to_username, now
    dossiers.receive_handover(session, task.id, to_username, now)
    dossiers.add_audit(session, audit.rows)
    session.commit()
    return task


@unit_of_work
def return_to_previous(session: Session, task_id: int, reason: str, actor: str, now: datetime) -> DossierRecord:
    """Send the dossier back to the step before this one, with a reason.

    The previous step is offered again to the officer who completed it.
    """
    reason = _reason_given(reason, "trả lại hồ sơ")
    services._checked_id(task_id, "task")
    record, open_rows = dossiers.lock_dossier_with_open_tasks(session, task_id)
    task = next((row for row in open_rows if row.id == task_id), None)
    if record is None or task is None:
        session.rollback()
        raise Conflict(f"Task {task_id} is not an open step.")
    if task.assignee != actor and task.agency_id is not None and not organisation.holds_role(session, actor, task.role, task.agency_id):
        session.rollback()
        raise Forbidden(f"{actor} does not hold the role '{task.role}' at the agency of step '{task.step_name}'.")
    if task.assignee and task.assignee != actor:
        session.rollback()
        raise Conflict(f"Step '{task.step_name}' is claimed by {task.assignee}.")
    known = services._version_runtime(session, record.procedure_version_id)
    wf = runtime.load_state(known.spec, record.workflow_state)
    earlier = _previous_row(session, wf, record.id, task)
    _send_back(session, record, wf, known.meta, open_rows, earlier, "task.return", task, reason, actor, now)
    return record


@unit_of_work
def recall(session: Session, code: str, reason: str, actor: str, now: datetime) -> DossierRecord:
    """Thu hồi: take back a dossier one forwarded by mistake, while the next step is unclaimed.

    The step ``actor`` completed is opened to them again; the step it led to is
    cancelled. Once someone has claimed that next step, it is theirs to return.
    """
    reason = _reason_given(reason, "thu hồi hồ sơ")
    record = _record(session, code)
    known = services._version_runtime(session, record.procedure_version_id)
    candidates = []
    for row in dossiers.open_task_rows(session, record.id):
        wf = runtime.load_state(known.spec, record.workflow_state)
        try:
            earlier = _previous_row(session, wf, record.id, row)
        except Conflict:
            continue
        if earlier.completed_by == actor:
            candidates.append(row)
    if not candidates:
        session.rollback()
        raise Conflict(f"{actor} không chuyển hồ sơ {code} sang bước nào đang mở, nên không có gì để thu hồi.")
    claimed = [row for row in candidates if row.state != TaskState.READY]
    if claimed:
        session.rollback()
        raise Conflict(
            f"Bước “{claimed[0].step_name}” đã được {claimed[0].assignee} nhận xử lý; không thu hồi được nữa, đề nghị người đó trả lại hồ sơ."
        )
    locked, open_rows = dossiers.lock_dossier_with_open_tasks(session, candidates[0].id)
    task = next((row for row in open_rows if row.id == candidates[0].id), None)
    if locked is None or task is None or task.state != TaskState.READY:
        session.rollback()
        raise Conflict(f"Hồ sơ {code} vừa thay đổi; tải lại và thử lại.")
    wf = runtime.load_state(known.spec, locked.workflow_state)
    earlier = _previous_row(session, wf, locked.id, task)
    _send_back(session, locked, wf, known.meta, open_rows, earlier, "dossier.recall", task, reason, actor, now)
    return locked


@unit_of_work
def reset_to_step(session: Session, code: str, step_id: str, reason: str, actor: str, now: datetime) -> DossierRecord:
    """A leader sends the dossier back to an earlier step, with a reason.

    The latest run of ``step_id`` is opened again to the officer who did it;
    every open step is cancelled. The step gets a fresh allotment from now;
    the dossier keeps its legal due date.
    """
    reason = _reason_given(reason, "chuyển lại hồ sơ về bước trước")
    record = _record(session, code)
    if record.status not in ACTIVE:
        session.rollback()
        raise Conflict(f"Hồ sơ {code} đang ở trạng thái “{DossierStatus.LABELS[record.status]}”; chỉ hồ sơ đang giải quyết mới chuyển lại bước trước được.")
    earlier = session.scalar(
        _fresh(select(Task).where(Task.dossier_id == record.id, Task.step_id == step_id, Task.state == TaskState.COMPLETED)
               .order_by(Task.id.desc()).limit(1))
    )
    if earlier is None:
        session.rollback()
        raise Conflict(f"Bước “{step_id}” của hồ sơ {code} chưa được thực hiện; chỉ chuyển lại được về bước hồ sơ đã qua.")
    home = record.home_agency_id
    if not any(organisation.holds_role(session, actor, role, agency)
               for role in LEADER_ROLES for agency in {home, earlier.agency_id} if agency is not None):
        if home is not None or earlier.agency_id is not None:
            session.rollback()
            raise Forbidden(f"{actor} không được chuyển lại hồ sơ {code}: cần vai trò lãnh đạo cơ quan hoặc lãnh đạo phòng tại cơ quan giải quyết.")
    open_rows = dossiers.open_task_rows(session, record.id)
    locked, open_rows = dossiers.lock_dossier_with_open_tasks(session, open_rows[0].id) if open_rows else (record, [])
    if locked is None:
        session.rollback()
        raise Conflict(f"Hồ sơ {code} vừa thay đổi; tải lại và thử lại.")
    known = services._version_runtime(session, locked.procedure_version_id)
    wf = runtime.load_state(known.spec, locked.workflow_state)
    try:
        wf.get_task_from_id(UUID(earlier.spiff_task_id))
    except Exception:
        session.rollback()
        raise Conflict(f"Không còn quay lại được bước “{earlier.step_name}” từ vị trí hiện tại của hồ sơ.") from None
    _send_back(session, locked, wf, known.meta, open_rows, earlier, "dossier.reset", None, reason, actor, now)
    return locked


@unit_of_work
def transfer(session: Session, task_id: int, to_username: str, reason: str | None, actor: str, now: datetime) -> Task:
    """Chuyển xử lý: the officer holding a claimed step hands it to a colleague with the same role there."""
    task = _task(session, task_id)
    if task.state != TaskState.CLAIMED:
        session.rollback()
        raise Conflict(f"Bước “{task.step_name}” chưa được nhận xử lý (trạng thái {task.state}); hãy nhận xử lý trước khi chuyển cho đồng nghiệp.")
    if task.assignee != actor:
        session.rollback()
        raise Forbidden(f"Bước “{task.step_name}” do {task.assignee} xử lý, không phải {actor}.")
    if to_username == actor:
        session.rollback()
        raise InvalidRequest("Chọn một đồng nghiệp khác, không phải chính mình.")
    organisation.officer_by_username(session, to_username)
    _require_role(session, to_username, [task.role or "officer"], task.agency_id, f"take step '{task.step_name}'")
    audit = _Audit(actor, now, task.dossier_id)
    audit.add("task.transfer", task.id, TaskState.CLAIMED, TaskState.CLAIMED, task.step_id,
              {"from": actor, "to": to_username, "reason": (reason or "").strip()})
    task.assignee, task.claimed_at = to_username, now
    dossiers.add_audit(session, audit.rows)
    session.commit()
    return task


def _reason_given(reason: str | None, what: str) -> str:
    if not reason or not reason.strip():
        raise InvalidRequest(f"Cần ghi rõ lý do {what}.")
    return reason.strip()


def _previous_row(session: Session, wf: Any, dossier_id: int, task: Any) -> Task:
    """The completed task row of the human step before open step ``task``."""
    try:
        previous = runtime.previous_human_task(wf, task.spiff_task_id)
    except runtime.EngineError as err:
        session.rollback()
        raise Conflict(str(err)) from err
    if previous is None:
        session.rollback()
        raise Conflict(f"Step '{task.step_name}' is the first step; there is nothing to return to.")
    earlier = session.scalar(
        _fresh(select(Task).where(Task.dossier_id == dossier_id, Task.spiff_task_id == previous, Task.state == TaskState.COMPLETED)
               .order_by(Task.id.desc()).limit(1))
    )
    if earlier is None:
        session.rollback()
        raise Conflict(f"The step before '{task.step_name}' has no record; it cannot be reopened.")
    return earlier


def _send_back(
    session: Session, record: DossierRecord, wf: Any, meta: Mapping[str, Any], open_rows: Sequence[Any], earlier: Task,
    action: str, task: Any | None, reason: str, actor: str, now: datetime,
) -> None:
    """Reopen ``earlier`` (to whoever did it), cancel what came after, audit ``action``, commit."""
    runtime.reset_to(wf, earlier.spiff_task_id)
    audit = _Audit(actor, now, record.id)
    details = {"reason": reason, "to_step": earlier.step_id, "to": earlier.completed_by}
    if task is not None:
        audit.add(action, task.id, task.state, "returned", task.step_id, details)
        dossiers.update_task(session, task.id, {"state": TaskState.CANCELLED, "completed_at": now, "completed_by": actor, "note": reason})
        others = [row for row in open_rows if row.id != task.id]
    else:
        audit.add(action, None, str(record.status), str(record.status), record.code,
                  {**details, "cancelled": [row.step_id for row in open_rows]})
        others = list(open_rows)
    services._sync(session, record, wf, meta, services.load_calendar(session), audit, others, completed=task)
    if earlier.completed_by:
        session.execute(
            update(Task)
            .where(Task.dossier_id == record.id, Task.spiff_task_id == earlier.spiff_task_id, Task.state == TaskState.READY)
            .values(state=TaskState.CLAIMED, assignee=earlier.completed_by, claimed_at=now)
        )
    session.commit()


# ----------------------------------------------------------------- pauses


@unit_of_work
def request_supplement(session: Session, code: str, items: Sequence[str], actor: str, now: datetime) -> DossierRecord:
    """Ask the applicant to supplement the dossier (form 02); the clock stops."""
    return _pause(session, code, DossierStatus.SUPPLEMENT_REQUESTED, "supplement", list(items), actor, now)


@unit_of_work
def request_payment(session: Session, code: str, items: Sequence[str], actor: str, now: datetime) -> DossierRecord:
    """Pause for the applicant's financial obligation, where the procedure declares one."""
    record = _record(session, code)
    meta = services._version_runtime(session, record.procedure_version_id).meta
    if not meta.get("financial_obligation"):
        raise Conflict(f"Procedure {meta.get('code')} declares no financial obligation (property 'financial_obligation').")
    return _pause(session, code, DossierStatus.FINANCIAL_OBLIGATION, "payment", list(items), actor, now)


def _pause(session: Session, code: str, status: int, reason: str, items: list[str], actor: str, now: datetime) -> DossierRecord:
    if not items:
        raise InvalidRequest("List what the applicant must supplement or pay.")
    record = _record(session, code)
    if record.status not in ACTIVE:
        raise Conflict(f"Dossier {code} is '{DossierStatus.LABELS[record.status]}'; only a dossier being handled can be paused.")
    audit = _Audit(actor, now, record.id)
    before = record.status
    record.status, record.sub_status = status, reason
    record.paused_at, record.pause_reason = now, reason
    if reason == "supplement":
        record.supplement_requests += 1
    audit.add("dossier.pause", None, str(before), str(status), record.code, {"reason": reason, "items": items})
    services.notify_applicant(
        session,
        record,
        f"dossier.{reason}_requested",
        f"Hồ sơ {record.code}: yêu cầu bổ sung" if reason == "supplement" else f"Hồ sơ {record.code}: thực hiện nghĩa vụ tài chính",
        "Đề nghị ông/bà: " + "; ".join(items) + ".",
        now,
    )
    _save(session, record, audit)
    return record


@unit_of_work
def resume(session: Session, code: str, actor: str, now: datetime) -> DossierRecord:
    """The supplement or payment arrived: the clock restarts, due dates move by the pause."""
    record = _record(session, code)
    if record.status not in PAUSED or record.paused_at is None:
        raise Conflict(f"Dossier {code} is not waiting for a supplement or a payment.")
    calendar = services.load_calendar(session)
    paused_at = record.paused_at
    if record.due_at is not None:
        record.due_at = calendar.resume_due(record.due_at, paused_at, now)
    for task in session.scalars(_fresh(select(Task).where(Task.dossier_id == record.id, Task.state.in_(TaskState.OPEN)))):
        if task.due_at is not None:
            task.due_at = calendar.resume_due(task.due_at, paused_at, now)
        if task.escalation_at is not None:
            task.escalation_at = calendar.resume_due(task.escalation_at, paused_at, now)
    audit = _Audit(actor, now, record.id)
    before = record.status
    started = session.scalar(select(Task.id).where(Task.dossier_id == record.id, Task.state == TaskState.COMPLETED).limit(1))
    record.status = DossierStatus.PROCESSING if started else DossierStatus.RECEIVED
    record.sub_status = "processing" if started else "received"
    audit.add("dossier.resume", None, str(before), str(record.status), record.code, {"paused_at": paused_at.isoformat(), "reason": record.pause_reason})
    record.paused_at, record.pause_reason = None, None
    session.flush()
    _save(session, record, audit)
    return record


# ----------------------------------------------------------------- endings


@unit_of_work
def withdraw(session: Session, code: str, reason: str, actor: str, now: datetime) -> DossierRecord:
    """The applicant withdraws the dossier."""
    return _end(session, code, DossierStatus.WITHDRAWN, "withdrawn", reason, actor, now)


@unit_of_work
def stop(session: Session, code: str, reason: str, actor: str, now: datetime) -> DossierRecord:
    """Stop processing (dừng xử lý), with the legal reason."""
    return _end(session, code, DossierStatus.STOPPED, "stopped", reason, actor, now)


def _end(session: Session, code: str, status: int, sub: str, reason: str, actor: str, now: datetime) -> DossierRecord:
    if not reason or not reason.strip():
        raise InvalidRequest("Give the reason.")
    record = _record(session, code)
    if record.status not in ACTIVE + PAUSED:
        raise Conflict(f"Dossier {code} is '{DossierStatus.LABELS[record.status]}' and can no longer be {sub}.")
    audit = _Audit(actor, now, record.id)
    for task in session.scalars(_fresh(select(Task).where(Task.dossier_id == record.id, Task.state.in_(TaskState.OPEN)))):
        audit.add("task.cancel", task.id, task.state, TaskState.CANCELLED, task.step_id, {"reason": sub})
        task.state, task.completed_at = TaskState.CANCELLED, now
    before = record.status
    record.status, record.sub_status, record.finished_at = status, sub, now
    record.paused_at = None
    audit.add("dossier.status", None, str(before), str(status), record.code, {"reason": reason.strip()})
    session.flush()
    _save(session, record, audit)
    return record


@unit_of_work
def refuse(
    session: Session,
    procedure_code: str,
    reasons: Sequence[str],
    actor: str,
    now: datetime,
    agency_code: str,
    applicant: Mapping[str, str | None] | None = None,
) -> DossierRecord:
    """Refuse a dossier at reception (form 03): it gets a code, no steps."""
    if not reasons:
        raise InvalidRequest("Give the reasons for refusing the dossier.")
    found = dossiers.find_version(session, procedure_code, None)
    if found is None:
        raise NotFound(f"No procedure with code {procedure_code}.")
    tree = organisation.agency_tree(session)
    receiving = tree.by_code.get(agency_code)
    applicant = applicant or {}
    values: dict[str, Any] = {
        "code": services._next_dossier_code(session, agency_code, now),
        "procedure_version_id": found[0],
        "agency_code": agency_code,
        "status": DossierStatus.REFUSED,
        "sub_status": "refused",
        "data": {"refusal_reasons": list(reasons)},
        "workflow_state": "",
        "received_at": now,
        "due_at": None,
        "finished_at": now,
        "updated_at": now,
        "home_agency_id": receiving.id if receiving else None,
        "receiving_agency_id": receiving.id if receiving else None,
        "applicant_name": applicant.get("name"),
        "applicant_phone": applicant.get("phone"),
        "applicant_email": applicant.get("email"),
    }
    dossier_id = dossiers.insert_dossier(session, values)
    audit = _Audit(actor, now, dossier_id)
    audit.add("dossier.refuse", None, None, str(DossierStatus.REFUSED), values["code"], {"reasons": list(reasons)})
    dossiers.add_audit(session, audit.rows)
    session.commit()
    return _record(session, values["code"])


@unit_of_work
def issue_apology(
    session: Session, code: str, new_due_at: datetime, reason: str, agency_code: str, approved_by: str, actor: str, now: datetime
) -> DossierRecord:
    """The late agency apologises and sets a new appointment (form 04), once per dossier.

    ``approved_by`` is the head of that agency who signs the letter.
    """
    if not reason or not reason.strip():
        raise InvalidRequest("Give the reason for the delay.")
    record = _record(session, code)
    if record.new_appointment_at is not None:
        raise Conflict(f"Dossier {code} already has a new appointment; a dossier gets a new date only once.")
    if record.status not in ACTIVE + PAUSED:
        raise Conflict(f"Dossier {code} is '{DossierStatus.LABELS[record.status]}'; no apology is due.")
    if record.due_at is not None and new_due_at <= record.due_at:
        raise InvalidRequest("The new appointment must be later than the current due date.")
    agency = organisation.agency_by_code(session, agency_code)
    _require_role(session, approved_by, ("leader",), agency.id, f"sign the apology of {agency.name}")
    audit = _Audit(actor, now, record.id)
    old_due = record.due_at
    record.due_at, record.new_appointment_at = new_due_at, now
    audit.add(
        "dossier.apology",
        None,
        old_due.isoformat() if old_due else None,
        new_due_at.isoformat(),
        record.code,
        {"reason": reason.strip(), "agency": agency_code, "approved_by": approved_by},
    )
    services.notify_applicant(
        session,
        record,
        "dossier.new_appointment",
        f"Hồ sơ {record.code}: xin lỗi và hẹn lại ngày trả kết quả",
        f"{agency.name} xin lỗi ông/bà vì hồ sơ chưa giải quyết đúng hạn ({reason.strip()}). "
        f"Ngày hẹn trả kết quả mới: {new_due_at.astimezone(services.VN_TZ):%H:%M ngày %d/%m/%Y}.",
        now,
    )
    _save(session, record, audit)
    return record


@unit_of_work
def return_result(session: Session, code: str, channel: str, actor: str, now: datetime) -> DossierRecord:
    """Hand the result to the applicant: at the desk, by post or online."""
    if channel not in RETURN_CHANNELS:
        raise InvalidRequest(f"Return channel must be one of {', '.join(RETURN_CHANNELS)}, not '{channel}'.")
    record = _record(session, code)
    if record.status == DossierStatus.RETURNED:
        raise Conflict(f"The result of dossier {code} was already returned.")
    if record.status != DossierStatus.PROCESSED:
        raise Conflict(f"Dossier {code} is '{DossierStatus.LABELS[record.status]}'; its result is not ready.")
    audit = _Audit(actor, now, record.id)
    record.status, record.sub_status = DossierStatus.RETURNED, "returned"
    record.returned_at, record.return_channel = now, channel
    audit.add("dossier.status", None, str(DossierStatus.PROCESSED), str(DossierStatus.RETURNED), record.code, {"channel": channel})
    _save(session, record, audit)
    return record
