"""Engine benchmark at scale: calendar, deadline sweep, inbox, HTTP and memory.

Run ``python -m engine.bench_scale [--quick] [--postgres URL]``: prints one
JSON object, then a readable table. Every figure is the median of repeated
runs (the number is given next to it), with its target and whether it is met.

Scenarios:

* ``calendar`` — due-date computations per second (working days, working
  hours, same day, and :func:`engine.services.due_after` over every unit),
  over starting instants spread across a year.
* ``sweep`` — :func:`engine.escalation.sweep` over a database of many open
  steps of which exactly a given number are newly overdue; every SQL
  statement is recorded, to show that none reads a workflow state.
* ``inbox`` — the first page of an officer's inbox
  (:func:`engine.services.inbox`) over the same database, with the query
  plan on PostgreSQL.
* ``http`` — concurrent clients completing steps and reading inboxes over
  HTTP under gunicorn, then a check in the database that no step was lost
  or completed twice.
* ``memory`` — resident memory of one web worker while it receives dossiers
  and completes their steps.

The database rows are bulk-inserted benchmark rows (``INSERT … SELECT
generate_series`` on PostgreSQL, ``executemany`` on SQLite) on a procedure
deployed through the engine; the dossiers served over HTTP are copies of one
dossier received through the engine, so their workflow state is real. On
PostgreSQL each run creates its own database ``motcua_scale_*`` next to the
one named by the URL and drops it at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from . import escalation, organisation, services
from .core.calendar import VN_TZ, WorkingCalendar
from .core.durations import Duration
from .persistence.db import make_engine, make_session_factory, migrate
from .persistence.models import (
    AuditEvent,
    Dossier,
    Escalation,
    OfficerRole,
    Officer,
    OutboxMessage,
    Task,
    TaskState,
)

__all__ = [
    "HANDLING_ROLES",
    "ScaleDatabase",
    "calendar_rate",
    "create_database",
    "http_load",
    "inbox_latency",
    "memory_curve",
    "prepare",
    "run",
    "scale_diagram",
    "sweep_timing",
    "table",
]

log = logging.getLogger(__name__)

#: The instant the database scenarios run at: Wednesday 4 March 2026, 10:00 in Hà Nội.
BENCH_NOW = datetime(2026, 3, 4, 10, 0, tzinfo=VN_TZ)
DEMO_PROVINCE = Path(__file__).resolve().parents[1] / "processes" / "demo" / "dong-nai.yaml"
DEMO_PASSWORD = "motcua-demo"
#: Roles whose holders get steps (the benchmark rows are spread over their (agency, role) pairs).
HANDLING_ROLES = ("receptionist", "officer", "head_of_unit", "leader")
#: The procedure of the benchmark: a commune officer handles it, the commune's leader signs.
PROCEDURE_CODE = "BENCH.SCALE"
COMMUNES = ("000.17.22.H19", "000.17.23.H19", "000.17.24.H19")
#: Accounts of each commune: receptionist, officer, leader.
COMMUNE_ACCOUNTS = {
    "000.17.22.H19": ("motcua.phuocan", "chuyenvien.phuocan", "lanhdao.phuocan"),
    "000.17.23.H19": ("motcua.longtho", "chuyenvien.longtho", "lanhdao.longtho"),
    "000.17.24.H19": ("motcua.daiphuoc", "chuyenvien.daiphuoc", "lanhdao.daiphuoc"),
}
#: The officer whose inbox is measured.
INBOX_OFFICER = "chuyenvien.phuocan"

#: Requests per second, all clients together, of the paced HTTP run: fifty
#: times a province's average (a million dossiers a year is about 4,000 a
#: working day; at some fifteen requests each, about 2 requests a second).
PACED_RATE = 100.0

TARGETS = {
    "calendar_per_s": (">=", 200_000),
    "sweep_s": ("<=", 1.0),
    "inbox_ms": ("<=", 20.0),
    "http_p99_ms": ("<=", 50.0),
    "http_errors": ("<=", 0),
    "memory_mb": ("<=", 150.0),
}


def _figure(name: str, value: float, unit: str, runs: int, **extra: Any) -> dict[str, Any]:
    """One measured figure with its target and whether it is met."""
    op, bound = TARGETS[name]
    met = value >= bound if op == ">=" else value <= bound
    return {"value": value, "unit": unit, "runs": runs, "target": f"{'≥' if op == '>=' else '≤'} {bound}", "met": met, **extra}


# --------------------------------------------------------------------------- calendar


def calendar_rate(operations: int, runs: int, seed: int = 7) -> dict[str, Any]:
    """Due-date computations per second, median of ``runs`` runs of ``operations`` each.

    The operations cycle through ``add_working_days`` (1–15 days),
    ``add_working_hours`` (4 h), ``due_same_day`` (cut-off 15:00) and
    :func:`services.due_after` for working days, working hours, calendar days
    and same day, each from a different instant of 2026 (minute resolution,
    inside and outside working hours, weekends and Tết included).
    """
    calendar = WorkingCalendar()
    rng = random.Random(seed)
    base = datetime(2026, 1, 1, tzinfo=VN_TZ)
    starts = [base + timedelta(minutes=rng.randrange(365 * 24 * 60)) for _ in range(10_007)]
    durations = [
        Duration(Decimal(3), "working_days"),
        Duration(Decimal("0.5"), "working_days"),
        Duration(Decimal(8), "working_hours"),
        Duration(Decimal(30), "calendar_days"),
        Duration(Decimal(0), "same_day"),
    ]
    cutoff = dtime(15, 0)
    add_days, add_hours, same_day, due_after = (
        calendar.add_working_days, calendar.add_working_hours, calendar.due_same_day, services.due_after,
    )

    def once(count: int) -> float:
        n_starts = len(starts)
        started = time.perf_counter()
        for i in range(count):
            start = starts[i % n_starts]
            kind = i & 7
            if kind < 2:
                add_days(start, 1 + i % 15)
            elif kind == 2:
                add_hours(start, 4.0)
            elif kind == 3:
                same_day(start, cutoff)
            else:
                due_after(calendar, start, durations[i % 5], "15:00")
        return count / (time.perf_counter() - started)

    once(min(operations, 20_000))  # warm-up: the calendar's tables for the year
    rates = [once(operations) for _ in range(runs)]
    return _figure("calendar_per_s", round(statistics.median(rates)), "computations/s", runs, operations_per_run=operations)


# --------------------------------------------------------------------------- database


_NS = 'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn"'


def _props(**values: str) -> str:
    inner = "".join(f'<camunda:property name="{k}" value="{v}"/>' for k, v in values.items())
    return f"<bpmn:extensionElements><camunda:properties>{inner}</camunda:properties></bpmn:extensionElements>"


def scale_diagram() -> bytes:
    """Two steps at the dossier's commune (officer, then leader) with an explicit escalation ladder."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions {_NS} id="benchscale" targetNamespace="bench">'
        '<bpmn:process id="BenchScale" name="Thủ tục đo tải" isExecutable="true">'
        + _props(code=PROCEDURE_CODE, level="commune", deadline="5 working days",
                 escalation="warning=-4h, head_of_unit=0h, leader=1d, supervisor=2d")
        + '<bpmn:laneSet id="ls">'
        f'<bpmn:lane id="lane_officer" name="Chuyên viên">{_props(role="officer", agency="home")}<bpmn:flowNodeRef>xu_ly</bpmn:flowNodeRef></bpmn:lane>'
        f'<bpmn:lane id="lane_leader" name="Lãnh đạo">{_props(role="leader", agency="home")}<bpmn:flowNodeRef>ky</bpmn:flowNodeRef></bpmn:lane>'
        "</bpmn:laneSet>"
        '<bpmn:startEvent id="start"/>'
        f'<bpmn:userTask id="xu_ly" name="Xử lý hồ sơ">{_props(allotment="3 working days")}</bpmn:userTask>'
        f'<bpmn:userTask id="ky" name="Ký duyệt">{_props(allotment="2 working days")}</bpmn:userTask>'
        '<bpmn:endEvent id="end"/>'
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="xu_ly"/>'
        '<bpmn:sequenceFlow id="f2" sourceRef="xu_ly" targetRef="ky"/>'
        '<bpmn:sequenceFlow id="f3" sourceRef="ky" targetRef="end"/>'
        "</bpmn:process></bpmn:definitions>"
    ).encode()


