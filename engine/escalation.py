"""The deadline sweep: fire each due rung of the escalation ladders, once.

A step's ladder: a warning to the assignee before the step is due, then its
head of unit at the due time, the agency's leader a working day later, the
supervising body after two. The next rung of every open step lives on its
``tasks`` row (``escalation_level``, ``escalation_at``), so the sweep is one
indexed query over ``(state, escalation_at)`` — no workflow is ever loaded.
Firing a rung (moving the row to its next rung, recording it in
``escalations``, writing its messages to the outbox, auditing it) is one
transaction with a compare-and-set on the rung, so it fires exactly once even
with several sweepers (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) or a crash
mid-sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import notify, services
from .core.calendar import VN_TZ, WorkingCalendar
from .persistence.models import (
    Agency,
    AuditEvent,
    Dossier,
    Escalation,
    Officer,
    OfficerRole,
    Task,
    TaskState,
)

__all__ = ["LEVEL_LABELS", "SweepReport", "sweep"]

log = logging.getLogger(__name__)

LEVEL_LABELS = {
    "warning": "Sắp đến hạn",
    "head_of_unit": "Đến hạn — báo lãnh đạo phòng",
    "leader": "Quá hạn — báo lãnh đạo cơ quan",
    "supervisor": "Quá hạn — báo cơ quan giám sát",
}


@dataclass
class SweepReport:
    fired: int = 0
    messages: int = 0
    failed: int = 0


def sweep(sessions: Callable[[], Session], now: datetime, batch: int = 1000) -> SweepReport:
    """Fire every pending rung due at ``now``; return what was done."""
    report = SweepReport()
    with sessions() as session:
        query = (
            select(Task.id, Task.escalation_level, Task.escalation_at, Task.started_at, Task.due_at, Dossier.procedure_version_id)
            .join(Dossier, Dossier.id == Task.dossier_id)
            # While a dossier waits for the applicant its clock is stopped: nothing escalates.
            .where(Task.state.in_(TaskState.OPEN), Task.escalation_at <= now, Dossier.paused_at.is_(None))
            .order_by(Task.escalation_at)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=Task, skip_locked=True, key_share=True)
        due = session.execute(query).all()
        calendar = services.load_calendar(session)
        for row in due:
            ladder = services.ladder_of(services._version_runtime(session, row.procedure_version_id).meta)
            try:
                with session.begin_nested():
                    fired, sent = _fire_due_rungs(session, row, ladder, now, calendar)
                report.fired += fired
                report.messages += sent
            except Exception:  # one broken rung must not stop the sweep
                report.failed += 1
                log.exception("escalation of task %s could not be fired", row.id)
        session.commit()
    return report


def _fire_due_rungs(
    session: Session, row: Any, ladder: list[tuple[str, float]], now: datetime, calendar: WorkingCalendar
) -> tuple[int, int]:
    """Fire the due rungs of one step, in order: ``(rungs fired, messages queued)``.

    The first statement is the compare-and-set on the step's rung, so that on
    SQLite the transaction starts by taking the write lock (a read first could
    leave it on a stale snapshot when another sweeper commits).
    """
    level, due, fired, sent = row.escalation_level, row.escalation_at, 0, 0
    while level is not None and due is not None and due <= now:
        following = services.next_rung(calendar, ladder, row.started_at, row.due_at, level) if row.due_at else None
        claimed = session.execute(
            update(Task)
            .where(Task.id == row.id, Task.state.in_(TaskState.OPEN), Task.escalation_level == level, Task.escalation_at == due)
            .values(escalation_level=following[0] if following else None, escalation_at=following[1] if following else None)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            break  # another sweeper has it
        sent += _record(session, row.id, level, due, now)
        fired += 1
        level, due = following if following else (None, None)
    return fired, sent


def _record(session: Session, task_id: int, level: str, due: datetime, now: datetime) -> int:
    """Record a fired rung, queue its messages and audit it; the number of messages."""
    task = session.get(Task, task_id, populate_existing=True)
    # Only the columns needed: a sweep never loads a dossier's workflow state.
    dossier = session.execute(select(Dossier.id, Dossier.code).where(Dossier.id == task.dossier_id)).one()
    session.add(Escalation(task_id=task.id, dossier_id=dossier.id, level=level, due_at=due, state="fired", fired_at=now))
    recipients = _recipients(session, level, task)
    due_text = task.due_at.astimezone(VN_TZ).strftime("%H:%M ngày %d/%m/%Y") if task.due_at else "—"
    subject = f"[{LEVEL_LABELS.get(level, level)}] Hồ sơ {dossier.code}: {task.step_name}"
    body = (
        f"Bước '{task.step_name}' của hồ sơ {dossier.code} hạn xử lý {due_text}"
        + (f", đang do {task.assignee} xử lý." if task.assignee else ", chưa có người nhận xử lý.")
    )
    for officer in recipients:
        channel, address = ("email", officer.email) if officer.email else ("sms", officer.phone) if officer.phone else ("log", officer.username)
        notify.enqueue(
            session, channel=channel, recipient=address, subject=subject, body=body,
            event=f"escalation.{level}", now=now, dossier_id=dossier.id,
        )
    session.add(
        AuditEvent(
            at=now,
            actor="system",
            action="task.escalate",
            dossier_id=dossier.id,
            task_id=task.id,
            subject=task.step_id,
            from_state="pending",
            to_state=level,
            details={"recipients": [o.username for o in recipients], "due": due.isoformat()},
        )
    )
    return len(recipients)


def _recipients(session: Session, level: str, task: Task) -> list[Officer]:
    if task.agency_id is None:
        return []
    if level == "warning":
        if task.assignee:
            officer = session.scalar(select(Officer).where(Officer.username == task.assignee))
            return [officer] if officer else []
        return _holders(session, [task.agency_id], task.role or "officer")
    if level in ("head_of_unit", "leader"):
        return _holders(session, [task.agency_id], level)
    # The supervising body: supervisors at the agency's ancestors.
    chain = []
    agency = session.get(Agency, task.agency_id)
    while agency is not None and agency.parent_id is not None:
        agency = session.get(Agency, agency.parent_id)
        if agency is not None:
            chain.append(agency.id)
    return _holders(session, chain, "supervisor")


def _holders(session: Session, agency_ids: list[int], role: str) -> list[Officer]:
    if not agency_ids:
        return []
    return list(
        session.scalars(
            select(Officer)
            .join(OfficerRole, OfficerRole.officer_id == Officer.id)
            .where(OfficerRole.agency_id.in_(agency_ids), OfficerRole.role == role, Officer.active.is_(True))
            .order_by(Officer.username)
            .distinct()
        )
    )
