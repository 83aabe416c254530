"""Concurrent receipts and sweepers against one database (threads, real connections)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine import escalation, lifecycle, organisation, services
from engine.errors import Conflict
from engine.persistence.models import Dossier, Escalation, OutboxMessage

from .conftest import fixture_bytes
from .test_lifecycle import XA, _load


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()


def test_concurrent_receipts_get_gap_free_codes(db_engine: Engine, now: datetime) -> None:
    with Session(db_engine, expire_on_commit=False) as session:
        services.deploy(session, fixture_bytes("rework_loop.bpmn"), actor="designer", now=now)
    errors: list[BaseException] = []
    per_thread, workers = 10, 4

    def receive() -> None:
        try:
            with Session(db_engine, expire_on_commit=False) as session:
                for _ in range(per_thread):
                    services.start_dossier(session, "1.999002", {}, actor="desk", now=now, agency_code="000.17.22.H19")
        except BaseException as err:  # reported below
            errors.append(err)

    _run([threading.Thread(target=receive) for _ in range(workers)])
    assert errors == []
    with Session(db_engine) as session:
        codes = sorted(session.scalars(select(Dossier.code)))
    assert codes == [f"000.17.22.H19-260302-{n:04d}" for n in range(1, per_thread * workers + 1)]


def test_two_sweepers_fire_each_rung_once(db_engine: Engine, now: datetime) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    with sessions() as session:
        _load(session, "org_two_tier.yaml", now)
        services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
        for _ in range(15):
            services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now, agency_code=XA)
    later = now + timedelta(days=30)  # every rung of every first step is due
    reports: list[escalation.SweepReport] = []

    def sweeper() -> None:
        reports.append(escalation.sweep(sessions, later, batch=4))

    for _ in range(3):  # small batches: the sweepers meet on the same rows
        _run([threading.Thread(target=sweeper) for _ in range(2)])
    with sessions() as session:
        fired = session.execute(select(Escalation.task_id, Escalation.level)).all()
        messages = session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.event.like("escalation.%")))
    assert sum(r.failed for r in reports) == 0
    assert len(fired) == len(set(fired)) == sum(r.fired for r in reports)  # nothing fired twice
    steps = {task_id for task_id, _ in fired}
    assert all(sum(1 for t, _ in fired if t == step) == 4 for step in steps)  # a late sweep fires every due rung
    assert len(steps) >= 12  # three passes of batches of four steps each (more where SKIP LOCKED splits them)
    assert messages == sum(r.messages for r in reports)


def test_two_officers_claiming_at_once_exactly_one_wins(db_engine: Engine, now: datetime) -> None:
    with Session(db_engine, expire_on_commit=False) as session:
        _load(session, "org_two_tier.yaml", now)
        organisation_text = "officers:\n  - {username: lan2.desk, full_name: Phan Thị Lan, roles: [{agency: 000.17.22.H19, role: receptionist}]}\n"
        organisation.load_organisation(session, organisation.parse_organisation(organisation_text), "admin", now)
        services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
        tasks = []
        for _ in range(5):
            dossier = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now, agency_code=XA)
            tasks.append(services.open_tasks(session, dossier.code)[0].id)
    outcomes: dict[tuple[int, str], str] = {}
    barrier = threading.Barrier(2)

    def grab(username: str) -> None:
        with Session(db_engine, expire_on_commit=False) as session:
            for task_id in tasks:
                try:
                    barrier.wait(timeout=30)
                    lifecycle.claim(session, task_id, username, now)
                    outcomes[(task_id, username)] = "won"
                except Conflict:
                    outcomes[(task_id, username)] = "lost"
                except BaseException as err:  # shown in the assertion below
                    outcomes[(task_id, username)] = repr(err)

    _run([threading.Thread(target=grab, args=(name,)) for name in ("lan.desk", "lan2.desk")])
    for task_id in tasks:
        assert sorted(outcomes[(task_id, u)] for u in ("lan.desk", "lan2.desk")) == ["lost", "won"]