@dataclass
class ScaleDatabase:
    """A filled benchmark database and what the scenarios need to know of it."""

    engine: Engine
    sessions: sessionmaker[Session]
    version_id: int
    open_tasks: int
    overdue_ids: list[int]
    #: (agency id, role, agency code, a holder's username) pairs the rows are spread over.
    pairs: list[tuple[int, str, str, str]]
    #: Dossier id of the dossier received through the engine, per commune code.
    templates: dict[str, int] = field(default_factory=dict)
    fill_seconds: float = 0.0


@contextmanager
def create_database(url: str, prefix: str = "motcua_scale") -> Iterator[str]:
    """A new, empty PostgreSQL database next to the one ``url`` names; dropped on exit."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _load_province(session: Session, now: datetime, with_passwords: bool) -> None:
    data = organisation.parse_organisation(DEMO_PROVINCE.read_text(encoding="utf-8"), DEMO_PROVINCE.name)
    accounts = {name for trio in COMMUNE_ACCOUNTS.values() for name in trio}
    data["officers"] = [
        {k: v for k, v in officer.items() if k != "password" or (with_passwords and officer["username"] in accounts)}
        for officer in data["officers"]
    ]
    organisation.load_organisation(session, data, "bench", now)


def prepare(engine: Engine, open_tasks: int, overdue: int, now: datetime = BENCH_NOW, with_passwords: bool = False) -> ScaleDatabase:
    """Fill a migrated, empty database: the demo province, the benchmark
    procedure, one dossier per commune received through the engine, and
    ``open_tasks`` open steps (one per dossier) of which ``overdue`` are at an
    escalation rung due before ``now`` and the rest due later.

    ``with_passwords`` gives the commune accounts the demo password (for the
    HTTP scenarios).
    """
    started = time.perf_counter()
    sessions = make_session_factory(engine)
    with sessions() as session:
        _load_province(session, now, with_passwords)
        services.deploy(session, {"bench-scale.bpmn": scale_diagram()}, actor="bench", now=now)
        version_id = services.get_version(session, PROCEDURE_CODE).id
        templates = {}
        for commune in COMMUNES:
            record = services.start_dossier(
                session, PROCEDURE_CODE, {"ghi_chu": "hồ sơ mẫu"}, actor=COMMUNE_ACCOUNTS[commune][0], now=now,
                agency_code=commune, applicant={"name": "Nguyễn Văn Mẫu", "phone": None, "email": None},
            )
            templates[commune] = record.id
        rows = session.execute(
            select(OfficerRole.agency_id, OfficerRole.role, Officer.username)
            .join(Officer, Officer.id == OfficerRole.officer_id)
            .where(OfficerRole.role.in_(HANDLING_ROLES))
            .order_by(OfficerRole.agency_id, OfficerRole.role, Officer.username)
        ).all()
        codes = {a.id: a.code for a in organisation.agency_tree(session, fresh=True).nodes.values()}
        seen: set[tuple[int, str]] = set()
        pairs = []
        for agency_id, role, username in rows:
            if (agency_id, role) not in seen:
                seen.add((agency_id, role))
                pairs.append((agency_id, role, codes[agency_id], username))
        real_state = session.scalar(select(Dossier.workflow_state).where(Dossier.id == templates[COMMUNES[0]]))
    if engine.dialect.name == "postgresql":
        _fill_postgres(engine, open_tasks, version_id, pairs, now)
    else:
        _fill_sqlite(engine, open_tasks, version_id, pairs, now)
    overdue_ids = _make_overdue(engine, overdue, now, real_state)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE tasks"))
            conn.execute(text("VACUUM ANALYZE dossiers"))
            # The bulk fill is set-up, not workload: its dirty pages are written now rather than
            # by a checkpoint in the middle of a measurement (needs a superuser or pg_checkpoint).
            try:
                conn.execute(text("CHECKPOINT"))
            except DBAPIError:
                log.warning("CHECKPOINT refused; a checkpoint may run during the measurements")
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return ScaleDatabase(
        engine, sessions, version_id, open_tasks, overdue_ids, pairs, templates, round(time.perf_counter() - started, 1)
    )


_BULK_PREFIX = "SCALE-"


def _fill_postgres(engine: Engine, count: int, version_id: int, pairs: list[tuple[int, str, str, str]], now: datetime) -> None:
    params = {
        "n": count, "version": version_id, "now": now, "p": len(pairs),
        "agency_ids": [p[0] for p in pairs], "roles": [p[1] for p in pairs],
        "codes": [p[2] for p in pairs], "holders": [p[3] for p in pairs],
        "placeholder": '{"benchmark": true}',
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO dossiers (code, procedure_version_id, agency_code, home_agency_id, receiving_agency_id,
                    applicant_name, channel, supplement_requests, status, sub_status, data, workflow_state,
                    received_at, due_at, updated_at, revision)
                SELECT 'SCALE-' || g, :version, (CAST(:codes AS text[]))[1 + g % :p], (CAST(:agency_ids AS int[]))[1 + g % :p],
                    (CAST(:agency_ids AS int[]))[1 + g % :p], 'Người nộp ' || g, 'in_person', 0, 4, 'processing',
                    CAST('{}' AS json), :placeholder, CAST(:now AS timestamptz) - make_interval(days => g % 20, mins => g % 480),
                    CAST(:now AS timestamptz) + make_interval(days => 5 + g % 25), CAST(:now AS timestamptz), 1
                FROM generate_series(1, :n) AS g
                """
            ),
            params,
        )
        conn.execute(
            text(
                """
                INSERT INTO tasks (dossier_id, spiff_task_id, step_id, step_name, process_id, lane, role, agency, agency_id,
                    state, assignee, started_at, due_at, claimed_at, escalation_level, escalation_at)
                SELECT d.id, CAST(md5(d.id::text) AS uuid)::text, 'xu_ly', 'Xử lý hồ sơ', 'BenchScale', 'Chuyên viên',
                    (CAST(:roles AS text[]))[1 + d.k], (CAST(:codes AS text[]))[1 + d.k], (CAST(:agency_ids AS int[]))[1 + d.k],
                    CASE WHEN (d.g / :p) % 20 = 0 THEN 'claimed' ELSE 'ready' END,
                    CASE WHEN (d.g / :p) % 20 = 0 THEN (CAST(:holders AS text[]))[1 + d.k] END,
                    d.received_at, d.due, CASE WHEN (d.g / :p) % 20 = 0 THEN d.received_at END,
                    'warning', d.due - interval '4 hours'
                FROM (
                    SELECT id, received_at, g, g % :p AS k,
                        CAST(:now AS timestamptz) + make_interval(days => 1 + g % 30, mins => g % 480) AS due
                    FROM (SELECT id, received_at, CAST(substring(code from 7) AS int) AS g FROM dossiers WHERE code LIKE 'SCALE-%') s
                ) d
                """
            ),
            params,
        )


