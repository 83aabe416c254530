"""The simulator writes believable history through the engine's own use cases."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from engine import services
from engine.cli import main
from engine.core import bpmn
from engine.core.calendar import VN_TZ, WorkingCalendar
from engine.persistence.db import make_engine, make_session_factory, migrate
from engine.persistence.models import AuditEvent, Dossier, Feedback, Rating, Task, TaskState
from engine.simulate import SimulationPlan, arrival_instants, simulate

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
FILES = (
    "chung-thuc-ban-sao.bpmn",
    "dang-ky-khai-sinh.bpmn",
    "lien-thong-khai-sinh-thuong-tru-bhyt.bpmn",
    "dang-ky-dat-dai-lan-dau.bpmn",
    "xac-dinh-nghia-vu-tai-chinh.bpmn",
)
MIX = {"2.000815": 3, "1.001193": 3, "LT.KS-TT-BHYT": 3, "1.013978": 2}
START = datetime(2026, 8, 24, 0, 0, tzinfo=VN_TZ)  # Monday; Quốc khánh 1–2/9/2026 falls inside
END = datetime(2026, 9, 21, 0, 0, tzinfo=VN_TZ)


def _prepare(engine: Engine) -> None:
    with make_session_factory(engine)() as session:
        load_demo_province(session, START)
        files = {name: (ROOT / "processes" / name).read_bytes() for name in FILES}
        for bundle in bpmn.procedure_bundles(files):
            services.deploy(session, bundle, "designer", START)


def _busy_plan(seed: int = 11, dossiers: int = 60) -> SimulationPlan:
    """Rates raised so that a small run shows every kind of event."""
    return SimulationPlan(
        start=START, end=END, dossiers=dossiers, seed=seed, mix=MIX,
        bottlenecks={"tham_tra_ho_so": 3.5, "dang_ky_thuong_tru": 3.5},
        supplement_rate=0.25, withdraw_rate=0.08, rating_rate=0.9, feedback_rate=0.2, return_rate=0.08,
    )


def test_arrivals_follow_working_hours_and_the_week() -> None:
    calendar = WorkingCalendar()
    arrivals = list(arrival_instants(calendar, START, END, 4000, 0.2, random.Random(5)))
    assert len(arrivals) == 4000
    assert [at for at, _ in arrivals] == sorted(at for at, _ in arrivals)
    assert all(START <= at < END for at, _ in arrivals)
    desk = [at for at, online in arrivals if not online]
    online = [at for at, online in arrivals if online]
    assert 0.16 < len(online) / len(arrivals) < 0.24
    for at in desk:  # at the desk only within a working session of a working day
        day = at.date()
        assert calendar.is_working_day(day), at
        assert any(start <= at.timetz().replace(tzinfo=None) < end for start, end in calendar.sessions_on(day)), at
    per_weekday = Counter(at.weekday() for at in desk)
    days = [START.date() + timedelta(days=i) for i in range((END - START).days)]
    working = Counter(d.weekday() for d in days if calendar.is_working_day(d))
    assert per_weekday[0] / working[0] > 1.3 * per_weekday[4] / working[4]  # Mondays are busier than Fridays
    assert per_weekday[6] == 0 and per_weekday[5] == 0  # no working weekend day in this period
    holiday = datetime(2026, 9, 2, tzinfo=VN_TZ).date()
    assert not any(at.date() == holiday for at in desk)
    assert any(at.weekday() >= 5 or at.hour >= 17 for at in online)  # online filings come at any hour


def test_simulation_goes_through_the_use_cases_and_leaves_consistent_history(db_engine: Engine) -> None:
    _prepare(db_engine)
    plan = _busy_plan()
    seen: list[int] = []
    report = simulate(make_session_factory(db_engine), plan, progress=lambda done, total, now: seen.append(done))
    assert report.errors == []
    assert seen[-1] == plan.dossiers and seen == sorted(seen)
    counts = report.counts
    for kind in ("supplements", "resumed", "withdrawn", "returned", "ratings", "apologies", "payments",
                 "returned_to_previous", "feedback", "escalations"):
        assert counts[kind] > 0, kind
    with make_session_factory(db_engine)() as session:
        dossiers = session.scalars(select(Dossier)).all()
        assert len(dossiers) == plan.dossiers == counts["received"]
        receipts = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "dossier.receive"))
        assert receipts == plan.dossiers  # every dossier was received by the use case, not inserted
        by_status = Counter(d.status for d in dossiers)
        assert by_status[services.DossierStatus.RETURNED] == counts["returned"]
        assert by_status[services.DossierStatus.WITHDRAWN] == counts["withdrawn"]
        assert session.scalar(select(func.count()).select_from(Rating)) == counts["ratings"]
        assert session.scalar(select(func.count()).select_from(Feedback)) == counts["feedback"]
        pauses = session.scalars(select(AuditEvent.details).where(AuditEvent.action == "dossier.pause")).all()
        assert Counter(p["reason"] for p in pauses) == {"supplement": counts["supplements"], "payment": counts["payments"]}
        assert sum(1 for d in dossiers if d.new_appointment_at is not None) == counts["apologies"]
        # Statuses agree with the steps: an ended dossier has no open step, an open step belongs to a live dossier.
        open_by_dossier = Counter(
            session.scalars(select(Task.dossier_id).where(Task.state.in_(TaskState.OPEN))).all()
        )
        for d in dossiers:
            if d.status in (services.DossierStatus.RETURNED, services.DossierStatus.WITHDRAWN):
                assert open_by_dossier[d.id] == 0, d.code
                assert d.finished_at is not None
        # The bottleneck steps run late far more often than the rest.
        rows = session.execute(select(Task.step_id, Task.result).where(Task.state == TaskState.COMPLETED)).all()
        slow = [r.result == "late" for r in rows if r.step_id in plan.bottlenecks]
        rest = [r.result == "late" for r in rows if r.step_id not in plan.bottlenecks]
        assert slow and rest
        assert sum(slow) / len(slow) > 2 * sum(rest) / len(rest)


def _history(url: str, seed: int) -> list[tuple[str, int, str, str | None]]:
    engine = make_engine(url)
    try:
        migrate(engine)
        _prepare(engine)
        simulate(make_session_factory(engine), _busy_plan(seed=seed, dossiers=25))
        with make_session_factory(engine)() as session:
            rows = session.execute(
                select(Dossier.code, Dossier.status, Dossier.received_at, Dossier.finished_at).order_by(Dossier.code)
            ).all()
        return [(code, status, received.isoformat(), finished.isoformat() if finished else None) for code, status, received, finished in rows]
    finally:
        engine.dispose()


def test_same_seed_same_history(tmp_path: Path) -> None:
    first = _history(f"sqlite:///{tmp_path / 'a.sqlite3'}", seed=3)
    again = _history(f"sqlite:///{tmp_path / 'b.sqlite3'}", seed=3)
    other = _history(f"sqlite:///{tmp_path / 'c.sqlite3'}", seed=4)
    assert len(first) == 25
    assert first == again
    assert first != other


def test_cli_simulate_needs_procedures_then_reports_progress(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    runner = CliRunner()
    assert runner.invoke(main, ["--database-url", url, "init-db"]).exit_code == 0
    empty = runner.invoke(main, ["--database-url", url, "simulate", "--dossiers", "5"])
    assert empty.exit_code == 1
    assert "deploy" in empty.output.lower()
    engine = make_engine(url)
    _prepare(engine)
    engine.dispose()
    end = (START + timedelta(days=14)).isoformat()
    result = runner.invoke(main, ["--database-url", url, "simulate", "--dossiers", "12", "--months", "0.5", "--end", end])
    assert result.exit_code == 0, result.output
    assert "12/12 hồ sơ (100 %)" in result.output
    assert '"received": 12' in result.output


def test_a_period_cut_mid_day_gets_no_arrival_outside_it() -> None:
    calendar = WorkingCalendar()
    start = datetime(2026, 11, 20, 14, 0, tzinfo=VN_TZ)  # Friday afternoon
    end = datetime(2026, 11, 23, 9, 0, tzinfo=VN_TZ)  # Monday morning
    arrivals = list(arrival_instants(calendar, start, end, 500, 0.2, random.Random(1)))
    assert len(arrivals) == 500
    assert all(start <= at < end for at, _ in arrivals)
    assert len({at for at, _ in arrivals}) > 450  # spread out, not piled on the period's ends
    desk_days = Counter(at.date() for at, online in arrivals if not online)
    assert set(desk_days) == {start.date(), end.date()}
