"""The scale benchmark measures what it claims (small sizes; speed is not checked here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from engine import bench_scale, services
from engine.persistence.models import AuditEvent, Dossier, Escalation, Task, TaskState


def test_a_figure_says_whether_its_target_is_met() -> None:
    assert bench_scale._figure("calendar_per_s", 199_999, "/s", 3)["met"] is False
    assert bench_scale._figure("calendar_per_s", 200_000, "/s", 3)["met"] is True
    assert bench_scale._figure("sweep_s", 1.01, "s", 3)["met"] is False
    assert bench_scale._figure("http_errors", 1, "requests", 1)["met"] is False
    assert bench_scale._figure("sweep_s", 0.5, "s", 7) == {
        "value": 0.5, "unit": "s", "runs": 7, "target": "≤ 1.0", "met": True,
    }


def test_calendar_rate_reports_the_median_of_the_requested_runs() -> None:
    figure = bench_scale.calendar_rate(operations=3_000, runs=3)
    assert figure["runs"] == 3 and figure["operations_per_run"] == 3_000
    assert figure["unit"] == "computations/s" and figure["value"] > 0


@pytest.fixture
def filled(db_engine: Engine) -> bench_scale.ScaleDatabase:
    """400 open steps, 12 of them newly overdue."""
    return bench_scale.prepare(db_engine, open_tasks=400, overdue=12)


def test_the_sweep_escalates_exactly_the_overdue_steps(filled: bench_scale.ScaleDatabase) -> None:
    figure = bench_scale.sweep_timing(filled, runs=2)
    assert figure["fired_per_run"] == [12, 12]
    assert figure["escalations_recorded_per_run"] == [12, 12]
    assert figure["exactly_overdue_escalated"] is True
    assert 0 < figure["statements_per_run"]  # the log is really recorded
    with filled.sessions() as session:
        escalated = session.execute(select(Escalation.task_id, Escalation.level)).all()
        assert sorted(escalated) == sorted((task_id, "head_of_unit") for task_id in filled.overdue_ids)
        levels = dict(session.execute(select(Task.id, Task.escalation_level).where(Task.id.in_(filled.overdue_ids))).all())
        assert set(levels.values()) == {"leader"}  # the next rung, due a working day later
        others = session.scalar(
            select(func.count()).select_from(Task).where(Task.escalation_level == "warning", Task.state.in_(TaskState.OPEN))
        )
        assert others == 400 - 12 + len(bench_scale.COMMUNES)  # with the step of each dossier received through the engine
        audited = session.scalars(select(AuditEvent.task_id).where(AuditEvent.action == "task.escalate")).all()
    assert figure["audited_per_run"] == [12, 12]
    # The warm-up sweep fires 10 of them; each timed run all 12 (the audit trail is never reset).
    assert len(audited) == 10 + 12 + 12 and set(audited) == set(filled.overdue_ids)


def test_the_statement_log_catches_a_workflow_state_read(filled: bench_scale.ScaleDatabase) -> None:
    with filled.sessions() as session, bench_scale.recorded_statements(filled.engine) as statements:
        code = session.scalar(select(Dossier.code).where(Dossier.id == filled.templates[bench_scale.COMMUNES[0]]))
        services.get_dossier(session, code)
    assert bench_scale.reads_workflow_state(statements)
    assert not bench_scale.reads_workflow_state(["SELECT tasks.id FROM tasks WHERE tasks.escalation_at <= ?"])


def test_the_sweep_reads_no_workflow_state(filled: bench_scale.ScaleDatabase) -> None:
    figure = bench_scale.sweep_timing(filled, runs=1)
    assert figure["reads_workflow_state"] is False, figure["workflow_state_statements"]


def test_the_inbox_page_holds_the_officers_most_urgent_steps(filled: bench_scale.ScaleDatabase) -> None:
    figure = bench_scale.inbox_latency(filled, calls=3)
    assert figure["queue_size"] > 0
    assert figure["page_queue"] == min(50, figure["queue_size"])
    if filled.engine.dialect.name == "postgresql":
        assert [plan["query"] for plan in figure["plans"]] == ["mine", "queue"]
        assert all(plan["plan"] and "Execution Time" in plan["plan"][-1] for plan in figure["plans"])


def test_http_and_memory_count_what_really_happened(db_engine: Engine, tmp_path: Path) -> None:
    db = bench_scale.prepare(db_engine, open_tasks=60, overdue=0, with_passwords=True)
    url = db_engine.url.render_as_string(hide_password=False)
    figures = bench_scale.http_load(db, url, seconds=2, clients=3, workers=1, threads=3, per_commune=40, folder=tmp_path, warmup=0.5)
    check = figures["consistency"]
    assert figures["errors"]["value"] == 0, figures["errors"]["first"]
    assert check["completed_steps"] == check["client_completed"] == check["audit_completes"] > 0
    assert check["lost"] == check["doubled"] == check["inconsistent_dossiers"] == 0
    assert figures["consistent"] is True

    # A step completed twice (two audit rows) is caught.
    with db.sessions() as session:
        done = session.execute(
            select(Task.id, Task.dossier_id).where(Task.state == TaskState.COMPLETED, Task.step_id == "xu_ly").limit(1)
        ).one()
        session.add(AuditEvent(at=bench_scale.BENCH_NOW, actor="x", action="task.complete", dossier_id=done.dossier_id,
                               task_id=done.id, details={}))
        session.commit()
    assert bench_scale.check_consistency(db, [done.id], [done.id])["doubled"] == 1

    # Paced: the clients keep to the schedule (about rate × seconds requests), and a second run's dossiers are checked on their own.
    paced = bench_scale.http_load(db, url, seconds=2, clients=3, workers=1, threads=3, per_commune=20, folder=tmp_path,
                                  warmup=0.5, rate=10, label="p")
    assert paced["errors"]["value"] == 0, paced["errors"]["first"]
    assert 15 <= paced["requests"] <= 25
    assert paced["consistency"]["completed_steps"] == paced["consistency"]["client_completed"] > 0
    assert paced["consistent"] is True

    memory = bench_scale.memory_curve(db, url, dossiers=6, clients=2, folder=tmp_path)
    assert memory["errors"] == 0, memory["first_errors"]
    assert memory["processed_in_database"] == 6
    assert list(memory["curve_mb"]) == ["0", "3", "6"]
    assert all(value > 10 for value in memory["curve_mb"].values())
