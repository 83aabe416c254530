"""A process killed (SIGKILL) in the middle of a change leaves nothing half done.

Each test starts a real child process that runs one use case against
PostgreSQL, holds it mid-transaction with a table lock taken by the test (the
child has already written some rows and waits to write the next), kills it
with SIGKILL, releases the lock, and checks that the database shows either all
of the change or none of it — then that running the same use case again does
it exactly once. The notification case kills the sender between sending and
recording the message, and checks that the gateway can drop the re-sent copy
by its idempotency key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.core.calendar import VN_TZ
from engine.persistence.models import AuditEvent, Dossier, Escalation, OutboxMessage, Task, TaskState

from .conftest import _postgres_engine, load_demo_province

ROOT = Path(__file__).resolve().parents[1]
PHUOC_AN = "000.17.22.H19"
CODE = "2.000815"
RECEIVED = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)
CHILD = "motcua_crash_child"


@pytest.fixture
def pg() -> Iterator[Engine]:
    yield from _postgres_engine()


def _setup(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        load_demo_province(session, RECEIVED)
        content = (ROOT / "processes" / "chung-thuc-ban-sao.bpmn").read_bytes()
        services.deploy(session, {"chung-thuc-ban-sao.bpmn": content}, "designer", RECEIVED)


def _receive(session: Session, at: datetime = RECEIVED) -> str:
    return services.start_dossier(session, CODE, {}, "motcua.phuocan", at, agency_code=PHUOC_AN,
                                  applicant={"name": "Trần Thị Bé", "phone": "0987654321"}).code


def _child_url(engine: Engine) -> str:
    return make_url(engine.url).update_query_dict({"application_name": CHILD}).render_as_string(hide_password=False)


def _spawn(engine: Engine, body: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A child running ``body`` with ``session`` open on the database."""
    code = textwrap.dedent(
        """
        import json, sys
        from datetime import datetime, timedelta
        from sqlalchemy.orm import Session
        from engine import escalation, lifecycle, notify, services
        from engine.core.calendar import VN_TZ
        from engine.persistence.db import make_engine, make_session_factory
        engine = make_engine(sys.argv[1])
        sessions = make_session_factory(engine)
        session = sessions()
        """
    ) + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code, _child_url(engine)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}, cwd=ROOT,
    )


def _wait_blocked(engine: Engine, child: subprocess.Popen[str], timeout: float = 30) -> None:
    """Until the child's connection waits on a lock mid-transaction."""
    deadline = time.monotonic() + timeout
    query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND wait_event_type = 'Lock'")
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"name": CHILD}).scalar():
                return
        if child.poll() is not None:
            raise AssertionError(f"the child ended before blocking: {child.communicate()}")
        time.sleep(0.05)
    child.kill()
    raise AssertionError("the child never blocked on the lock")


def _kill_while_holding(engine: Engine, table: str, body: str) -> None:
    """Run ``body`` in a child, hold it on a lock of ``table``, kill it, release the lock."""
    holder = engine.connect()
    transaction = holder.begin()
    holder.execute(text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))  # blocks INSERT/UPDATE, not SELECT
    child = _spawn(engine, body)
    try:
        _wait_blocked(engine, child)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        transaction.rollback()
        holder.close()
    # The server ends the dead client's transaction; wait until its connection is gone.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            alive = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"), {"n": CHILD}).scalar()
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError("the killed child's connection is still open")


def _run(engine: Engine, body: str) -> str:
    child = _spawn(engine, body)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-3000:]
    return out


