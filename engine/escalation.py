"""The deadline sweep: fire each due rung of the escalation ladders, once.

A step's ladder: a warning to the assignee before the step is due, then its
head of unit at the due time, the agency's leader a working day later, the
supervising body after two. The next rung of every open step lives on its
``tasks`` row (``escalation_level``, ``escalation_at``), so finding the due
steps is one indexed query over ``(state, escalation_at)`` that also brings
everything a message needs (step, assignee, agency, dossier code) — no
workflow is ever loaded.

A sweep fires one batch of due steps in set-based statements, whatever the
batch size: the rungs due for each step are worked out in Python (several
may be due at once; they fire in ladder order), every step is moved past
them by one compare-and-set ``UPDATE`` (on PostgreSQL one statement for the
batch, ``FROM unnest(…) … RETURNING``; on SQLite, a single writer, one per
step), the recipients are looked up once per agency and role, and the
``escalations`` rows, outbox messages (:func:`engine.notify.enqueue_many`)
and audit events are each written in one bulk ``INSERT``. A step another
sweeper has moved meanwhile fails its compare-and-set and is left alone.

All of it is one transaction (``FOR UPDATE SKIP LOCKED`` on the due rows on
PostgreSQL), so each rung fires exactly once even with several sweepers or a
crash mid-sweep. If the batch fails as a whole it is rolled back to a
savepoint and fired again step by step, each step in its own savepoint, so
one broken rung never stops the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, cast

from sqlalchemy import Integer, String, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql
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
    UTCDateTime,
)

__all__ = ["LEVEL_LABELS", "SweepReport", "sweep"]

log = logging.getLogger(__name__)

LEVEL_LABELS = {
    "warning": "Sắp đến hạn",
    "head_of_unit": "Đến hạn — báo lãnh đạo phòng",
    "leader": "Quá hạn — báo lãnh đạo cơ quan",
    "supervisor": "Quá hạn — báo cơ quan giám sát",
}

_TASKS = cast(Table, Task.__table__)
_ESCALATIONS = cast(Table, Escalation.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)
#: What a fired rung's messages are made of, as the compare-and-set leaves the step.
_CLAIMED = (
    _TASKS.c.id, _TASKS.c.dossier_id, _TASKS.c.step_id, _TASKS.c.step_name, _TASKS.c.assignee,
    _TASKS.c.role, _TASKS.c.agency_id, _TASKS.c.due_at,
)
#: Values per ``IN (…)`` list.
_CHUNK = 1000


@dataclass
class SweepReport:
    fired: int = 0
    messages: int = 0
    failed: int = 0


def sweep(sessions: Callable[[], Session], now: datetime, batch: int = 1000) -> SweepReport:
    """Fire every pending rung due at ``now`` (at most ``batch`` steps); return what was done."""
    report = SweepReport()
    with sessions() as session:
        query = (
            select(
                Task.id, Task.escalation_level, Task.escalation_at, Task.started_at, Task.due_at, Task.step_id,
                Task.step_name, Task.assignee, Task.role, Task.agency_id, Task.dossier_id,
                Dossier.code.label("dossier_code"), Dossier.procedure_version_id,
            )
            .join(Dossier, Dossier.id == Task.dossier_id)
            # While a dossier waits for the applicant its clock is stopped: nothing escalates.
            .where(Task.state.in_(TaskState.OPEN), Task.escalation_at <= now, Dossier.paused_at.is_(None))
            .order_by(Task.escalation_at, Task.id)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=Task, skip_locked=True, key_share=True)
        due = session.execute(query).all()
        if due:
            calendar = services.load_calendar(session)
            ladders = _Ladders(session)
            try:
                with session.begin_nested():
                    fired, sent, one_by_one = _fire_batch(session, due, ladders, now, calendar)
                report.fired += fired
                report.messages += sent
            except Exception:
                log.exception("the batch of %s due steps could not be fired at once; firing them one by one", len(due))
                one_by_one = list(due)
            for row in one_by_one:
                try:
                    with session.begin_nested():
                        fired, sent = _fire_due_rungs(session, row, ladders.of(row.procedure_version_id), now, calendar)
                    report.fired += fired
                    report.messages += sent
                except Exception:  # one broken rung must not stop the sweep
                    report.failed += 1
                    log.exception("escalation of task %s could not be fired", row.id)
        session.commit()
    return report


class _Ladders:
    """The escalation ladder of each procedure version, looked up once per sweep."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.known: dict[int, list[tuple[str, float]]] = {}

    def of(self, version_id: int) -> list[tuple[str, float]]:
        ladder = self.known.get(version_id)
        if ladder is None:
            ladder = services.ladder_of(services._version_runtime(self.session, version_id).meta)
            self.known[version_id] = ladder
        return ladder