def _fill_sqlite(engine: Engine, count: int, version_id: int, pairs: list[tuple[int, str, str, str]], now: datetime) -> None:
    chunk = 20_000
    with engine.begin() as conn:
        first = (conn.scalar(select(func.max(Dossier.id))) or 0) + 1
        for lo in range(1, count + 1, chunk):
            dossier_rows, task_rows = [], []
            for g in range(lo, min(lo + chunk, count + 1)):
                agency_id, role, code, holder = pairs[g % len(pairs)]
                received = now - timedelta(days=g % 20, minutes=g % 480)
                due = now + timedelta(days=1 + g % 30, minutes=g % 480)
                dossier_id = first + g - 1
                claimed = (g // len(pairs)) % 20 == 0  # one step in 20 of every (agency, role) pair
                dossier_rows.append({
                    "id": dossier_id, "code": f"{_BULK_PREFIX}{g}", "procedure_version_id": version_id, "agency_code": code,
                    "home_agency_id": agency_id, "receiving_agency_id": agency_id, "applicant_name": f"Người nộp {g}",
                    "channel": "in_person", "supplement_requests": 0, "status": 4, "sub_status": "processing", "data": {},
                    "workflow_state": '{"benchmark": true}', "received_at": received, "due_at": now + timedelta(days=5 + g % 25),
                    "updated_at": now, "revision": 1,
                })
                task_rows.append({
                    "dossier_id": dossier_id, "spiff_task_id": str(uuid.UUID(int=dossier_id)), "step_id": "xu_ly",
                    "step_name": "Xử lý hồ sơ", "process_id": "BenchScale", "lane": "Chuyên viên", "role": role, "agency": code,
                    "agency_id": agency_id, "state": TaskState.CLAIMED if claimed else TaskState.READY,
                    "assignee": holder if claimed else None, "started_at": received, "due_at": due,
                    "claimed_at": received if claimed else None, "escalation_level": "warning",
                    "escalation_at": due - timedelta(hours=4),
                })
            conn.execute(insert(Dossier.__table__), dossier_rows)
            conn.execute(insert(Task.__table__), task_rows)


def _make_overdue(engine: Engine, overdue: int, now: datetime, real_state: str) -> list[int]:
    """Put ``overdue`` benchmark steps, spread over the table, at the ``head_of_unit`` rung due just before ``now``.

    Their dossiers get a real workflow state (the template's), so that a sweep
    reading it would pay for it.
    """
    with engine.begin() as conn:
        ids = list(conn.scalars(
            select(Task.id).join(Dossier, Dossier.id == Task.dossier_id).where(Dossier.code.like(f"{_BULK_PREFIX}%")).order_by(Task.id)
        ))
        if overdue > len(ids):
            raise ValueError(f"cannot make {overdue} of {len(ids)} steps overdue")
        step = len(ids) // overdue if overdue else 1
        chosen = ids[::step][:overdue]
        _reset_overdue(conn, chosen, now)
        for lo in range(0, len(chosen), 500):
            part = chosen[lo:lo + 500]
            conn.execute(
                Dossier.__table__.update()
                .where(Dossier.id.in_(select(Task.dossier_id).where(Task.id.in_(part))))
                .values(workflow_state=real_state)
            )
    return chosen


def _reset_overdue(conn: Any, ids: list[int], now: datetime) -> None:
    """Undo a sweep: the chosen steps back at ``head_of_unit`` due minutes before ``now``; no escalations nor messages."""
    for lo in range(0, len(ids), 500):
        part = ids[lo:lo + 500]
        for offset in range(60):
            due = now - timedelta(minutes=1 + offset)
            subset = [i for i in part if i % 60 == offset]
            if subset:
                conn.execute(
                    Task.__table__.update()
                    .where(Task.id.in_(subset))
                    .values(escalation_level="head_of_unit", escalation_at=due, due_at=due, started_at=due - timedelta(days=3))
                )
    conn.execute(Escalation.__table__.delete())
    conn.execute(OutboxMessage.__table__.delete())
    # The audit trail is append-only: its ``task.escalate`` rows are counted per run instead.


@contextmanager
def recorded_statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement sent through ``engine`` while the block runs."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def reads_workflow_state(statements: list[str]) -> list[str]:
    """The statements that name the ``workflow_state`` column."""
    return [s for s in statements if "workflow_state" in s.lower()]


# --------------------------------------------------------------------------- sweep


def _escalation_audits(db: ScaleDatabase) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "task.escalate")) or 0


