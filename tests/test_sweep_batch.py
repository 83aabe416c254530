"""The deadline sweep fires a batch of steps in bulk: the same rows as one step at a time, each rung once."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine import escalation, lifecycle, organisation, services
from engine.core.calendar import VN_TZ
from engine.persistence.models import AuditEvent, Dossier, Escalation, Officer, OutboxMessage, Task

PROVINCE, DISTRICT_1, DISTRICT_2 = "000.00.00.H19", "000.15.00.H19", "000.16.00.H19"
COMMUNE_1, COMMUNE_2, COMMUNE_3 = "000.15.22.H19", "000.15.23.H19", "000.16.24.H19"

# Three tiers: the supervisors of a commune's steps are those of its district and of the province.
# Officers reach by e-mail, by SMS only, or by neither (the log); one supervisor sits at two levels.
# Usernames are listed out of order: recipients come by username, not by when they were created.
ORGANISATION = f"""
agencies:
  - code: {PROVINCE}
    name: UBND tỉnh Đồng Nai
    level: province
    children:
      - code: {DISTRICT_1}
        name: UBND huyện Nhơn Trạch
        level: district
        children:
          - {{code: {COMMUNE_1}, name: UBND xã Phước An, level: commune}}
          - {{code: {COMMUNE_2}, name: UBND xã Long Thọ, level: commune}}
      - code: {DISTRICT_2}
        name: UBND huyện Long Thành
        level: district
        children:
          - {{code: {COMMUNE_3}, name: UBND xã Đại Phước, level: commune}}
officers:
  - {{username: cv.phuocan.b, full_name: Trần Văn Hùng, email: hung@phuocan.gov.vn, roles: [{{agency: {COMMUNE_1}, role: officer}}]}}
  - {{username: cv.phuocan.c, full_name: Mai Văn Cường, email: cuong@phuocan.gov.vn, roles: [{{agency: {COMMUNE_1}, role: officer}}]}}
  - {{username: cv.phuocan.a, full_name: Lê Thị Mai, phone: "0912000001", roles: [{{agency: {COMMUNE_1}, role: officer}}]}}
  - {{username: cv.phuocan.nghi, full_name: Phạm Văn Nghỉ, email: nghi@phuocan.gov.vn, roles: [{{agency: {COMMUNE_1}, role: officer}}]}}
  - {{username: tp.phuocan, full_name: Đỗ Minh Tuấn, roles: [{{agency: {COMMUNE_1}, role: head_of_unit}}]}}
  - {{username: ld.phuocan, full_name: Vũ Thu Hà, email: ha@phuocan.gov.vn, roles: [{{agency: {COMMUNE_1}, role: leader}}]}}
  - {{username: cv.longtho, full_name: Hoàng Văn Bình, email: binh@longtho.gov.vn, roles: [{{agency: {COMMUNE_2}, role: officer}}]}}
  - {{username: tp.longtho, full_name: Bùi Văn Long, phone: "0912000002", roles: [{{agency: {COMMUNE_2}, role: head_of_unit}}]}}
  - {{username: cv.daiphuoc, full_name: Ngô Thị Hoa, email: hoa@daiphuoc.gov.vn, roles: [{{agency: {COMMUNE_3}, role: officer}}]}}
  - {{username: tp.daiphuoc, full_name: Lý Văn Nam, email: nam@daiphuoc.gov.vn, roles: [{{agency: {COMMUNE_3}, role: head_of_unit}}]}}
  - {{username: ld.daiphuoc, full_name: Đặng Thị Thu, phone: "0912000003", roles: [{{agency: {COMMUNE_3}, role: leader}}]}}
  - {{username: gs.nhontrach, full_name: Văn phòng UBND huyện Nhơn Trạch, phone: "0912000004", roles: [{{agency: {DISTRICT_1}, role: supervisor}}]}}
  - {{username: gs.chung, full_name: Thanh tra tỉnh, email: thanhtra@dongnai.gov.vn, roles: [{{agency: {PROVINCE}, role: supervisor}}, {{agency: {DISTRICT_1}, role: supervisor}}]}}
  - {{username: gs.tinh, full_name: Văn phòng UBND tỉnh, email: giamsat@dongnai.gov.vn, roles: [{{agency: {PROVINCE}, role: supervisor}}]}}