@dataclass
class _Plan:
    """The rungs of one step due at the sweep's instant, and the rung it moves to."""

    row: Any
    rungs: list[tuple[str, datetime]]
    then: tuple[str | None, datetime | None]


def _plan(row: Any, ladder: list[tuple[str, float]], now: datetime, calendar: WorkingCalendar) -> _Plan:
    level, due = row.escalation_level, row.escalation_at
    rungs: list[tuple[str, datetime]] = []
    while level is not None and due is not None and due <= now:
        rungs.append((level, due))
        following = services.next_rung(calendar, ladder, row.started_at, row.due_at, level) if row.due_at else None
        level, due = following if following else (None, None)
    return _Plan(row, rungs, (level, due))


def _fire_batch(
    session: Session, due: Sequence[Any], ladders: _Ladders, now: datetime, calendar: WorkingCalendar
) -> tuple[int, int, list[Any]]:
    """Fire the due rungs of a batch of steps in bulk: ``(rungs fired, messages queued, steps left to fire one by one)``.

    A step whose rungs cannot be worked out (e.g. its procedure version is
    unreadable) is left to the step-by-step path, which records its failure.
    """
    plans: list[_Plan] = []
    one_by_one: list[Any] = []
    for row in due:
        try:
            plans.append(_plan(row, ladders.of(row.procedure_version_id), now, calendar))
        except Exception:  # logged and counted as failed by the step-by-step path
            one_by_one.append(row)
    plans = [plan for plan in plans if plan.rungs]
    claimed = _claim(session, plans)
    fired = [(plan, claimed[plan.row.id]) for plan in plans if plan.row.id in claimed]
    directory = _Directory(session, [(level, task) for plan, task in fired for level, _ in plan.rungs])
    escalations: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    for plan, task in fired:
        for level, at in plan.rungs:
            recipients = directory.recipients(level, task)
            escalations.append(
                {"task_id": task.id, "dossier_id": task.dossier_id, "level": level, "due_at": at, "state": "fired", "fired_at": now}
            )
            subject, body = _message(level, task, plan.row.dossier_code)
            for officer in recipients:
                channel, address = _address(officer)
                messages.append({
                    "channel": channel, "recipient": address, "subject": subject, "body": body,
                    "event": f"escalation.{level}", "dossier_id": task.dossier_id,
                })
            audits.append({
                "at": now, "actor": "system", "action": "task.escalate", "dossier_id": task.dossier_id,
                "task_id": task.id, "subject": task.step_id, "from_state": "pending", "to_state": level,
                "details": {"recipients": [o.username for o in recipients], "due": at.isoformat()},
            })
    sent = notify.enqueue_many(session, messages, now)
    if escalations:
        session.execute(insert(_ESCALATIONS), escalations)
        session.execute(insert(_AUDIT), audits)
    return len(escalations), sent, one_by_one


