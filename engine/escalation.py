"""The deadline sweep: fire each due rung of the escalation ladders, once.

A rung is a row of ``escalations`` (warning to the assignee before the step is
due, then its head of unit at the due time, the agency's leader a working day
later, the supervising body after two). The sweep is one indexed query over
``(state, due_at)`` — no workflow is ever loaded — and firing a rung, writing
its messages to the outbox and auditing it happen in one transaction, so a
rung fires exactly once even with several sweepers (``FOR UPDATE SKIP LOCKED``
on PostgreSQL, a compare-and-set update on SQLite) or a crash mid-sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import notify
from .core.calendar import VN_TZ
from .persistence.models import (
    Agency,
    AuditEvent,
    Dossier,
    Escalation,
    Officer,
    OfficerRole,
    Task,
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
            select(Escalation.id)
            .join(Dossier, Dossier.id == Escalation.dossier_id)
            # While a dossier waits for the applicant its clock is stopped: nothing escalates.
            .where(Escalation.state == "pending", Escalation.due_at <= now, Dossier.paused_at.is_(None))
            .order_by(Escalation.due_at)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=Escalation, skip_locked=True)
        ids = list(session.scalars(query))
        for rung_id in ids:
            try:
                with session.begin_nested():
                    sent = _fire(session, rung_id, now)
                if sent is not None:
                    report.fired += 1
                    report.messages += sent
            except Exception:  # one broken rung must not stop the sweep
                report.failed += 1
                log.exception("escalation %s could not be fired", rung_id)
        session.commit()
    return report


def _fire(session: Session, rung_id: int, now: datetime) -> int | None:
    """Fire one rung; the number of messages queued, or None if another sweeper had it."""
    claimed = session.execute(
        update(Escalation)
        .where(Escalation.id == rung_id, Escalation.state == "pending")
        .values(state="fired", fired_at=now)
    )
    if claimed.rowcount != 1:
        return None
    rung = session.get(Escalation, rung_id)
    task = session.get(Task, rung.task_id)
    dossier = session.get(Dossier, rung.dossier_id)
    recipients = _recipients(session, rung.level, task)
    due = task.due_at.astimezone(VN_TZ).strftime("%H:%M ngày %d/%m/%Y") if task.due_at else "—"
    subject = f"[{LEVEL_LABELS.get(rung.level, rung.level)}] Hồ sơ {dossier.code}: {task.step_name}"
    body = (
        f"Bước '{task.step_name}' của hồ sơ {dossier.code} hạn xử lý {due}"
        + (f", đang do {task.assignee} xử lý." if task.assignee else ", chưa có người nhận xử lý.")
    )
    for officer in recipients:
        channel, address = ("email", officer.email) if officer.email else ("sms", officer.phone) if officer.phone else ("log", officer.username)
        notify.enqueue(
            session, channel=channel, recipient=address, subject=subject, body=body,
            event=f"escalation.{rung.level}", now=now, dossier_id=dossier.id,
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
            to_state=rung.level,
            details={"recipients": [o.username for o in recipients]},
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
