"""A bounded soak of the whole product: two web processes on loopback sharing one
PostgreSQL, with two deadline sweepers and two outbox senders (the first server's
scheduler and a separate worker), clients driving every kind of work over HTTP
through both (engine.soak) — then every invariant checked directly in PostgreSQL:
every dossier consistent, every escalation and notification exactly once.

``MOTCUA_SOAK_SECONDS`` sets the length of the traffic (default 150).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine import escalation, services, soak
from engine.core.calendar import VN_TZ
from engine.core.durations import Duration
from engine.persistence.models import (
    AuditEvent,
    Dossier,
    DossierCounter,
    Escalation,
    OutboxMessage,
    ProcedureVersion,
    Rating,
    Task,
    TaskState,
)

from .conftest import _postgres_engine

ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("MOTCUA_SOAK_SECONDS", "150"))
PASSWORD = "motcua-demo"
#: Seconds between two passes of the server's outbox sender during the soak.
OUTBOX_INTERVAL = 1
#: How long the outbox may take to drain once the traffic stops.
DRAIN_SECONDS = 60.0
#: Seconds between two deadline sweeps of the separate worker.
SWEEP_SECONDS = 5
#: Steps are due hours after they start, so a sweep as of the wall clock fires
#: nothing during a short soak; a sweeper in this process also sweeps as of a
#: week ahead, every few seconds, so that rungs fire while the traffic runs.
AHEAD = timedelta(days=7)
AHEAD_SWEEP_SECONDS = 4.0

ENDED = (3, 7, 8, 9, 10)  # refused, withdrawn, stopped, processed, returned: no open step
ACTIVE = (2, 4)  # received, processing: at least one open step
PAUSED = (5, 6)  # supplement, financial obligation: paused_at set
CODE = re.compile(r"^(?P<desk>.+)-(?P<day>\d{6})-(?P<number>\d{4})$")
LOG_FAILURE = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback")


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    yield from _postgres_engine()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, server: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the server did not answer /healthz within {timeout} s:\n{log.read_text(errors='replace')}")


def _wait_drained(engine: Engine, timeout: float) -> None:
    """Wait until no outbox message is due (pending or sending with its time come)."""
    deadline = time.monotonic() + timeout
    with Session(engine) as session:
        while time.monotonic() < deadline:
            now = datetime.now(timezone.utc)
            due = session.scalar(
                select(func.count()).select_from(OutboxMessage)
                .where(OutboxMessage.state.in_(("pending", "sending")), OutboxMessage.next_attempt_at <= now)
            )
            session.rollback()
            if not due:
                return
            time.sleep(0.5)


class _SweeperAhead(threading.Thread):
    """Deadline sweeps as of ``AHEAD`` from now, every few seconds, until stopped."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="sweeper-ahead", daemon=True)
        self.sessions = sessionmaker(engine)
        self.halt = threading.Event()
        self.fired = self.failed = self.sweeps = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.wait(AHEAD_SWEEP_SECONDS):
            try:
                report = escalation.sweep(self.sessions, datetime.now(VN_TZ) + AHEAD)
            except Exception as err:  # reported as a broken invariant, not raised in a thread
                self.errors.append(f"{type(err).__name__}: {err}")
                continue
            self.sweeps += 1
            self.fired += report.fired
            self.failed += report.failed


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def invariant_problems(engine: Engine, report: soak.SoakReport, stopped_at: datetime, server_log: str) -> list[str]:
    """Every broken invariant of the database after a soak, one line each."""
    problems: list[str] = []

    # ---- the traffic itself
    problems += [f"HTTP: {line}" for line in soak.summary(report)]
    events = report.events
    for name, least in (("received", 10), ("claimed", 10), ("completed", 20), ("results_returned", 1)):
        if events[name] < least:
            problems.append(f"the soak did too little: {name} = {events[name]} (< {least})")

    with Session(engine) as session:
        dossiers = session.scalars(select(Dossier).order_by(Dossier.id)).all()
        tasks = session.scalars(select(Task).order_by(Task.id)).all()
        by_dossier: dict[int, list[Task]] = defaultdict(list)
        for task in tasks:
            by_dossier[task.dossier_id].append(task)
        statuses = Counter(d.status for d in dossiers)
        print("dossiers by status:", dict(sorted(statuses.items())))

        # ---- nothing lost or doubled between what the clients saw and what was stored
        if sorted(d.code for d in dossiers) != sorted(report.dossiers):
            problems.append(f"dossiers stored {len(dossiers)} ≠ received over HTTP {len(report.dossiers)}")
        completed = [t for t in tasks if t.state == TaskState.COMPLETED]
        if len(completed) != events["completed"]:
            problems.append(f"completed steps stored {len(completed)} ≠ completions answered 200 {events['completed']}")
        claims = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "task.claim"))
        if claims != events["claimed"]:
            problems.append(f"task.claim events {claims} ≠ claims answered 200 {events['claimed']}")
        if statuses[10] != events["results_returned"]:
            problems.append(f"returned dossiers {statuses[10]} ≠ results returned over HTTP {events['results_returned']}")
        if statuses[7] != events["withdrawn"]:
            problems.append(f"withdrawn dossiers {statuses[7]} ≠ withdrawals answered 200 {events['withdrawn']}")
        ratings = session.scalar(select(func.count()).select_from(Rating))
        if ratings != events["ratings"]:
            problems.append(f"ratings stored {ratings} ≠ ratings answered 201 {events['ratings']}")

        # ---- every dossier's status agrees with its steps
        for d in dossiers:
            open_steps = [t for t in by_dossier[d.id] if t.state in TaskState.OPEN]
            if d.status in ENDED and open_steps:
                problems.append(f"{d.code}: status {d.status} with open steps {[t.step_id for t in open_steps]}")
            if d.status in ACTIVE and (not open_steps or d.paused_at is not None):
                problems.append(f"{d.code}: status {d.status}, {len(open_steps)} open steps, paused_at {d.paused_at}")
            if d.status in PAUSED and d.paused_at is None:
                problems.append(f"{d.code}: status {d.status} (paused) without paused_at")
            if d.status in (9, 10) and d.finished_at is None:
                problems.append(f"{d.code}: status {d.status} without finished_at")
            if d.status == 10 and d.returned_at is None:
                problems.append(f"{d.code}: returned without returned_at")
            spiff_open = Counter(t.spiff_task_id for t in open_steps)
            problems += [f"{d.code}: workflow task {k} open {n} times" for k, n in spiff_open.items() if n > 1]

        # ---- each step completed at most once; every task.complete event matches exactly one completed step
        completions = session.execute(
            select(AuditEvent.task_id, AuditEvent.actor).where(AuditEvent.action == "task.complete")
        ).all()
        per_task = Counter(task_id for task_id, _actor in completions)
        by_id = {t.id: t for t in tasks}
        for task_id, count in per_task.items():
            task = by_id.get(task_id)
            if count != 1:
                problems.append(f"task {task_id}: {count} task.complete events")
            if task is None or task.state != TaskState.COMPLETED:
                problems.append(f"task.complete event for task {task_id}, which is {task.state if task else 'missing'}")
        for task in completed:
            if per_task[task.id] != 1:
                problems.append(f"completed task {task.id} ({task.step_id}) has {per_task[task.id]} task.complete events")
            if task.completed_at is None or not task.completed_by:
                problems.append(f"completed task {task.id} without completed_at/completed_by")
        for task_id, actor in completions:
            if task_id in by_id and by_id[task_id].completed_by != actor:
                problems.append(f"task {task_id} completed by {by_id[task_id].completed_by} but audited for {actor}")

        # ---- due dates agree with the calendar (dossiers never paused and never given a new appointment)
        calendar = services.load_calendar(session, fresh=True)
        metas = dict(session.execute(select(ProcedureVersion.id, ProcedureVersion.meta)).all())
        paused_ids = set(session.scalars(select(AuditEvent.dossier_id).where(AuditEvent.action == "dossier.pause")))
        checked = 0
        for d in dossiers:
            if d.id in paused_ids or d.new_appointment_at is not None:
                continue
            meta = metas[d.procedure_version_id]
            deadline = Duration(Decimal(meta["deadline_amount"]), meta["deadline_unit"])
            expected = services.due_after(calendar, d.received_at, deadline, meta.get("cutoff"))
            if d.due_at != expected:
                problems.append(f"{d.code}: due {d.due_at}, the calendar says {expected} (received {d.received_at})")
            for task in by_dossier[d.id]:
                step = meta["steps"].get(task.step_id, {})
                if step.get("allotment_amount"):
                    allotment = Duration(Decimal(step["allotment_amount"]), step["allotment_unit"])
                    want = services.due_after(calendar, task.started_at, allotment)
                    if task.due_at != want:
                        problems.append(f"{d.code} step {task.step_id}: due {task.due_at}, the calendar says {want}")
            checked += 1
        if dossiers and not checked:
            problems.append("no dossier left to check due dates on")

        # ---- the outbox: nothing failed; everything due before the traffic stopped is sent, or is being retried
        # (the messages of the sweeps a week ahead fall due then, and wait)
        outbox = Counter(session.scalars(select(OutboxMessage.state)))
        print("outbox:", dict(outbox))
        if outbox["failed"]:
            problems.append(f"{outbox['failed']} outbox messages failed")
        stuck = session.execute(
            select(OutboxMessage.id, OutboxMessage.state, OutboxMessage.attempts, OutboxMessage.created_at)
            .where(OutboxMessage.state != "sent", OutboxMessage.next_attempt_at < stopped_at, OutboxMessage.attempts == 0)
        ).all()
        problems += [f"outbox message {m.id} ({m.state}, created {m.created_at}) was never sent" for m in stuck[:20]]
        if not outbox["sent"]:
            problems.append("the outbox sender sent nothing")

        # ---- escalations fired at most once per rung, each audited once
        fired = Counter(session.execute(select(Escalation.task_id, Escalation.level)).all())
        audited = Counter(session.execute(
            select(AuditEvent.task_id, AuditEvent.to_state).where(AuditEvent.action == "task.escalate")
        ).all())
        problems += [f"escalation {key} recorded {n} times" for key, n in fired.items() if n > 1]
        early = session.execute(select(Escalation.task_id, Escalation.level).where(Escalation.fired_at < Escalation.due_at)).all()
        problems += [f"escalation {tuple(e)} fired before it was due" for e in early]
        problems += [f"escalation {key} audited {n} times" for key, n in audited.items() if n > 1]
        if set(fired) != set(audited):
            problems.append(f"escalations {sorted(set(fired) ^ set(audited))[:10]} recorded and audited differently")
        print("escalations fired:", sum(fired.values()), dict(Counter(level for _t, level in fired)))
        if not fired:
            problems.append("the deadline sweeps fired no escalation (the warning rung of a short step falls due at once)")

        # ---- dossier codes gap-free per desk and day, and the counters agree
        numbers: dict[tuple[str, str], list[int]] = defaultdict(list)
        for d in dossiers:
            match = CODE.match(d.code)
            if match is None:
                problems.append(f"dossier code {d.code} is malformed")
                continue
            numbers[(match["desk"], match["day"])].append(int(match["number"]))
        counters = {(c.agency_code, f"{c.day:%y%m%d}"): c.last_number for c in session.scalars(select(DossierCounter))}
        for key, found in numbers.items():
            if sorted(found) != list(range(1, len(found) + 1)):
                problems.append(f"codes of {key} are not 1..{len(found)}: gaps or doubles {sorted(set(range(1, max(found) + 1)) - set(found))[:10]}")
            if counters.get(key) != len(found):
                problems.append(f"counter of {key} is {counters.get(key)}, {len(found)} dossiers carry its codes")

    # ---- the logs of the server and the worker are clean
    bad = [line for line in server_log.splitlines() if LOG_FAILURE.search(line)]
    problems += [f"log: {line}" for line in bad[:20]]

    return problems