def sweep_timing(db: ScaleDatabase, runs: int, now: datetime = BENCH_NOW) -> dict[str, Any]:
    """Median time of one sweep escalating the overdue steps (reset between runs; a small warm-up sweep first)."""
    times: list[float] = []
    fired: list[int] = []
    recorded: list[int] = []
    audited: list[int] = []
    state_reads: list[str] = []
    statements_per_run: list[int] = []
    for index in range(runs + 1):
        with db.engine.begin() as conn:
            _reset_overdue(conn, db.overdue_ids, now)
        if index == 0:  # warm-up on a few steps: version and calendar caches, prepared plans
            escalation.sweep(db.sessions, now, batch=10)
            continue
        audited_before = _escalation_audits(db)
        with recorded_statements(db.engine) as statements:
            started = time.perf_counter()
            report = escalation.sweep(db.sessions, now)
            elapsed = time.perf_counter() - started
        audited.append(_escalation_audits(db) - audited_before)
        with db.sessions() as session:
            rows = session.scalar(select(func.count()).select_from(Escalation))
            pending = session.scalar(
                select(func.count()).select_from(Task).where(Task.state.in_(TaskState.OPEN), Task.escalation_at <= now)
            )
        times.append(elapsed)
        fired.append(report.fired)
        recorded.append(rows)
        statements_per_run.append(len(statements))
        state_reads.extend(reads_workflow_state(statements))
        if pending:
            raise AssertionError(f"{pending} overdue steps were left after the sweep")
    expected = len(db.overdue_ids)
    return _figure(
        "sweep_s", round(statistics.median(times), 3), "s", runs,
        backend=db.engine.dialect.name,
        open_tasks=db.open_tasks,
        overdue=expected,
        fired_per_run=fired,
        escalations_recorded_per_run=recorded,
        audited_per_run=audited,
        exactly_overdue_escalated=all(n == expected for n in fired + recorded + audited),
        statements_per_run=int(statistics.median(statements_per_run)),
        reads_workflow_state=bool(state_reads),
        workflow_state_statements=sorted(set(s.split(" FROM ")[0][:160] for s in state_reads))[:3],
        fill_s=db.fill_seconds,
    )