"""

_NS = 'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn"'


def _props(**values: str) -> str:
    inner = "".join(f'<camunda:property name="{k}" value="{v}"/>' for k, v in values.items())
    return f"<bpmn:extensionElements><camunda:properties>{inner}</camunda:properties></bpmn:extensionElements>"


def _diagram(code: str, ladder: str) -> dict[str, bytes]:
    """One step for an officer of the dossier's commune (two working days), with its escalation ladder."""
    process = f"P{code.replace('.', '_')}"
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions {_NS} id="d{process}" targetNamespace="test">'
        f'<bpmn:process id="{process}" name="Thủ tục {code}" isExecutable="true">'
        + _props(code=code, level="commune", deadline="5 working days", escalation=ladder)
        + '<bpmn:laneSet id="ls">'
        f'<bpmn:lane id="lane_officer" name="Chuyên viên">{_props(role="officer", agency="home")}<bpmn:flowNodeRef>xu_ly</bpmn:flowNodeRef></bpmn:lane>'
        "</bpmn:laneSet>"
        '<bpmn:startEvent id="start"/>'
        f'<bpmn:userTask id="xu_ly" name="Xử lý hồ sơ">{_props(allotment="2 working days")}</bpmn:userTask>'
        '<bpmn:endEvent id="end"/>'
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="xu_ly"/>'
        '<bpmn:sequenceFlow id="f2" sourceRef="xu_ly" targetRef="end"/>'
        "</bpmn:process></bpmn:definitions>"
    )
    return {f"{process}.bpmn": xml.encode()}


FULL, SHORT = "9.000001", "9.000002"
CLAIMERS = {COMMUNE_1: "cv.phuocan.a", COMMUNE_2: "cv.longtho", COMMUNE_3: "cv.daiphuoc"}


def _seed(sessions: sessionmaker[Session], now: datetime, per_commune: int = 3) -> list[str]:
    """Dossiers of two procedures (two ladders) in three communes, started on two days; some steps claimed.

    Returns the dossier codes.
    """
    codes = []
    with sessions() as session:
        organisation.load_organisation(session, organisation.parse_organisation(ORGANISATION), "admin", now)
        session.execute(update(Officer).where(Officer.username == "cv.phuocan.nghi").values(active=False))
        session.commit()
        services.deploy(session, _diagram(FULL, "warning=-4h, head_of_unit=0h, leader=1d, supervisor=2d"), actor="designer", now=now)
        services.deploy(session, _diagram(SHORT, "warning=-8h, head_of_unit=0h, supervisor=1d"), actor="designer", now=now)
        for day in (0, 2):
            started = now + timedelta(days=day)
            for commune in (COMMUNE_1, COMMUNE_2, COMMUNE_3):
                for n in range(per_commune):
                    record = services.start_dossier(
                        session, FULL if n % 2 == 0 else SHORT, {}, actor="desk", now=started + timedelta(minutes=n), agency_code=commune
                    )
                    codes.append(record.code)
                    if n == 1:  # the warning of a claimed step goes to its assignee alone
                        step = session.scalars(select(Task).where(Task.dossier_id == record.id)).one()
                        lifecycle.claim(session, step.id, CLAIMERS[commune], started + timedelta(minutes=n + 1))
    return codes


def _escalation_rows(session: Session, audit_after: int) -> dict[str, list[tuple[Any, ...]]]:
    """What the sweeps wrote, in the order written (ids left out)."""
    return {
        "escalations": [
            tuple(r) for r in session.execute(
                select(Escalation.task_id, Escalation.dossier_id, Escalation.level, Escalation.due_at, Escalation.state, Escalation.fired_at)
                .order_by(Escalation.id)
            )
        ],
        "outbox": [
            tuple(r) for r in session.execute(
                select(
                    OutboxMessage.created_at, OutboxMessage.channel, OutboxMessage.recipient, OutboxMessage.subject,
                    OutboxMessage.body, OutboxMessage.event, OutboxMessage.dossier_id, OutboxMessage.state,
                    OutboxMessage.attempts, OutboxMessage.next_attempt_at, OutboxMessage.last_error, OutboxMessage.sent_at,
                )
                .where(OutboxMessage.event.like("escalation.%"))
                .order_by(OutboxMessage.id)
            )
        ],
        "audit": [
            (r.at, r.actor, r.action, r.dossier_id, r.task_id, r.subject, r.from_state, r.to_state, r.details)
            for r in session.execute(
                select(AuditEvent).where(AuditEvent.action == "task.escalate", AuditEvent.id > audit_after).order_by(AuditEvent.id)
            ).scalars()
        ],
        "tasks": [tuple(r) for r in session.execute(select(Task.id, Task.escalation_level, Task.escalation_at).order_by(Task.id))],
    }


def _instants(now: datetime) -> list[datetime]:
    """Sweeps on Tuesday 14:00 (the first warnings), Wednesday 09:00, Thursday 12:00 and a month later (every rung left, at once)."""
    return [now + timedelta(days=1, hours=6), now + timedelta(days=2, hours=1), now + timedelta(days=3, hours=4), now + timedelta(days=30)]


