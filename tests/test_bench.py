"""The engine benchmark measures what it says: real dossiers run to their end, targets judged from the figures."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from engine import bench, services
from engine.persistence.models import AuditEvent, Dossier, Task, TaskState


def test_a_persisted_run_takes_every_dossier_through_every_step(db_engine: Engine) -> None:
    once = bench.persisted(db_engine, 3)
    once()
    once()
    with Session(db_engine) as session:
        statuses = session.scalars(select(Dossier.status)).all()
        completed = session.scalar(select(func.count()).select_from(Task).where(Task.state == TaskState.COMPLETED))
        still_open = session.scalar(select(func.count()).select_from(Task).where(Task.state.in_(TaskState.OPEN)))
    assert statuses == [services.DossierStatus.PROCESSED] * 6
    assert completed == 6 * 6 and still_open == 0


def test_rework_growth_measures_the_loop_it_claims(db_engine: Engine) -> None:
    figures = bench.rework_growth(db_engine, rounds=5, dossiers=1)
    with Session(db_engine) as session:
        handled = session.scalar(select(func.count()).select_from(Task).where(Task.step_id == "handle"))
        reviewed = session.scalar(select(func.count()).select_from(Task).where(Task.step_id == "review"))
    assert handled == reviewed == 5
    assert set(figures) == {"step_1_ms", "step_5_ms", "step_5_over_step_1", "state_bytes_step_1", "state_bytes_step_5"}
    # The stored state does not grow with the history of the loop.
    assert 0 < figures["state_bytes_step_5"] <= figures["state_bytes_step_1"] * 1.2


def test_targets_are_judged_from_the_figures() -> None:
    judged = bench._targets({
        "sqlite_over_raw_in_memory": 0.61, "postgres_over_raw_in_memory": 0.2, "postgres_per_s": 100.0,
        "rework_sqlite": {"step_50_over_step_1": 1.6},
    })
    assert judged["sqlite_over_raw_in_memory"]["met"] is True
    assert judged["postgres_over_raw_in_memory"]["met"] is False
    assert judged["postgres_per_s"] == {"value": 100.0, "target": "≥ 100", "met": True}
    assert judged["rework_sqlite.step_50_over_step_1"]["met"] is False
    assert "rework_postgres.step_50_over_step_1" not in judged


def test_a_small_run_prints_rates_and_ratios_taken_together() -> None:
    figures = bench.run(count=2, runs=1)
    assert figures["sqlite_per_s"] > 0 and figures["raw_in_memory_per_s"] > 0
    expected = figures["sqlite_per_s"] / figures["raw_in_memory_per_s"]
    assert abs(figures["sqlite_over_raw_in_memory"] - expected) <= 0.002 + expected * 0.01
    assert set(figures["targets"]) == {"sqlite_over_raw_in_memory", "rework_sqlite.step_50_over_step_1"}
    assert 0 < figures["sqlite_bound_over_raw_in_memory"] < 1 and figures["sqlite_writes_only_per_s"] > 0
    text = bench.table(figures)
    assert "sqlite_over_raw_in_memory" in text.splitlines()[1]


def test_the_writes_only_floor_writes_what_a_dossier_writes(db_engine: Engine) -> None:
    bench.writes_only(db_engine, 2)()
    with Session(db_engine) as session:
        dossiers = session.scalars(select(Dossier.id).where(Dossier.code.like("W-%"))).all()
        steps = session.scalar(select(func.count()).select_from(Task).where(Task.dossier_id.in_(dossiers), Task.state == "completed"))
        audits = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.dossier_id.in_(dossiers)))
        revisions = session.scalars(select(Dossier.revision).where(Dossier.id.in_(dossiers))).all()
    assert len(dossiers) == 2 and steps == 12 and audits == 2 * (2 + 6 + 5) and revisions == [7, 7]