def _claim(session: Session, plans: list[_Plan]) -> dict[int, Any]:
    """Move each planned step past its due rungs with a compare-and-set on its
    current rung; the steps this sweep got, by id, as they now stand."""
    if not plans:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        claims = func.unnest(
            bindparam("ids", [p.row.id for p in plans], type_=postgresql.ARRAY(Integer)),
            bindparam("levels", [p.row.escalation_level for p in plans], type_=postgresql.ARRAY(String)),
            bindparam("ats", [p.row.escalation_at for p in plans], type_=postgresql.ARRAY(UTCDateTime())),
            bindparam("next_levels", [p.then[0] for p in plans], type_=postgresql.ARRAY(String)),
            bindparam("next_ats", [p.then[1] for p in plans], type_=postgresql.ARRAY(UTCDateTime())),
        ).table_valued("id", "level", "at", "next_level", "next_at").render_derived(name="claims")
        statement = (
            update(_TASKS)
            .where(
                _TASKS.c.id == claims.c.id, _TASKS.c.state.in_(TaskState.OPEN),
                _TASKS.c.escalation_level == claims.c.level, _TASKS.c.escalation_at == claims.c.at,
            )
            .values(escalation_level=claims.c.next_level, escalation_at=claims.c.next_at)
            .returning(*_CLAIMED)
        )
        return {row.id: row for row in session.execute(statement)}
    statement = (
        update(_TASKS)
        .where(
            _TASKS.c.id == bindparam("claim_id"), _TASKS.c.state.in_(TaskState.OPEN),
            _TASKS.c.escalation_level == bindparam("claim_level"), _TASKS.c.escalation_at == bindparam("claim_at"),
        )
        .values(escalation_level=bindparam("next_level"), escalation_at=bindparam("next_at"))
        .returning(*_CLAIMED)
    )
    claimed = {}
    for plan in plans:  # SQLite has one writer: the first UPDATE takes the write lock for the batch
        row = session.execute(statement, {
            "claim_id": plan.row.id, "claim_level": plan.row.escalation_level, "claim_at": plan.row.escalation_at,
            "next_level": plan.then[0], "next_at": plan.then[1],
        }).first()
        if row is not None:
            claimed[row.id] = row
    return claimed


def _message(level: str, task: Any, dossier_code: str) -> tuple[str, str]:
    """Subject and body of a rung's messages."""
    due_text = task.due_at.astimezone(VN_TZ).strftime("%H:%M ngày %d/%m/%Y") if task.due_at else "—"
    subject = f"[{LEVEL_LABELS.get(level, level)}] Hồ sơ {dossier_code}: {task.step_name}"
    body = (
        f"Bước '{task.step_name}' của hồ sơ {dossier_code} hạn xử lý {due_text}"
        + (f", đang do {task.assignee} xử lý." if task.assignee else ", chưa có người nhận xử lý.")
    )
    return subject, body


def _address(officer: Any) -> tuple[str, str]:
    """The channel and address an officer is told on: e-mail, else SMS, else the log."""
    return ("email", officer.email) if officer.email else ("sms", officer.phone) if officer.phone else ("log", officer.username)


@dataclass(frozen=True)
class _Person:
    id: int
    username: str
    email: str | None
    phone: str | None


