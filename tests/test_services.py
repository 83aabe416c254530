"""Catalog and runtime use cases on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import services
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, DeploymentRejected, InvalidRequest, NotFound
from engine.persistence.models import (
    AuditEvent,
    Dossier,
    ProcedureVersion,
    Task,
    TaskState,
)

from .conftest import fixture_bytes


def _complete_all(session: Session, code: str, now: datetime, data: dict | None = None) -> None:
    while tasks := services.open_tasks(session, code):
        services.complete_task(session, tasks[0].id, data or {}, actor="officer", now=now)


def test_deploy_is_idempotent_and_versions_changes(session: Session, now: datetime) -> None:
    files = fixture_bytes("six_steps.bpmn")
    first = services.deploy(session, files, actor="designer", now=now)
    again = services.deploy(session, files, actor="designer", now=now)
    assert (first.code, first.version, first.created) == ("1.999001", 1, True)
    assert (again.version, again.created) == (1, False)

    changed = {"six_steps.bpmn": files["six_steps.bpmn"].replace(b"3 working days", b"2 working days", 1)}
    second = services.deploy(session, changed, actor="designer", now=now)
    assert (second.version, second.created) == (2, True)
    assert session.scalar(select(func.count()).select_from(ProcedureVersion)) == 2
    deploys = session.scalars(select(AuditEvent.subject).where(AuditEvent.action == "procedure.deploy")).all()
    assert deploys == ["1.999001@1", "1.999001@2"]


def test_version_metadata_comes_from_extension_properties(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("six_steps.bpmn"), actor="designer", now=now)
    version = services.get_version(session, "1.999001")
    meta = version.meta
    assert (meta["name"], meta["field"], meta["level"]) == ("Đăng ký đất đai liên thông (6 bước)", "Đất đai", "commune")
    assert (meta["deadline_amount"], meta["deadline_unit"]) == ("15", "working_days")
    assert meta["steps"]["s3"]["role"] == "officer"
    assert meta["steps"]["s3"]["agency"] == "named:VPDK"
    assert meta["steps"]["s3"]["allotment_amount"] == "5"
    assert meta["steps"]["s3"]["lane_name"] == "Văn phòng đăng ký đất đai"


def test_rejected_deploy_stores_nothing(session: Session, now: datetime) -> None:
    bad = fixture_bytes("six_steps.bpmn")["six_steps.bpmn"].replace(b'<camunda:property name="allotment" value="5 working days"/>', b"")
    with pytest.raises(DeploymentRejected) as caught:
        services.deploy(session, {"bad.bpmn": bad}, actor="designer", now=now)
    [problem] = [p for p in caught.value.problems if p.severity == "error"]
    assert problem.element_id == "s3" and "allotment" in problem.message and problem.line
    assert session.scalar(select(func.count()).select_from(ProcedureVersion)) == 0


def test_dossier_runs_six_steps_to_the_end(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("six_steps.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999001", {"applicant": "Nguyễn Văn A"}, actor="desk", now=now)
    assert dossier.code == "000.00.00.H00-260302-0001"
    assert dossier.status == services.DossierStatus.RECEIVED
    # 15 working days from Monday 2/3/2026 08:00 → Monday 23/3/2026 08:00.
    assert dossier.due_at.astimezone(VN_TZ) == datetime(2026, 3, 23, 8, 0, tzinfo=VN_TZ)
    seen = []
    clock = now
    while tasks := services.open_tasks(session, dossier.code):
        [task] = tasks
        seen.append((task.step_id, task.role, task.lane))
        clock += timedelta(hours=1)
        services.complete_task(session, task.id, {f"done_{task.step_id}": True}, actor="officer", now=clock)
        if task.step_id == "s1":
            assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING
    assert [s[0] for s in seen] == ["s1", "s2", "s3", "s4", "s5", "s6"]
    assert seen[2] == ("s3", "officer", "Văn phòng đăng ký đất đai")
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at is not None
    assert all(finished.data[f"done_s{i}"] for i in range(1, 7))


def test_task_due_dates_follow_allotments(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("six_steps.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999001", {}, actor="desk", now=now)
    [first] = services.open_tasks(session, dossier.code)
    # 0.5 working day from Monday 08:00 → 08:00 + 4 h of sessions = 13:00... minus lunch → 13:30.
    assert first.due_at.astimezone(VN_TZ) == datetime(2026, 3, 2, 13, 30, tzinfo=VN_TZ)
    friday = datetime(2026, 3, 6, 16, 0, tzinfo=VN_TZ)
    services.complete_task(session, first.id, {}, actor="desk", now=friday)
    [second] = services.open_tasks(session, dossier.code)
    # 3 working days from Friday 16:00 → Wednesday 16:00.
    assert second.started_at.astimezone(VN_TZ) == friday
    assert second.due_at.astimezone(VN_TZ) == datetime(2026, 3, 11, 16, 0, tzinfo=VN_TZ)


def test_spec_is_stored_once_not_in_dossiers(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("six_steps.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999001", {}, actor="desk", now=now)
    state = json.loads(session.scalar(select(Dossier.workflow_state).where(Dossier.id == dossier.id)))
    assert "spec" not in state and "subprocess_specs" not in state
    assert "Xác nhận của UBND xã" not in json.dumps(state)  # step names live in the spec only
    spec = json.loads(session.scalar(select(ProcedureVersion.spec_json)))
    assert "Xác nhận của UBND xã" in json.dumps(spec, ensure_ascii=False)


def test_running_dossiers_stay_on_their_version(session: Session, now: datetime) -> None:
    files = fixture_bytes("six_steps.bpmn")
    services.deploy(session, files, actor="designer", now=now)
    old = services.start_dossier(session, "1.999001", {}, actor="desk", now=now)
    renamed = files["six_steps.bpmn"].replace("Thẩm định hồ sơ".encode(), "Thẩm định (mới)".encode())
    assert services.deploy(session, {"six_steps.bpmn": renamed}, actor="designer", now=now).version == 2
    new = services.start_dossier(session, "1.999001", {}, actor="desk", now=now)
    assert new.code.endswith("-0002")
    for code in (old.code, new.code):
        for _ in range(2):
            [task] = services.open_tasks(session, code)
            services.complete_task(session, task.id, {}, actor="officer", now=now)
    [old_task] = services.open_tasks(session, old.code)
    [new_task] = services.open_tasks(session, new.code)
    assert old_task.step_name == "Thẩm định hồ sơ"
    assert new_task.step_name == "Thẩm định (mới)"
    assert services.get_dossier(session, old.code).version.version == 1


def test_parallel_branches_and_call_activity(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("parallel_main.bpmn", "parallel_called.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999003", {}, actor="desk", now=now)
    [receive] = services.open_tasks(session, dossier.code)
    services.complete_task(session, receive.id, {}, actor="desk", now=now)
    branches = services.open_tasks(session, dossier.code)
    assert sorted((t.step_id, t.lane) for t in branches) == [
        ("insurance", "BHXH"),
        ("police", "Công an"),
        ("verify", "Công chức tư pháp"),
    ]
    verify = next(t for t in branches if t.step_id == "verify")
    assert verify.process_id == "Verify"
    for task in branches:
        services.complete_task(session, task.id, {task.step_id: "xong"}, actor="officer", now=now)
        remaining = {t.step_id for t in services.open_tasks(session, dossier.code)}
        assert "ret" not in remaining or task is branches[-1]  # the join waits for every branch
    [ret] = services.open_tasks(session, dossier.code)
    assert ret.step_id == "ret"
    services.complete_task(session, ret.id, {}, actor="desk", now=now)
    done = services.get_dossier(session, dossier.code)
    assert done.status == services.DossierStatus.PROCESSED
    assert {done.data[k] for k in ("police", "insurance", "verify")} == {"xong"}


def test_rework_loop_keeps_state_small(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("rework_loop.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999002", {}, actor="desk", now=now)
    sizes = []
    for round_ in range(30):
        [handle] = services.open_tasks(session, dossier.code)
        assert handle.step_id == "handle"
        services.complete_task(session, handle.id, {"note": "x"}, actor="officer", now=now)
        [review] = services.open_tasks(session, dossier.code)
        services.complete_task(session, review.id, {"rework": round_ < 29}, actor="leader", now=now)
        sizes.append(len(session.scalar(select(Dossier.workflow_state).where(Dossier.id == dossier.id))))
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSED
    assert max(sizes[1:-1]) <= sizes[1] * 1.1, sizes  # no growth with the number of rounds
    completed = session.scalar(select(func.count()).select_from(Task).where(Task.state == TaskState.COMPLETED))
    assert completed == 60  # history is kept in task rows and the audit trail instead


def test_every_change_is_audited(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("rework_loop.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999002", {}, actor="desk", now=now)
    [handle] = services.open_tasks(session, dossier.code)
    services.complete_task(session, handle.id, {"note": "đã xử lý"}, actor="officer.a", now=now + timedelta(minutes=5))
    events = [(e.actor, e.action, e.from_state, e.to_state) for e in services.dossier_history(session, dossier.code)]
    assert events == [
        ("desk", "dossier.receive", None, "2"),
        ("desk", "task.ready", None, "ready"),
        ("officer.a", "task.complete", "ready", "completed"),
        ("officer.a", "task.ready", None, "ready"),
        ("officer.a", "dossier.status", "2", "4"),
    ]


def test_bad_requests_change_nothing(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("rework_loop.bpmn"), actor="designer", now=now)
    with pytest.raises(NotFound):
        services.start_dossier(session, "9.999999", {}, actor="desk", now=now)
    dossier = services.start_dossier(session, "1.999002", {}, actor="desk", now=now)
    [handle] = services.open_tasks(session, dossier.code)
    services.complete_task(session, handle.id, {}, actor="officer", now=now)
    with pytest.raises(Conflict):
        services.complete_task(session, handle.id, {}, actor="officer", now=now)  # twice
    with pytest.raises(NotFound):
        services.complete_task(session, 999_999, {}, actor="officer", now=now)
    with pytest.raises(InvalidRequest):
        services.complete_task(session, handle.id, ["not", "a", "mapping"], actor="officer", now=now)  # type: ignore[arg-type]
    [review] = services.open_tasks(session, dossier.code)
    assert review.step_id == "review"
    assert session.scalar(select(func.count()).select_from(Task)) == 2


def test_dossier_codes_are_sequential_per_agency_and_day(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("rework_loop.bpmn"), actor="designer", now=now)
    codes = [
        services.start_dossier(session, "1.999002", {}, actor="desk", now=now, agency_code=agency).code
        for agency in ("000.17.22.H56", "000.17.22.H56", "000.00.01.H56", "000.17.22.H56")
    ]
    next_day = services.start_dossier(session, "1.999002", {}, actor="desk", now=now + timedelta(days=1), agency_code="000.17.22.H56")
    assert codes == ["000.17.22.H56-260302-0001", "000.17.22.H56-260302-0002", "000.00.01.H56-260302-0001", "000.17.22.H56-260302-0003"]
    assert next_day.code == "000.17.22.H56-260303-0001"


def test_calendar_overrides_move_due_dates(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("rework_loop.bpmn"), actor="designer", now=now)
    services.add_calendar_override(session, datetime(2026, 3, 3).date(), "day_off", "Nghỉ bù", actor="admin", now=now)
    dossier = services.start_dossier(session, "1.999002", {}, actor="desk", now=now)
    [handle] = services.open_tasks(session, dossier.code)
    # 2 working days from Monday 08:00 with Tuesday off → Thursday 08:00.
    assert handle.due_at.astimezone(VN_TZ) == datetime(2026, 3, 5, 8, 0, tzinfo=VN_TZ)
    with pytest.raises(InvalidRequest):
        services.add_calendar_override(session, datetime(2026, 3, 4).date(), "holiday", None, actor="admin", now=now)


@pytest.mark.parametrize(
    "answers, expected_branches",
    [({"has_land": True, "has_house": True}, {"x", "y"}), ({"has_land": False, "has_house": True}, {"y"}), ({"has_land": False, "has_house": False}, {"z"})],
)
def test_inclusive_gateway_and_embedded_subprocess(session: Session, now: datetime, answers: dict, expected_branches: set) -> None:
    services.deploy(session, fixture_bytes("inclusive_subprocess.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999004", {}, actor="desk", now=now)
    [classify] = services.open_tasks(session, dossier.code)
    services.complete_task(session, classify.id, answers, actor="officer", now=now)
    branches = services.open_tasks(session, dossier.code)
    assert {t.step_id for t in branches} == expected_branches
    for task in branches:
        services.complete_task(session, task.id, {}, actor="officer", now=now)
    [inner] = services.open_tasks(session, dossier.code)
    assert inner.step_id == "sub_t"  # the join waited for exactly the branches taken
    services.complete_task(session, inner.id, {}, actor="officer", now=now)
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSED


def test_parallel_block_inside_a_rework_loop(session: Session, now: datetime) -> None:
    services.deploy(session, fixture_bytes("parallel_loop.bpmn"), actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999005", {}, actor="desk", now=now)
    sizes = []
    for round_ in range(6):
        branches = services.open_tasks(session, dossier.code)
        assert sorted(t.step_id for t in branches) == ["a", "b"], (round_, branches)
        # Complete in alternating order: the join must wait for both every time.
        for task in branches if round_ % 2 else reversed(branches):
            assert "review" not in {t.step_id for t in services.open_tasks(session, dossier.code)}
            services.complete_task(session, task.id, {}, actor="officer", now=now)
        [review] = services.open_tasks(session, dossier.code)
        assert review.step_id == "review"
        services.complete_task(session, review.id, {"rework": round_ < 5}, actor="leader", now=now)
        sizes.append(len(services.get_dossier(session, dossier.code).workflow_state))
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSED
    assert max(sizes[:-1]) <= sizes[0] * 1.2, sizes