# --------------------------------------------------------------------------- inbox


def inbox_latency(db: ScaleDatabase, calls: int, username: str = INBOX_OFFICER) -> dict[str, Any]:
    """Median time of the first page of ``username``'s inbox, and (PostgreSQL) the query plans."""
    times: list[float] = []
    sizes: tuple[int, int] = (0, 0)
    with db.sessions() as session:
        for index in range(calls + 3):
            started = time.perf_counter()
            page = services.inbox(session, username)
            elapsed = time.perf_counter() - started
            session.rollback()
            if index >= 3:  # the first calls warm the pool and plan caches
                times.append(elapsed)
            sizes = (len(page.mine), len(page.queue))
        grants = organisation.officer_agencies(session, username)
        held = session.scalar(
            select(func.count()).select_from(Task).where(
                Task.state == TaskState.READY, Task.agency_id.in_([a for a, _ in grants]), Task.role.in_([r for _, r in grants])
            )
        )
    times.sort()
    figure = _figure(
        "inbox_ms", round(statistics.median(times) * 1000, 2), "ms", calls,
        backend=db.engine.dialect.name, open_tasks=db.open_tasks, officer=username,
        p90_ms=round(times[int(len(times) * 0.9) - 1] * 1000, 2), page_mine=sizes[0], page_queue=sizes[1],
        queue_size=held,
    )
    if db.engine.dialect.name == "postgresql":
        figure["plans"] = explain_inbox(db, username)
    return figure