class _Directory:
    """The recipients of many rungs, read in a few queries: officers by
    username, holders of a role at an agency, the chains of parent agencies.

    It answers as :func:`_recipients` does, in the same order (the holders
    of a role by username as the database orders them).
    """

    def __init__(self, session: Session, rungs: Iterable[tuple[str, Any]]) -> None:
        usernames: set[str] = set()
        pairs: set[tuple[int, str]] = set()
        chained: set[int] = set()
        for level, task in rungs:
            if task.agency_id is None:
                continue
            if level == "warning":
                if task.assignee:
                    usernames.add(task.assignee)
                else:
                    pairs.add((task.agency_id, task.role or "officer"))
            elif level in ("head_of_unit", "leader"):
                pairs.add((task.agency_id, level))
            else:
                chained.add(task.agency_id)
        self.parents = _parents(session, chained)
        self.chains: dict[int, list[int]] = {agency_id: self._chain(agency_id) for agency_id in chained}
        pairs.update((ancestor, "supervisor") for chain in self.chains.values() for ancestor in chain)
        self.by_username: dict[str, _Person] = {}
        names = sorted(usernames)
        for lo in range(0, len(names), _CHUNK):
            for row in session.execute(
                select(Officer.id, Officer.username, Officer.email, Officer.phone).where(Officer.username.in_(names[lo:lo + _CHUNK]))
            ):
                self.by_username[row.username] = _Person(row.id, row.username, row.email, row.phone)
        self.holding: dict[tuple[int, str], list[_Person]] = {}
        self.rank: dict[int, int] = {}
        if pairs:
            agencies = sorted({agency_id for agency_id, _ in pairs})
            roles = sorted({role for _, role in pairs})
            for lo in range(0, len(agencies), _CHUNK):
                for row in session.execute(
                    select(OfficerRole.agency_id, OfficerRole.role, Officer.id, Officer.username, Officer.email, Officer.phone)
                    .join(Officer, Officer.id == OfficerRole.officer_id)
                    .where(OfficerRole.agency_id.in_(agencies[lo:lo + _CHUNK]), OfficerRole.role.in_(roles), Officer.active.is_(True))
                    .order_by(Officer.username, Officer.id)
                ):
                    if (row.agency_id, row.role) in pairs:
                        self.rank.setdefault(row.id, len(self.rank))
                        self.holding.setdefault((row.agency_id, row.role), []).append(
                            _Person(row.id, row.username, row.email, row.phone)
                        )
            if len(agencies) > _CHUNK:  # the ranks of separate queries are not one order
                self.rank = {p.id: i for i, p in enumerate(sorted({p for ps in self.holding.values() for p in ps}, key=lambda p: p.username))}
        self.cache: dict[tuple[tuple[int, ...], str], list[_Person]] = {}

    def _chain(self, agency_id: int) -> list[int]:
        """The agency's ancestors, nearest first (as :func:`_recipients` walks them)."""
        chain: list[int] = []
        current: int | None = agency_id if agency_id in self.parents else None
        while current is not None and self.parents.get(current) is not None:
            parent = self.parents[current]
            if parent not in self.parents or parent in chain or parent == agency_id:
                break
            chain.append(parent)
            current = parent
        return chain

    def holders(self, agency_ids: Sequence[int], role: str) -> list[_Person]:
        key = (tuple(agency_ids), role)
        found = self.cache.get(key)
        if found is None:
            people = {p.id: p for agency_id in agency_ids for p in self.holding.get((agency_id, role), [])}
            found = sorted(people.values(), key=lambda p: self.rank[p.id])
            self.cache[key] = found
        return found

    def recipients(self, level: str, task: Any) -> list[_Person]:
        if task.agency_id is None:
            return []
        if level == "warning":
            if task.assignee:
                officer = self.by_username.get(task.assignee)
                return [officer] if officer else []
            return self.holders([task.agency_id], task.role or "officer")
        if level in ("head_of_unit", "leader"):
            return self.holders([task.agency_id], level)
        return self.holders(self.chains.get(task.agency_id, []), "supervisor")


def _parents(session: Session, agency_ids: set[int]) -> dict[int, int | None]:
    """The parent of each of these agencies and of all their ancestors (one query per tree level)."""
    parents: dict[int, int | None] = {}
    frontier = set(agency_ids)
    while frontier:
        ids = sorted(frontier)
        found = {}
        for lo in range(0, len(ids), _CHUNK):
            found.update(session.execute(select(Agency.id, Agency.parent_id).where(Agency.id.in_(ids[lo:lo + _CHUNK]))).all())
        parents.update(found)
        frontier = {parent for parent in found.values() if parent is not None and parent not in parents}
    return parents


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
    subject, body = _message(level, task, dossier.code)
    for officer in recipients:
        channel, address = _address(officer)
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