def test_killed_while_receiving_leaves_no_dossier_and_no_gap_in_codes(pg: Engine) -> None:
    _setup(pg)
    _kill_while_holding(pg, "audit_events", f"""
        services.start_dossier(session, "{CODE}", {{}}, "motcua.phuocan", datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ),
                               agency_code="{PHUOC_AN}", applicant={{"name": "A", "phone": "0900000001"}})
    """)
    with Session(pg) as session:
        assert session.scalar(select(func.count()).select_from(Dossier)) == 0
        assert session.scalar(select(func.count()).select_from(Task)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    out = _run(pg, f"""
        record = services.start_dossier(session, "{CODE}", {{}}, "motcua.phuocan", datetime(2026, 3, 2, 8, 5, tzinfo=VN_TZ),
                                        agency_code="{PHUOC_AN}", applicant={{"name": "A", "phone": "0900000001"}})
        print(record.code)
    """)
    assert out.strip() == f"{PHUOC_AN}-260302-0001"  # the killed receipt gave its number back


def test_killed_while_completing_a_step_applies_it_once_after_restart(pg: Engine) -> None:
    _setup(pg)
    with Session(pg, expire_on_commit=False) as session:
        code = _receive(session)
        desk = services.open_tasks(session, code)[0]
        services.complete_task(session, desk.id, {"so_ban_sao": 1, "so_trang": 2}, "motcua.phuocan", RECEIVED + timedelta(minutes=10))
        check = services.open_tasks(session, code)[0]
        lifecycle.claim(session, check.id, "chuyenvien.phuocan", RECEIVED + timedelta(minutes=20))
        before = session.execute(select(Dossier.workflow_state, Dossier.status).where(Dossier.code == code)).one()
        audits_before = session.scalar(select(func.count()).select_from(AuditEvent))
    body = f"""
        services.complete_task(session, {check.id}, {{"hop_le": True}}, "chuyenvien.phuocan",
                               datetime(2026, 3, 2, 9, 0, tzinfo=VN_TZ))
        print(",".join(t.step_id for t in services.open_tasks(session, "{code}")))
    """
    _kill_while_holding(pg, "audit_events", body)
    with Session(pg) as session:
        after = session.execute(select(Dossier.workflow_state, Dossier.status).where(Dossier.code == code)).one()
        assert after == before
        assert session.scalar(select(Task.state).where(Task.id == check.id)) == TaskState.CLAIMED
        assert [t.step_id for t in services.open_tasks(session, code)] == ["kiem_tra"]
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == audits_before
    assert _run(pg, body).strip() == "ghi_loi_chung"
    with Session(pg) as session:
        completions = session.scalars(
            select(AuditEvent.task_id).where(AuditEvent.action == "task.complete", AuditEvent.task_id == check.id)
        ).all()
        assert completions == [check.id]
        assert session.scalar(select(func.count()).select_from(Task).where(Task.step_id == "ghi_loi_chung")) == 1


def test_killed_during_a_sweep_fires_each_escalation_once_after_restart(pg: Engine) -> None:
    _setup(pg)
    with Session(pg, expire_on_commit=False) as session:
        codes = [_receive(session, RECEIVED + timedelta(minutes=i)) for i in range(3)]
        pending = session.scalar(select(func.count()).select_from(Task).where(Task.escalation_at.is_not(None)))
        messages_before = session.scalar(select(func.count()).select_from(OutboxMessage))
    assert pending == len(codes)
    sweep = """
        report = escalation.sweep(sessions, datetime(2026, 3, 6, 9, 0, tzinfo=VN_TZ))
        print(report.fired)
    """
    _kill_while_holding(pg, "escalations", sweep)
    with Session(pg) as session:
        assert session.scalar(select(func.count()).select_from(Escalation)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == messages_before
    fired = int(_run(pg, sweep).strip())
    assert fired >= len(codes)
    assert int(_run(pg, sweep).strip()) == 0  # nothing is fired twice
    with Session(pg) as session:
        rows = session.execute(select(Escalation.task_id, Escalation.level)).all()
        assert len(rows) == len(set(rows)) == fired


class _Gateway(BaseHTTPRequestHandler):
    """An SMS gateway that keeps the first request waiting and drops repeats by Idempotency-Key."""

    received: list[str] = []
    delivered: dict[str, str] = {}
    first_seen = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        key = self.headers.get("Idempotency-Key", "")
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(key)
        if len(type(self).received) == 1:
            type(self).first_seen.set()
            type(self).release.wait(60)  # the sender is killed while it waits for this answer
        type(self).delivered.setdefault(key, json.loads(body).get("to", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_killed_while_sending_loses_no_message_and_the_repeat_is_recognisable(pg: Engine) -> None:
    _setup(pg)
    with Session(pg, expire_on_commit=False) as session:
        for i in range(3):
            _receive(session, RECEIVED + timedelta(minutes=i))
        total = session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.channel == "sms"))
    assert total == 3
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/sms"
    send = f"""
        channels = notify.channels_from_settings({{"sms_gateway_url": "{url}"}})
        at = datetime(2026, 3, 2, 9, 0, tzinfo=VN_TZ) + timedelta(minutes=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
        report = notify.deliver_due(sessions, {{"sms": channels["sms"]}}, at)
        print(report.sent)
    """
    try:
        child = _spawn(pg, send)
        assert _Gateway.first_seen.wait(60), child.communicate()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        _Gateway.release.set()
        with Session(pg) as session:
            states = session.scalars(select(OutboxMessage.state).where(OutboxMessage.channel == "sms")).all()
        assert sorted(states) == ["sending"] * 3  # claimed, none recorded: nothing is lost
        # After the lease the next pass takes them over and sends every one.
        later = _spawn(pg, send.replace("int(sys.argv[2]) if len(sys.argv) > 2 else 0", "60"))
        out, err = later.communicate(timeout=120)
        assert later.returncode == 0, err[-3000:]
        assert int(out.strip()) == 3
    finally:
        server.shutdown()
    with Session(pg) as session:
        rows = session.execute(select(OutboxMessage.id, OutboxMessage.state).where(OutboxMessage.channel == "sms")).all()
    assert {state for _, state in rows} == {"sent"}
    keys = {f"outbox-{id_}" for id_, _ in rows}
    assert set(_Gateway.delivered) == keys  # every message arrived, each under its own key
    assert len(_Gateway.received) == 4  # the one in flight at the kill came again, with the same key
    assert len(set(_Gateway.received)) == 3