def test_bulk_sweep_writes_the_same_rows_as_firing_step_by_step(
    db_engine: Engine, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    _seed(sessions, now)
    with sessions() as session:
        rungs_before = session.execute(select(Task.id, Task.escalation_level, Task.escalation_at)).all()
        audit_mark = session.scalar(select(func.max(AuditEvent.id))) or 0
    bulk_reports = [escalation.sweep(sessions, at, batch=5) for at in _instants(now) for _ in range(6)]
    with sessions() as session:
        bulk = _escalation_rows(session, audit_mark)
        # Start again from the same rungs, and fire one step at a time: the path taken when a batch fails.
        session.execute(delete(Escalation))
        session.execute(delete(OutboxMessage).where(OutboxMessage.event.like("escalation.%")))
        for task_id, level, at in rungs_before:
            session.execute(update(Task).where(Task.id == task_id).values(escalation_level=level, escalation_at=at))
        session.commit()
        audit_mark = session.scalar(select(func.max(AuditEvent.id))) or 0

    def broken_batch(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the batch cannot be fired at once")

    monkeypatch.setattr(escalation, "_fire_batch", broken_batch)
    single_reports = [escalation.sweep(sessions, at, batch=5) for at in _instants(now) for _ in range(6)]
    with sessions() as session:
        single = _escalation_rows(session, audit_mark)

    assert [(r.fired, r.messages, r.failed) for r in bulk_reports] == [(r.fired, r.messages, r.failed) for r in single_reports]
    assert sum(r.failed for r in bulk_reports) == 0
    for table in ("escalations", "outbox", "audit", "tasks"):
        assert bulk[table] == single[table], table
    # 18 steps: twelve on the four-rung ladder, six on the three-rung one, every rung fired.
    assert len(bulk["escalations"]) == 12 * 4 + 6 * 3
    assert all(level is None for _, level, _ in bulk["tasks"])
    sent_to = {(event, channel, recipient) for _, channel, recipient, _, _, event, *_ in bulk["outbox"]}
    assert ("escalation.warning", "sms", "0912000001") in sent_to  # a claimed step warns its assignee, by SMS
    assert ("escalation.head_of_unit", "log", "tp.phuocan") in sent_to  # no e-mail nor phone: the log
    assert not any(recipient == "nghi@phuocan.gov.vn" for _, _, recipient in sent_to)  # inactive officers hear nothing
    officers = {tuple(details["recipients"]) for *_, to_state, details in bulk["audit"] if to_state == "warning"}
    assert ("cv.phuocan.a", "cv.phuocan.b", "cv.phuocan.c") in officers  # an unclaimed step warns every officer there
    supervisors = {
        tuple(details["recipients"]) for *_, to_state, details in bulk["audit"] if to_state == "supervisor"
    }
    # District 1's communes: its supervisors and the province's, each once, by username; district 2's: the province's.
    assert supervisors == {("gs.chung", "gs.nhontrach", "gs.tinh"), ("gs.chung", "gs.tinh")}


def test_due_rungs_of_one_step_fire_in_ladder_order(db_engine: Engine, now: datetime) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    _seed(sessions, now, per_commune=1)
    report = escalation.sweep(sessions, now + timedelta(days=30))
    assert (report.fired, report.failed) == (6 * 4, 0)
    with sessions() as session:
        task_id = session.scalars(select(Task.id).where(Task.agency == COMMUNE_1).order_by(Task.id)).first()
        fired = session.execute(
            select(Escalation.level, Escalation.due_at).where(Escalation.task_id == task_id).order_by(Escalation.id)
        ).all()
        audited = session.scalars(
            select(AuditEvent.to_state).where(AuditEvent.action == "task.escalate", AuditEvent.task_id == task_id).order_by(AuditEvent.id)
        ).all()
        task = session.get(Task, task_id)
        assert task is not None
        events = session.scalars(
            select(OutboxMessage.event).where(OutboxMessage.dossier_id == task.dossier_id, OutboxMessage.event.like("escalation.%"))
            .order_by(OutboxMessage.id)
        ).all()
    assert [level for level, _ in fired] == audited == ["warning", "head_of_unit", "leader", "supervisor"]
    dues = [at for _, at in fired]
    assert dues == sorted(dues) and len(set(dues)) == 4
    # Started Monday 08:00 with two working days (07:30-11:30, 13:00-17:00): due Wednesday 08:00,
    # the warning four working hours before it, on Tuesday at 13:30.
    assert dues[1] == datetime(2026, 3, 4, 8, 0, tzinfo=VN_TZ)
    assert dues[0] == datetime(2026, 3, 3, 13, 30, tzinfo=VN_TZ)
    # Three officers (one inactive left out), the head of unit, the leader, three supervisors.
    assert events == ["escalation.warning"] * 3 + ["escalation.head_of_unit", "escalation.leader"] + ["escalation.supervisor"] * 3
    assert (task.escalation_level, task.escalation_at) == (None, None)
    assert escalation.sweep(sessions, now + timedelta(days=60)).fired == 0


def test_a_paused_dossier_does_not_escalate(db_engine: Engine, now: datetime) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    codes = _seed(sessions, now, per_commune=1)
    paused = codes[0]
    with sessions() as session:
        lifecycle.request_supplement(session, paused, ["Bản sao giấy tờ tùy thân"], "cv.phuocan.b", now + timedelta(hours=1))
    report = escalation.sweep(sessions, now + timedelta(days=30))
    assert report.failed == 0
    with sessions() as session:
        by_code = dict(session.execute(
            select(Dossier.code, func.count(Escalation.id))
            .join(Escalation, Escalation.dossier_id == Dossier.id, isouter=True)
            .group_by(Dossier.code)
        ).all())
    assert by_code[paused] == 0
    assert all(count > 0 for code, count in by_code.items() if code != paused)
    assert report.fired == sum(by_code.values())


def test_one_broken_rung_does_not_stop_the_batch(db_engine: Engine, now: datetime) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    _seed(sessions, now, per_commune=1)
    with sessions() as session:
        broken = session.execute(select(Task.id, Task.dossier_id, Task.escalation_at).order_by(Task.id)).first()
        assert broken is not None
        # A stray record of the step's warning: firing it again breaks the unique (step, rung) rule.
        session.add(Escalation(task_id=broken.id, dossier_id=broken.dossier_id, level="warning", due_at=broken.escalation_at, state="fired"))
        session.commit()
    report = escalation.sweep(sessions, now + timedelta(days=30))
    assert report.failed == 1
    with sessions() as session:
        fired = session.execute(select(Escalation.task_id, Escalation.level)).all()
        still = session.execute(select(Task.escalation_level).where(Task.id == broken.id)).scalar_one()
        broken_messages = session.scalar(
            select(func.count()).select_from(OutboxMessage)
            .where(OutboxMessage.dossier_id == broken.dossier_id, OutboxMessage.event.like("escalation.%"))
        )
        steps = session.scalar(select(func.count()).select_from(Task))
    assert still == "warning"  # left at its rung, for someone to look at; nothing of it half-done
    assert broken_messages == 0
    assert [row for row in fired if row.task_id == broken.id] == [(broken.id, "warning")]
    others = [row for row in fired if row.task_id != broken.id]
    assert len(others) == len(set(others)) == report.fired == (steps - 1) * 4  # six steps on the four-rung ladder


def test_two_sweepers_at_once_fire_every_rung_exactly_once(db_engine: Engine, now: datetime, caplog: pytest.LogCaptureFixture) -> None:
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    _seed(sessions, now, per_commune=4)
    reports: list[escalation.SweepReport] = []
    errors: list[BaseException] = []
    # Each sweep waits, once it has read its due steps, until the other has read its own: on SQLite
    # both then hold the same steps and race to fire them; on PostgreSQL each skips the other's.
    met = threading.Barrier(2, timeout=60)

    def meet(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "tasks.escalation_at <=" in statement:
            met.wait()

    def sweeper() -> None:
        try:
            for at in _instants(now):
                for _ in range(8):  # small batches: several sweeps per instant
                    reports.append(escalation.sweep(sessions, at, batch=3))
        except BaseException as err:  # reported below
            errors.append(err)
            met.abort()

    event.listen(db_engine, "after_cursor_execute", meet)
    try:
        threads = [threading.Thread(target=sweeper) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
            assert not t.is_alive()
    finally:
        event.remove(db_engine, "after_cursor_execute", meet)
    assert errors == []
    # The sweepers shared the work through the compare-and-set, not by failing a batch.
    assert not [r for r in caplog.records if r.name == "engine.escalation"]
    with sessions() as session:
        fired = session.execute(select(Escalation.task_id, Escalation.level)).all()
        audited = session.execute(
            select(AuditEvent.task_id, AuditEvent.to_state).where(AuditEvent.action == "task.escalate")
        ).all()
        recipients = sum(
            len(details["recipients"])
            for details in session.scalars(select(AuditEvent.details).where(AuditEvent.action == "task.escalate"))
        )
        messages = session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.event.like("escalation.%")))
        left = session.scalar(select(func.count()).select_from(Task).where(Task.escalation_level.is_not(None)))
    assert sum(r.failed for r in reports) == 0
    # 24 steps: twelve on the four-rung ladder, twelve on the three-rung one.
    assert len(fired) == len(set(fired)) == sum(r.fired for r in reports) == 12 * 4 + 12 * 3
    assert sorted(audited) == sorted(fired)
    assert messages == recipients == sum(r.messages for r in reports)
    assert left == 0