def explain_inbox(db: ScaleDatabase, username: str) -> list[dict[str, Any]]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of each query of the inbox, as sent by the engine."""
    captured: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if "FROM tasks" in statement:
            captured.append((statement, params))

    with db.sessions() as session:
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            services.inbox(session, username)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        session.rollback()
    plans = []
    with db.engine.connect() as conn:
        for statement, params in captured:
            lines = [row[0] for row in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)]
            plan = "\n".join(lines)
            plans.append({
                "query": "mine" if "assignee" in statement.split("WHERE", 1)[-1] else "queue",
                "uses_index": any(k in plan for k in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")),
                "seq_scan_on_tasks": "Seq Scan on tasks" in plan,
                "sorts": "Sort" in plan,
                "plan": lines,
            })
    return plans


# --------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn(url: str, workers: int, threads: int, folder: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``api.app:create_app()`` under gunicorn (gthread workers) on 127.0.0.1: ``(port, master process)``."""
    port = _free_port()
    env = {**os.environ, "MOTCUA_DATABASE_URL": url, "MOTCUA_INSTANCE_PATH": str(folder)}
    log = open(folder / f"gunicorn-{port}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
         "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning", "api.app:create_app()"],
        env=env, cwd=str(Path(__file__).resolve().parents[1]), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = _request(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start; see {folder / f'gunicorn-{port}.log'}")
            time.sleep(0.2)
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (http.client.HTTPException, OSError):
        conn.close()
        raise
    if response.getheader("Connection", "").lower() == "close":
        conn.close()
    return response.status, (json.loads(data) if data and data[:1] in (b"{", b"[") else data)


def _tokens(db: ScaleDatabase, usernames: list[str]) -> dict[str, str]:
    from . import auth

    tokens = {}
    with db.sessions() as session:
        for name in usernames:
            tokens[name], _ = auth.login(session, name, DEMO_PASSWORD, datetime.now(VN_TZ))
    return tokens


_HTTP_PREFIX = "HTTP-"


def clone_dossiers(db: ScaleDatabase, per_commune: int, label: str = "") -> dict[str, list[int]]:
    """``per_commune`` copies of each commune's template dossier (same workflow state, its open step copied): step ids per commune.

    Their codes start with ``HTTP-<label>``; each run of the HTTP scenario uses its own label.
    """
    dossier_cols = [c.name for c in Dossier.__table__.columns if c.name not in ("id", "code")]
    task_cols = [c.name for c in Task.__table__.columns if c.name not in ("id", "dossier_id")]
    out: dict[str, list[int]] = {}
    with db.engine.begin() as conn:
        for n, commune in enumerate(COMMUNES):
            template = db.templates[commune]
            prefix = f"{_HTTP_PREFIX}{label}{n}-"
            if db.engine.dialect.name == "postgresql":
                cols = ", ".join(dossier_cols)
                conn.execute(text(
                    f"INSERT INTO dossiers (code, {cols}) SELECT :prefix || g, {cols} FROM dossiers, generate_series(1, :n) g WHERE id = :t"
                ), {"prefix": prefix, "n": per_commune, "t": template})
                tcols = ", ".join(task_cols)
                conn.execute(text(
                    f"INSERT INTO tasks (dossier_id, {tcols}) SELECT d.id, {', '.join('t.' + c for c in task_cols)} "
                    "FROM dossiers d, tasks t WHERE d.code LIKE :like AND t.dossier_id = :t AND t.state = 'ready'"
                ), {"like": prefix + "%", "t": template})
            else:
                row = conn.execute(select(Dossier.__table__).where(Dossier.id == template)).mappings().one()
                task = conn.execute(
                    select(Task.__table__).where(Task.dossier_id == template, Task.state == TaskState.READY)
                ).mappings().one()
                first = (conn.scalar(select(func.max(Dossier.id))) or 0) + 1
                conn.execute(insert(Dossier.__table__), [
                    {**{c: row[c] for c in dossier_cols}, "id": first + g, "code": f"{prefix}{g + 1}"} for g in range(per_commune)
                ])
                conn.execute(insert(Task.__table__), [
                    {**{c: task[c] for c in task_cols}, "dossier_id": first + g} for g in range(per_commune)
                ])
            out[commune] = list(conn.scalars(
                select(Task.id).join(Dossier, Dossier.id == Task.dossier_id).where(Dossier.code.like(prefix + "%")).order_by(Task.id)
            ))
    return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def http_load(
    db: ScaleDatabase, url: str, seconds: float, clients: int = 16, workers: int = 3, threads: int = 4,
    per_commune: int | None = None, folder: Path | None = None, warmup: float = 3.0, rate: float | None = None,
    label: str = "",
) -> dict[str, Any]:
    """``clients`` threads for ``seconds`` against gunicorn: each reads its officer's inbox, then completes one of its own steps, in turn.

    Without ``rate`` every client sends its next request as soon as the last
    is answered (closed loop, saturation: latency is then ``clients /
    throughput`` by Little's law). With ``rate`` (requests per second for all
    clients together) each client follows a fixed schedule, and a request's
    latency counts from its scheduled time, so time spent behind schedule is
    counted too (no coordinated omission).

    A ``warmup`` of the same load comes first (workers load the procedure and
    fill their caches); its requests are not timed but are checked like the others.

    Afterwards the database is checked: every step a client saw completed is
    completed once, with one ``task.complete`` audit row, and every copied
    dossier has exactly its one expected open step.
    """
    per_commune = per_commune or max(50, int((seconds + warmup) * (rate or 400) / len(COMMUNES)))
    steps = clone_dossiers(db, per_commune, label)
    officers = [COMMUNE_ACCOUNTS[c][1] for c in COMMUNES]
    tokens = _tokens(db, officers)
    # Client i works for commune i % 3 on its own share of that commune's steps.
    shares: list[tuple[str, list[int], int]] = []
    for i in range(clients):
        commune = COMMUNES[i % len(COMMUNES)]
        peers = [j for j in range(clients) if j % len(COMMUNES) == i % len(COMMUNES)]
        shares.append((COMMUNE_ACCOUNTS[commune][1], steps[commune][peers.index(i)::len(peers)], i))
    latencies: dict[str, list[float]] = {"inbox": [], "complete": []}
    errors: list[str] = []
    completed_ok: list[int] = []
    attempted: list[int] = []
    ran_out: list[tuple[int, float]] = []  # (client, seconds into the measurement) when it had no step left
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp, gunicorn(url, workers, threads, folder or Path(tmp)) as (port, _process):
        start_at = time.monotonic() + 0.5
        measure_from = start_at + warmup
        stop_at = measure_from + seconds

        def client(username: str, mine: list[int], index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            token = tokens[username]
            todo = iter(mine)
            local: dict[str, list[float]] = {"inbox": [], "complete": []}
            ok, tried, errs = [], [], []
            interval = clients / rate if rate else 0.0
            scheduled = start_at + index * interval / clients  # clients staggered over one interval
            while time.monotonic() < start_at:
                time.sleep(0.01)
            turn = 0
            while time.monotonic() < stop_at:
                if rate:
                    ahead = scheduled - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                task_id = None
                if turn % 2:
                    task_id = next(todo, None)
                    if task_id is None:
                        with lock:
                            if not ran_out or ran_out[-1][0] != index:
                                ran_out.append((index, round(time.monotonic() - measure_from, 1)))
                        turn += 1
                        continue
                kind = "complete" if task_id else "inbox"
                began = scheduled if rate else time.monotonic()
                scheduled += interval
                try:
                    if task_id:
                        tried.append(task_id)
                        status, body = _request(conn, "POST", f"/api/v1/tasks/{task_id}/complete", {"data": {"y_kien": "Đồng ý"}}, token)
                    else:
                        status, body = _request(conn, "GET", "/api/v1/tasks/inbox?page_size=20", None, token)
                except (http.client.HTTPException, OSError) as err:
                    status, body = 0, str(err)
                if began >= measure_from:
                    local[kind].append(time.monotonic() - began)
                if status == 200:
                    if task_id:
                        ok.append(task_id)
                else:
                    errs.append(f"{kind} {status}: {str(body)[:200]}")
                turn += 1
            conn.close()
            with lock:
                for key in local:
                    latencies[key].extend(local[key])
                completed_ok.extend(ok)
                attempted.extend(tried)
                errors.extend(errs)

        pool = [threading.Thread(target=client, args=share, daemon=True) for share in shares]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(seconds + 120)
    every = latencies["inbox"] + latencies["complete"]
    check = check_consistency(db, completed_ok, attempted, label)
    requests = len(every)
    return {
        "p99_ms": _figure("http_p99_ms", round(_percentile(every, 0.99) * 1000, 1), "ms", 1),
        "errors": _figure("http_errors", len(errors), "requests", 1, first=errors[:3]),
        "requests": requests,
        "throughput_per_s": round(requests / seconds, 1),
        "completes_per_s": round(len(latencies["complete"]) / seconds, 1),
        "p50_ms": round(_percentile(every, 0.5) * 1000, 1),
        "inbox_p50_ms": round(_percentile(latencies["inbox"], 0.5) * 1000, 1),
        "inbox_p99_ms": round(_percentile(latencies["inbox"], 0.99) * 1000, 1),
        "complete_p50_ms": round(_percentile(latencies["complete"], 0.5) * 1000, 1),
        "complete_p99_ms": round(_percentile(latencies["complete"], 0.99) * 1000, 1),
        "mode": f"paced at {rate:g} requests/s in all" if rate else "closed loop (saturation)",
        "clients": clients, "seconds": seconds, "warmup_s": warmup, "workers": workers, "threads_per_worker": threads, "worker_class": "gthread",
        "clients_out_of_steps": len({client for client, _ in ran_out}),
        "first_out_of_steps_at_s": min((at for _, at in ran_out), default=None),
        "consistency": check,
        "consistent": check["lost"] == 0 and check["doubled"] == 0 and check["inconsistent_dossiers"] == 0
        and check["audit_completes"] == check["completed_steps"],
    }


def check_consistency(db: ScaleDatabase, completed_ok: list[int], attempted: list[int], label: str = "") -> dict[str, int]:
    """Count lost and doubled steps among the copied dossiers of the HTTP run ``label``."""
    with db.sessions() as session:
        rows = session.execute(
            select(Task.id, Task.dossier_id, Task.step_id, Task.state)
            .join(Dossier, Dossier.id == Task.dossier_id)
            .where(Dossier.code.like(f"{_HTTP_PREFIX}{label}%"))
        ).all()
        audits = session.execute(
            select(AuditEvent.task_id, func.count())
            .join(Dossier, Dossier.id == AuditEvent.dossier_id)
            .where(Dossier.code.like(f"{_HTTP_PREFIX}{label}%"), AuditEvent.action == "task.complete")
            .group_by(AuditEvent.task_id)
        ).all()
    completed = {r.id for r in rows if r.state == TaskState.COMPLETED}
    per_dossier: dict[int, list[Any]] = {}
    for r in rows:
        per_dossier.setdefault(r.dossier_id, []).append(r)
    inconsistent = 0
    for tasks in per_dossier.values():
        first_done = any(t.step_id == "xu_ly" and t.state == TaskState.COMPLETED for t in tasks)
        open_steps = [t.step_id for t in tasks if t.state in TaskState.OPEN]
        if open_steps != (["ky"] if first_done else ["xu_ly"]):
            inconsistent += 1
    return {
        "completed_steps": len(completed),
        "client_completed": len(completed_ok),
        "audit_completes": sum(n for _, n in audits),
        "lost": len(set(completed_ok) - completed),
        "unexplained": len(completed - set(attempted)),
        "doubled": sum(1 for _, n in audits if n > 1) + (len(completed_ok) - len(set(completed_ok))),
        "inconsistent_dossiers": inconsistent,
    }


# --------------------------------------------------------------------------- memory


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


def _workers(master: int) -> list[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def memory_curve(db: ScaleDatabase, url: str, dossiers: int, clients: int = 4, folder: Path | None = None) -> dict[str, Any]:
    """RSS of the only web worker after it received ``dossiers`` dossiers and completed their two steps over HTTP."""
    marks = sorted({0, dossiers // 10, dossiers // 2, dossiers})
    accounts = [name for trio in COMMUNE_ACCOUNTS.values() for name in trio]
    tokens = _tokens(db, accounts)
    curve: dict[str, float] = {}
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp, gunicorn(url, 1, clients, folder or Path(tmp)) as (port, process):
        deadline = time.monotonic() + 30
        while not (workers := _workers(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        [worker] = workers
        curve["0"] = _rss_mb(worker)
        started = time.perf_counter()
        for lo, hi in zip(marks, marks[1:]):
            counter = iter(range(lo, hi))

            def client(counter: Iterator[int]) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                for n in counter:  # shared by the client threads: each number is taken once
                    commune = COMMUNES[n % len(COMMUNES)]
                    desk, officer, leader = COMMUNE_ACCOUNTS[commune]
                    try:
                        status, body = _request(conn, "POST", "/api/v1/dossiers", {
                            "procedure_code": PROCEDURE_CODE, "agency_code": commune,
                            "applicant": {"name": f"Người dân {n}"}, "data": {"so_thu_tu": n},
                        }, tokens[desk])
                        for who in (officer, leader):
                            if status not in (200, 201):
                                break
                            [step] = body["open_tasks"]
                            status, body = _request(conn, "POST", f"/api/v1/tasks/{step['id']}/complete", {"data": {}}, tokens[who])
                        if status not in (200, 201) or body.get("status") != services.DossierStatus.PROCESSED:
                            errors.append(f"{status}: {str(body)[:200]}")
                    except (http.client.HTTPException, OSError, KeyError, ValueError) as err:
                        errors.append(str(err))
                    with lock:
                        done[0] += 1
                conn.close()

            pool = [threading.Thread(target=client, args=(counter,), daemon=True) for _ in range(clients)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            curve[str(hi)] = _rss_mb(worker)
        elapsed = time.perf_counter() - started
    with db.sessions() as session:
        processed = session.scalar(
            select(func.count()).select_from(Dossier).where(
                Dossier.procedure_version_id == db.version_id, Dossier.status == services.DossierStatus.PROCESSED
            )
        )
    return _figure(
        "memory_mb", curve[str(dossiers)], "MB", 1,
        curve_mb=curve, dossiers=dossiers, processed_in_database=processed, requests_per_s=round(3 * dossiers / elapsed, 1),
        errors=len(errors), first_errors=errors[:3], worker_threads=clients,
    )


# --------------------------------------------------------------------------- run


def _sqlite_database(folder: Path) -> Engine:
    engine = make_engine(f"sqlite:///{folder / f'scale-{uuid.uuid4().hex[:8]}.sqlite3'}")
    migrate(engine)
    return engine


def run(quick: bool, postgres_url: str | None, sqlite_dir: Path | None = None) -> dict[str, Any]:
    """Run every scenario and return JSON-ready figures.

    Without ``postgres_url`` the database scenarios run on SQLite only and the
    HTTP and memory scenarios are skipped (they need PostgreSQL's concurrency).
    """
    sizes = {
        "calendar_ops": 50_000 if quick else 400_000, "calendar_runs": 3 if quick else 7,
        "pg_tasks": 100_000 if quick else 1_000_000, "sqlite_tasks": 20_000 if quick else 200_000,
        "pg_overdue": 1_000, "sqlite_overdue": 100 if quick else 1_000,
        "pg_sweep_runs": 1 if quick else 5, "sqlite_sweep_runs": 3, "inbox_calls": 30 if quick else 50,
        "http_seconds": 15.0 if quick else 60.0, "http_warmup": 2.0 if quick else 5.0,
        "memory_dossiers": 1_000 if quick else 10_000,
    }
    load = os.getloadavg()
    figures: dict[str, Any] = {
        "quick": quick, "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load],
        "started_at": datetime.now(VN_TZ).isoformat(timespec="seconds"),
    }
    figures["calendar"] = calendar_rate(sizes["calendar_ops"], sizes["calendar_runs"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(sqlite_dir) if sqlite_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        sqlite_engine = _sqlite_database(folder)
        try:
            db = prepare(sqlite_engine, sizes["sqlite_tasks"], sizes["sqlite_overdue"])
            figures["sweep_sqlite"] = sweep_timing(db, sizes["sqlite_sweep_runs"])
            figures["inbox_sqlite"] = inbox_latency(db, sizes["inbox_calls"])
        finally:
            sqlite_engine.dispose()
        if postgres_url:
            with create_database(postgres_url) as url:
                engine = make_engine(url)
                try:
                    migrate(engine)
                    db = prepare(engine, sizes["pg_tasks"], sizes["pg_overdue"], with_passwords=True)
                    figures["sweep_postgres"] = sweep_timing(db, sizes["pg_sweep_runs"])
                    figures["inbox_postgres"] = inbox_latency(db, sizes["inbox_calls"])
                    figures["http_postgres"] = http_load(
                        db, url, sizes["http_seconds"], folder=folder, warmup=sizes["http_warmup"], label="s",
                    )
                    figures["http_paced_postgres"] = http_load(
                        db, url, sizes["http_seconds"], folder=folder, warmup=sizes["http_warmup"], rate=PACED_RATE, label="p",
                    )
                    figures["memory_postgres"] = memory_curve(db, url, sizes["memory_dossiers"], folder=folder)
                    with engine.connect() as conn:
                        figures["postgres_settings"] = {
                            name: conn.execute(text(f"SHOW {name}")).scalar()
                            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
                        }
                finally:
                    engine.dispose()
    figures["finished_at"] = datetime.now(VN_TZ).isoformat(timespec="seconds")
    figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return figures


def table(figures: dict[str, Any]) -> str:
    """The figures as a readable table: one line per measured figure, then the details."""
    lines = [f"{'scenario':<34} {'median':>12}  {'unit':<16} {'runs':>4}  {'target':<12} met"]

    def row(name: str, fig: dict[str, Any]) -> None:
        lines.append(
            f"{name:<34} {fig['value']:>12}  {fig['unit']:<16} {fig['runs']:>4}  {fig['target']:<12} {'yes' if fig['met'] else 'NO'}"
        )

    details: list[str] = []
    for key, value in figures.items():
        if isinstance(value, dict) and "target" in value:
            row(key, value)
            details.extend(_details(key, value))
        elif isinstance(value, dict) and any(isinstance(v, dict) and "target" in v for v in value.values()):
            for sub, sub_value in value.items():
                if isinstance(sub_value, dict) and "target" in sub_value:
                    row(f"{key}.{sub}", sub_value)
                    details.extend(_details(f"{key}.{sub}", sub_value))
                else:
                    details.extend(_details(key, {sub: sub_value}))
        elif isinstance(value, dict):
            details.extend(_details(key, value))
        else:
            details.append(f"{key:<40} {value}")
    return "\n".join(lines + [""] + details)


def _details(prefix: str, values: dict[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        if key in ("value", "unit", "runs", "target", "met"):
            continue
        if key == "plans":
            for plan in value:
                out.append(f"{prefix}.plan[{plan['query']}]  index={plan['uses_index']} seq_scan={plan['seq_scan_on_tasks']} sort={plan['sorts']}")
                out.extend(f"    {line}" for line in plan["plan"])
            continue
        if isinstance(value, dict):
            out.extend(_details(f"{prefix}.{key}", value))
            continue
        out.append(f"{prefix + '.' + key:<40} {value}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.bench_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL server to create the benchmark databases on")
    parser.add_argument("--sqlite-dir", metavar="DIR", type=Path, help="folder for the SQLite database (default: a temporary one)")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick, postgres_url=args.postgres, sqlite_dir=args.sqlite_dir)
    print(json.dumps(figures, ensure_ascii=False, default=str))
    print()
    print(table(figures))


if __name__ == "__main__":
    main()
