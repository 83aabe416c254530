"""What-if replays a period's recorded arrivals with other allotments or staff."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine import lifecycle, services, whatif
from engine.core.calendar import VN_TZ
from engine.errors import DeploymentRejected, InvalidRequest
from engine.persistence.db import make_engine, make_session_factory, migrate
from engine.persistence.models import AuditEvent, Dossier
from engine.simulate import SimulationPlan, simulate

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
CODE = "2.000815"  # chứng thực bản sao: five steps of hours, same-day deadline
PHUOC_AN = "000.17.22.H19"
START = datetime(2026, 3, 2, 0, 0, tzinfo=VN_TZ)
END = datetime(2026, 3, 21, 0, 0, tzinfo=VN_TZ)
NOW = datetime(2026, 4, 30, 12, 0, tzinfo=VN_TZ)
WHO = {"receptionist": "motcua.phuocan", "officer": "chuyenvien.phuocan", "leader": "lanhdao.phuocan"}
FORMS = {
    "tiep_nhan": {"so_ban_sao": 2, "so_trang": 3},
    "kiem_tra": {"hop_le": True},
    "ghi_loi_chung": {"so_chung_thuc": "15/2026"},
    "ky_chung_thuc": {"nguoi_ky": "Phạm Văn Sơn"},
    "tra_ket_qua": {"phi_da_thu": 4000},
}


def _deploy(session: Session) -> None:
    load_demo_province(session, START)
    services.deploy(session, {"chung-thuc-ban-sao.bpmn": (ROOT / "processes" / "chung-thuc-ban-sao.bpmn").read_bytes()},
                    "designer", START)


def _run_through(session: Session, received: datetime, minutes_per_step: int) -> str:
    """Receive a dossier at Phước An and do every step, each taking ``minutes_per_step``."""
    record = services.start_dossier(session, CODE, {}, "motcua.phuocan", received, agency_code=PHUOC_AN,
                                    applicant={"name": "Lê Văn Tám", "phone": "0901234567"})
    now = received
    while tasks := services.open_tasks(session, record.code):
        task = tasks[0]
        actor = WHO[task.role]
        if not task.assignee:
            lifecycle.claim(session, task.id, actor, now)
        now += timedelta(minutes=minutes_per_step)
        services.complete_task(session, task.id, FORMS[task.step_id], actor, now)
    return record.code


def test_outcome_counts_on_time_and_late_dossiers(session: Session) -> None:
    _deploy(session)
    _run_through(session, datetime(2026, 3, 3, 8, 0, tzinfo=VN_TZ), 20)  # done by 09:40, due 17:00 the same day
    _run_through(session, datetime(2026, 3, 4, 14, 0, tzinfo=VN_TZ), 60)  # five hours: finishes after closing
    _run_through(session, datetime(2026, 3, 25, 8, 0, tzinfo=VN_TZ), 20)  # outside the period
    result = whatif.outcome(session, CODE, START, END, NOW)
    assert (result.received, result.finished, result.on_time, result.late) == (2, 2, 1, 1)
    assert result.on_time_rate == 0.5
    check = next(s for s in result.steps if s.step_id == "kiem_tra")
    assert check.completed == 2
    assert check.average_work_hours == pytest.approx((20 + 60) / 60 / 2, abs=0.005)
    assert check.late_share == 0.0


@pytest.fixture
def history(db_engine: Engine) -> Engine:
    sessions = make_session_factory(db_engine)
    with sessions() as session:
        _deploy(session)
    plan = SimulationPlan(start=START, end=END, dossiers=40, seed=5, mix={CODE: 1.0}, supplement_rate=0.0,
                          withdraw_rate=0.0, return_rate=0.0, rework_rate=0.0, refusal_rate=0.0)
    assert simulate(sessions, plan).errors == []
    return db_engine


def test_a_shorter_allotment_makes_more_dossiers_late_and_the_live_data_is_untouched(history: Engine) -> None:
    with make_session_factory(history)() as session:
        before = (session.scalar(select(func.count()).select_from(Dossier)),
                  session.scalar(select(func.count()).select_from(AuditEvent)))
        # Checking originals takes the officer as long as it did; promise it in 15 minutes instead of 2 hours.
        result = whatif.replay(session, CODE, START, END, whatif.Change(allotments={"kiem_tra": "0.25 giờ làm việc"}), NOW)
        after = (session.scalar(select(func.count()).select_from(Dossier)),
                 session.scalar(select(func.count()).select_from(AuditEvent)))
    assert before == after
    assert result["arrivals"] == result["actual"]["received"] == 40
    assert result["simulated_as_is"]["received"] == result["simulated_with_change"]["received"] == 40

    def late_share(outcome: dict, step: str) -> float:
        return next(s["late_share"] for s in outcome["steps"] if s["step_id"] == step)

    assert late_share(result["simulated_with_change"], "kiem_tra") > late_share(result["simulated_as_is"], "kiem_tra") + 0.3
    # The steps left alone fare the same: the same draws are replayed.
    assert late_share(result["simulated_with_change"], "ky_chung_thuc") == late_share(result["simulated_as_is"], "ky_chung_thuc")
    # The simulation of the period as it was comes close to what happened.
    assert abs(result["simulated_as_is"]["on_time_rate"] - result["actual"]["on_time_rate"]) <= 0.2


def test_bad_changes_are_refused_with_a_reason(history: Engine) -> None:
    with make_session_factory(history)() as session:
        with pytest.raises(InvalidRequest, match="không có bước"):
            whatif.replay(session, CODE, START, END, whatif.Change(allotments={"khong_co": "1 giờ làm việc"}), NOW)
        with pytest.raises(InvalidRequest, match="cơ quan"):
            whatif.replay(session, CODE, START, END, whatif.Change(staff={("999.99", "officer"): 2}), NOW)
        with pytest.raises(DeploymentRejected):  # five days for one step of a same-day procedure
            whatif.replay(session, CODE, START, END, whatif.Change(allotments={"kiem_tra": "5 ngày làm việc"}), NOW)
        with pytest.raises(InvalidRequest):
            whatif.replay(session, CODE, END, START, whatif.Change(), NOW)


def test_more_staff_shortens_queues_under_load(tmp_path: Path) -> None:
    db_engine = make_engine(f"sqlite:///{tmp_path / 'load.sqlite3'}")
    migrate(db_engine)
    sessions = make_session_factory(db_engine)
    with sessions() as session:
        _deploy(session)
    # One week, one commune officer, many dossiers: the officer is the bottleneck.
    end = START + timedelta(days=4)
    plan = SimulationPlan(start=START, end=end, dossiers=100, seed=9, mix={CODE: 1.0}, supplement_rate=0.0,
                          withdraw_rate=0.0, return_rate=0.0, rework_rate=0.0, refusal_rate=0.0, online_share=0.0)
    assert simulate(sessions, plan).errors == []
    with sessions() as session:
        result = whatif.replay(session, CODE, START, end,
                               whatif.Change(staff={(code, "officer"): 3 for code in ("000.17.22.H19", "000.17.23.H19", "000.17.24.H19")}),
                               NOW)
    assert result["change"]["staff"][0]["officers"] == 3
    as_is = {s["step_id"]: s for s in result["simulated_as_is"]["steps"]}
    changed = {s["step_id"]: s for s in result["simulated_with_change"]["steps"]}
    assert changed["kiem_tra"]["average_work_hours"] < 0.8 * as_is["kiem_tra"]["average_work_hours"]
    assert changed["kiem_tra"]["average_queue"] < as_is["kiem_tra"]["average_queue"]
    assert result["simulated_with_change"]["on_time_rate"] > result["simulated_as_is"]["on_time_rate"]