@pytest.mark.postgres
def test_soak_keeps_every_invariant(pg_engine: Engine, tmp_path: Path) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    env = {
        **os.environ,
        "MOTCUA_DATABASE_URL": url,
        "MOTCUA_OUTBOX_INTERVAL": str(OUTBOX_INTERVAL),
        "MOTCUA_INSTANCE_PATH": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("MOTCUA_SMTP_HOST", "MOTCUA_SMS_GATEWAY_URL", "MOTCUA_ZALO_GATEWAY_URL"):
        env.pop(key, None)  # every channel only logs
    setup = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--no-serve", "--simulated", "0"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr

    # Two web processes on one database (the first also runs the scheduler), as a province would deploy.
    port, second_port = _free_port(), _free_port()
    log_path, worker_log_path, second_log_path = tmp_path / "server.log", tmp_path / "worker.log", tmp_path / "server2.log"
    with log_path.open("wb") as log, worker_log_path.open("wb") as worker_log, second_log_path.open("wb") as second_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--with-worker"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        second = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(second_port)],
            env=env, cwd=ROOT, stdout=second_log, stderr=subprocess.STDOUT,
        )
        # A second sweeper and sender beside the server's own, sweeping often: they must share the work.
        worker = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--sweep-seconds", str(SWEEP_SECONDS)],
            env=env, cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(port, server, log_path)
        _wait_healthy(second_port, second, second_log_path)
        if worker.poll() is not None:
            pytest.fail(f"the worker exited with {worker.returncode}:\n{worker_log_path.read_text(errors='replace')}")
        sweeper = _SweeperAhead(pg_engine)
        sweeper.start()
        try:
            report = soak.run(
                [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{second_port}"], PASSWORD, SECONDS, seed=2026, clients=6,
                progress=lambda t, n, d: print(f"  {t:6.0f} s  {n:7d} requests  {d:5d} dossiers", flush=True),
            )
        finally:
            sweeper.halt.set()
            sweeper.join(timeout=120)
        stopped_at = datetime.now(timezone.utc)
        _wait_drained(pg_engine, DRAIN_SECONDS)
    finally:
        _stop(worker)
        _stop(second)
        _stop(server)
    server_log = log_path.read_text(encoding="utf-8", errors="replace")
    server_log += second_log_path.read_text(encoding="utf-8", errors="replace")
    server_log += worker_log_path.read_text(encoding="utf-8", errors="replace")

    print()
    print(report.table())
    problems = invariant_problems(pg_engine, report, stopped_at, server_log)
    print(f"sweeps a week ahead: {sweeper.sweeps}, {sweeper.fired} rungs fired, {sweeper.failed} failed")
    if sweeper.errors or sweeper.failed:
        problems.append(f"the sweeps ahead failed {sweeper.failed} rungs; errors: {sweeper.errors[:5]}")
    assert not problems, f"{len(problems)} invariant(s) broken:\n" + "\n".join(problems[:80])


def test_soak_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        soak.run("http://example.com:5000", PASSWORD, 1, seed=1)
    with pytest.raises(ValueError, match="127.0.0.1"):
        soak.run("https://127.0.0.1:5000", PASSWORD, 1, seed=1)
    with pytest.raises(ValueError, match="seconds"):
        soak.run("http://127.0.0.1:5000", PASSWORD, 0, seed=1)


def test_soak_command_refuses_a_remote_server() -> None:
    from click.testing import CliRunner

    from engine.cli import main

    result = CliRunner().invoke(main, ["soak", "--url", "http://192.0.2.1:5000", "--seconds", "5"])
    assert result.exit_code == 1
    assert "127.0.0.1" in result.output
