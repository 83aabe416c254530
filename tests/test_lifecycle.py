"""The one-stop job end to end: agencies, liên thông routing, pauses, deadlines,
escalations, the apology, the return — on SQLite and PostgreSQL, with a fixed clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine import documents, escalation, lifecycle, organisation, services
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, Forbidden, InvalidRequest, NotFound
from engine.persistence.models import (
    Agency,
    AuditEvent,
    Escalation,
    Handover,
    OutboxMessage,
    Task,
)

from .conftest import FIXTURES, fixture_bytes

XA = "000.17.22.H19"  # UBND xã Phước An
XA2_DESK = "000.17.23.H19"  # another commune's desk
VPDK = "000.00.31.H19"
THUE = "000.00.40.H19"


def vn(*args: int) -> datetime:
    return datetime(*args, tzinfo=VN_TZ)


def _load(session: Session, name: str, now: datetime) -> None:
    text = (FIXTURES / name).read_text()
    organisation.load_organisation(session, organisation.parse_organisation(text, name), actor="admin", now=now)


def _agency_code(session: Session, agency_id: int | None) -> str | None:
    return session.get(Agency, agency_id).code if agency_id else None


def _only(session: Session, code: str) -> Task:
    [task] = services.open_tasks(session, code)
    return session.get(Task, task.id, populate_existing=True)


@pytest.fixture
def province(session: Session, now: datetime) -> Session:
    _load(session, "org_two_tier.yaml", now)
    services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
    return session


def test_lanes_resolve_in_two_and_three_tier_provinces(session: Session, now: datetime) -> None:
    _load(session, "org_two_tier.yaml", now)
    tree = organisation.agency_tree(session, fresh=True)
    home = tree.by_code[XA].id
    assert tree.nodes[tree.resolve("named:vpdk", home)].code == VPDK
    assert tree.nodes[tree.resolve("parent", home)].code == "000.00.00.H19"
    assert tree.nodes[tree.resolve("dossier.province", home)].code == "000.00.00.H19"
    with pytest.raises(ValueError):
        tree.resolve("dossier.district", home)  # no districts any more
    _load(session, "org_three_tier.yaml", now)
    tree = organisation.agency_tree(session, fresh=True)
    home = tree.by_code["000.15.22.H19"].id
    assert tree.nodes[tree.resolve("named:vpdk", home)].code == "000.15.31.H19"  # the district branch first
    assert tree.nodes[tree.resolve("named:thue", home)].code == "000.15.40.H19"
    assert tree.nodes[tree.resolve("dossier.district", home)].code == "000.00.15.H19"
    assert tree.nodes[tree.resolve("parent.parent", home)].code == "000.00.00.H19"


def test_full_lien_thong_dossier(province: Session, db_engine: Engine) -> None:
    session = province
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    # Received at another commune's desk for Phước An, Friday before Tết 2026.
    received = vn(2026, 2, 13, 10, 0)
    dossier = services.start_dossier(
        session, "1.999010", {"thua_dat": "Tờ 12, thửa 345"}, actor="long.desk", now=received,
        agency_code=XA2_DESK, home_agency_code=XA, applicant={"name": "Nguyễn Văn An", "phone": "0987654321"},
    )
    assert dossier.code == f"{XA2_DESK}-260213-0001"
    # 12 working days from Fri 13/2 10:00 (5.5 h that day), Tết 16–20/2 off,
    # 11 full days from Mon 23/2, 2.5 h more → Tue 10/3/2026 10:00.
    assert dossier.due_at.astimezone(VN_TZ) == vn(2026, 3, 10, 10, 0)
    receive = _only(session, dossier.code)
    assert (_agency_code(session, receive.agency_id), receive.role) == (XA, "receptionist")

    # Only a receptionist of Phước An may take it.
    with pytest.raises(Forbidden):
        lifecycle.claim(session, receive.id, "long.desk", received)
    lifecycle.claim(session, receive.id, "lan.desk", received + timedelta(minutes=5))
    with pytest.raises(Forbidden):  # not a receptionist: refused before learning who holds the step
        services.complete_task(session, receive.id, {}, actor="hung.xa", now=received)
    services.complete_task(session, receive.id, {}, actor="lan.desk", now=vn(2026, 2, 13, 11, 0))
    confirm = _only(session, dossier.code)
    assert (_agency_code(session, confirm.agency_id), confirm.role) == (XA, "officer")
    # 2 working days from Fri 13/2 11:00 across Tết → Tue 24/2 11:00.
    assert confirm.due_at.astimezone(VN_TZ) == vn(2026, 2, 24, 11, 0)

    # Supplement: the clock stops Mon 23/2 09:00 and restarts Wed 25/2 09:00.
    with pytest.raises(Conflict):
        lifecycle.resume(session, dossier.code, "hung.xa", vn(2026, 2, 23, 8, 0))  # not paused yet
    lifecycle.request_supplement(session, dossier.code, ["Bản sao giấy tờ tùy thân"], "hung.xa", vn(2026, 2, 23, 9, 0))
    paused = services.get_dossier(session, dossier.code)
    assert (paused.status, paused.supplement_requests) == (services.DossierStatus.SUPPLEMENT_REQUESTED, 1)
    with pytest.raises(Conflict):
        services.complete_task(session, confirm.id, {}, actor="hung.xa", now=vn(2026, 2, 24, 9, 0))
    lifecycle.resume(session, dossier.code, "lan.desk", vn(2026, 2, 25, 9, 0))
    resumed = services.get_dossier(session, dossier.code)
    assert resumed.status == services.DossierStatus.PROCESSING
    # Paused 2 working days (Mon 9:00 → Wed 9:00): every due date moves by 16 working hours.
    assert resumed.due_at.astimezone(VN_TZ) == vn(2026, 3, 12, 10, 0)
    confirm = session.get(Task, confirm.id, populate_existing=True)
    assert confirm.due_at.astimezone(VN_TZ) == vn(2026, 2, 26, 11, 0)

    services.complete_task(session, confirm.id, {"xac_nhan": "Đất ở, sử dụng ổn định"}, actor="hung.xa", now=vn(2026, 2, 25, 10, 0))
    survey = _only(session, dossier.code)
    assert _agency_code(session, survey.agency_id) == VPDK
    # 5 working days from Wed 25/2 10:00 → Wed 4/3 10:00.
    assert survey.due_at.astimezone(VN_TZ) == vn(2026, 3, 4, 10, 0)
    with pytest.raises(Forbidden):
        services.complete_task(session, survey.id, {}, actor="hung.xa", now=vn(2026, 2, 26, 8, 0))

    # Nobody at the land office takes it: the sweep escalates, each rung once.
    report = escalation.sweep(sessions, vn(2026, 3, 4, 10, 0))
    assert report.fired == 2  # the warning (half a day before) and the head of unit at the due time
    again = escalation.sweep(sessions, vn(2026, 3, 4, 10, 30))
    assert again.fired == 0
    later = escalation.sweep(sessions, vn(2026, 3, 5, 10, 0))
    assert later.fired == 1  # the land office's leader, a working day late
    levels = session.scalars(select(Escalation.level).where(Escalation.task_id == survey.id, Escalation.state == "fired").order_by(Escalation.due_at)).all()
    assert levels == ["warning", "head_of_unit", "leader"]
    recipients = set(session.scalars(select(OutboxMessage.recipient).where(OutboxMessage.event.like("escalation.%"))))
    assert recipients == {"mai@vpdk.gov.vn", "son@vpdk.gov.vn", "tuan@vpdk.gov.vn", "ha@vpdk.gov.vn"}

    # The land office apologises with a new appointment, signed by its leader — once.
    with pytest.raises(Forbidden):
        lifecycle.issue_apology(session, dossier.code, vn(2026, 3, 16, 17, 0), "Chờ đo đạc", VPDK, "mai.vpdk", "mai.vpdk", vn(2026, 3, 4, 15, 0))
    lifecycle.issue_apology(session, dossier.code, vn(2026, 3, 16, 17, 0), "Chờ đo đạc bổ sung", VPDK, "ha.vpdk", "mai.vpdk", vn(2026, 3, 4, 15, 0))
    with pytest.raises(Conflict, match="only once"):
        lifecycle.issue_apology(session, dossier.code, vn(2026, 3, 18, 17, 0), "Lần hai", VPDK, "ha.vpdk", "mai.vpdk", vn(2026, 3, 5, 15, 0))
    assert services.get_dossier(session, dossier.code).due_at.astimezone(VN_TZ) == vn(2026, 3, 16, 17, 0)

    lifecycle.reassign(session, survey.id, "son.vpdk", "ha.vpdk", vn(2026, 3, 5, 11, 0))
    services.complete_task(session, survey.id, {}, actor="son.vpdk", now=vn(2026, 3, 5, 16, 0))
    assert session.get(Task, survey.id, populate_existing=True).result == "late"
    tax = _only(session, dossier.code)
    assert _agency_code(session, tax.agency_id) == THUE
    lifecycle.claim(session, tax.id, "binh.thue", vn(2026, 3, 6, 8, 0))
    services.complete_task(session, tax.id, {"so_tien": 1_250_000}, actor="binh.thue", now=vn(2026, 3, 6, 9, 0))
    back = _only(session, dossier.code)
    assert (_agency_code(session, back.agency_id), back.role) == (XA, "receptionist")
    assert session.get(Task, tax.id, populate_existing=True).result == "early"
    services.complete_task(session, back.id, {}, actor="lan.desk", now=vn(2026, 3, 9, 8, 0))
    done = services.get_dossier(session, dossier.code)
    assert done.status == services.DossierStatus.PROCESSED

    lifecycle.return_result(session, dossier.code, "desk", "lan.desk", vn(2026, 3, 9, 9, 0))
    with pytest.raises(Conflict, match="already returned"):
        lifecycle.return_result(session, dossier.code, "desk", "lan.desk", vn(2026, 3, 9, 9, 5))
    returned = services.get_dossier(session, dossier.code)
    assert (returned.status, returned.return_channel) == (services.DossierStatus.RETURNED, "desk")

    # The control slip: every hand-over between agencies, who sent, who received, when.
    slip = session.execute(
        select(Handover.from_agency_id, Handover.to_agency_id, Handover.sent_by, Handover.received_by)
        .where(Handover.dossier_id == done.id)
        .order_by(Handover.id)
    ).all()
    codes = [(_agency_code(session, a), _agency_code(session, b), s, r) for a, b, s, r in slip]
    assert codes == [
        (XA2_DESK, XA, "long.desk", "lan.desk"),
        (XA, VPDK, "hung.xa", "son.vpdk"),
        (VPDK, THUE, "son.vpdk", "binh.thue"),
        (THUE, XA, "binh.thue", None),
    ]
    # The applicant heard of the receipt, the supplement, the new appointment and the result.
    events = session.scalars(
        select(OutboxMessage.event).where(OutboxMessage.recipient == "0987654321").order_by(OutboxMessage.id)
    ).all()
    assert events == ["dossier.received", "dossier.supplement_requested", "dossier.new_appointment", "dossier.result_ready"]
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.dossier_id == done.id)).all()
    assert {"dossier.pause", "dossier.resume", "task.escalate", "dossier.apology", "task.reassign"} <= set(actions)

    # The forms, filled from the record: the control slip judges each hand-over's step.
    rows = documents.form_context(session, dossier.code, "05", "https://dichvucong.dongnai.gov.vn").slip
    assert [r.handed_at for r in rows] == sorted(r.handed_at for r in rows)
    moves = [r for r in rows if r.note.startswith("Lãnh đạo giao lại")]  # the leader's reassignment is on the slip too
    assert len(moves) == 1 and moves[0].agency == "Văn phòng Đăng ký đất đai tỉnh"
    assert [(r.agency, r.result) for r in rows if r not in moves] == [
        ("UBND xã Phước An", ""),
        ("Văn phòng Đăng ký đất đai tỉnh", "early"),  # the commune's confirmation, handed on early
        ("Thuế tỉnh Đồng Nai", "late"),  # the land office's survey, late
        ("UBND xã Phước An", "early"),
    ]
    slip = documents.render(session, dossier.code, "05", "https://dichvucong.dongnai.gov.vn").decode()
    assert "Văn phòng Đăng ký đất đai tỉnh" in slip and "Thuế tỉnh Đồng Nai" in slip and "Phạm Văn Sơn" in slip
    assert "tra-cuu?ma=" + dossier.code in slip or "<svg" in slip
    receipt = documents.render(session, dossier.code, "01", "https://dichvucong.dongnai.gov.vn").decode()
    assert "Nguyễn Văn An" in receipt and "Bùi Văn Long" in receipt  # applicant, and the receptionist who took it
    supplement = documents.render(session, dossier.code, "02", "https://dichvucong.dongnai.gov.vn").decode()
    assert "Bản sao giấy tờ tùy thân" in supplement
    apology = documents.render(session, dossier.code, "04", "https://dichvucong.dongnai.gov.vn", pdf=True)
    assert apology.startswith(b"%PDF")
    with pytest.raises(Conflict):
        documents.render(session, dossier.code, "03", "https://dichvucong.dongnai.gov.vn")  # it was not refused


def test_return_to_previous_step_goes_back_to_its_officer(province: Session) -> None:
    session = province
    dossier = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=vn(2026, 3, 2, 8, 0), agency_code=XA)
    receive = _only(session, dossier.code)
    with pytest.raises(Conflict, match="first step"):
        lifecycle.return_to_previous(session, receive.id, "Thiếu giấy tờ", "lan.desk", vn(2026, 3, 2, 8, 10))
    services.complete_task(session, receive.id, {}, actor="lan.desk", now=vn(2026, 3, 2, 9, 0))
    confirm = _only(session, dossier.code)
    with pytest.raises(InvalidRequest):
        lifecycle.return_to_previous(session, confirm.id, "  ", "hung.xa", vn(2026, 3, 2, 10, 0))
    lifecycle.return_to_previous(session, confirm.id, "Hồ sơ thiếu trang 2", "hung.xa", vn(2026, 3, 2, 10, 0))
    again = _only(session, dossier.code)
    assert (again.step_id, again.assignee, again.state) == ("receive", "lan.desk", "claimed")
    services.complete_task(session, again.id, {}, actor="lan.desk", now=vn(2026, 3, 2, 11, 0))
    assert _only(session, dossier.code).step_id == "confirm"
    returns = session.scalars(select(AuditEvent).where(AuditEvent.action == "task.return")).all()
    assert [r.details["reason"] for r in returns] == ["Hồ sơ thiếu trang 2"]


def test_bad_requests_are_refused_and_change_nothing(province: Session) -> None:
    session = province
    now = vn(2026, 3, 2, 8, 0)
    dossier = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now, agency_code=XA)
    with pytest.raises(Conflict):
        lifecycle.return_result(session, dossier.code, "desk", "lan.desk", now)  # not processed yet
    with pytest.raises(InvalidRequest):
        lifecycle.return_result(session, dossier.code, "pigeon", "lan.desk", now)
    with pytest.raises(NotFound):
        services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now, agency_code=XA, home_agency_code="nowhere")
    lifecycle.withdraw(session, dossier.code, "Công dân xin rút", "lan.desk", now + timedelta(hours=1))
    with pytest.raises(Conflict):
        lifecycle.request_supplement(session, dossier.code, ["x"], "hung.xa", now + timedelta(hours=2))
    withdrawn = services.get_dossier(session, dossier.code)
    assert withdrawn.status == services.DossierStatus.WITHDRAWN
    assert services.open_tasks(session, dossier.code) == []
    refused = lifecycle.refuse(session, "1.999010", ["Không thuộc thẩm quyền"], "lan.desk", now, agency_code=XA)
    assert refused.status == services.DossierStatus.REFUSED and refused.code.endswith("-0002")


def test_financial_obligation_pause_only_where_declared(province: Session, now: datetime) -> None:
    session = province
    services.deploy(session, fixture_bytes("rework_loop.bpmn"), actor="designer", now=now)
    plain = services.start_dossier(session, "1.999002", {}, actor="lan.desk", now=now, agency_code=XA)
    with pytest.raises(Conflict, match="financial obligation"):
        lifecycle.request_payment(session, plain.code, ["Lệ phí trước bạ"], "hung.xa", now)
    land = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now, agency_code=XA)
    paid = lifecycle.request_payment(session, land.code, ["Lệ phí trước bạ"], "binh.thue", now)
    assert paid.status == services.DossierStatus.FINANCIAL_OBLIGATION
    assert lifecycle.resume(session, land.code, "binh.thue", now + timedelta(days=1)).status == services.DossierStatus.RECEIVED


def test_abolishing_the_district_moves_work_to_successors(session: Session, now: datetime) -> None:
    _load(session, "org_three_tier.yaml", now)
    services.deploy(session, fixture_bytes("land_joint.bpmn"), actor="designer", now=now)
    commune, branch, province_office = "000.15.22.H19", "000.15.31.H19", VPDK
    dossier = services.start_dossier(session, "1.999010", {}, actor="desk3", now=now, agency_code=commune)
    for _ in range(2):
        task = _only(session, dossier.code)
        services.complete_task(session, task.id, {}, actor="desk3", now=now)
    survey = _only(session, dossier.code)
    assert _agency_code(session, survey.agency_id) == branch
    due_before = survey.due_at
    # 1/7/2025: districts are abolished; the branch merges into the province's office,
    # the district's other units and the commune move under the province.
    moved = organisation.reorganise(
        session, {branch: province_office, "000.15.40.H19": THUE, "000.00.15.H19": "000.00.00.H19"}, "admin", now
    )
    assert moved["tasks"] == 1
    survey = session.get(Task, survey.id, populate_existing=True)
    assert (_agency_code(session, survey.agency_id), survey.due_at) == (province_office, due_before)
    tree = organisation.agency_tree(session)
    assert tree.nodes[tree.by_code[commune].parent_id].code == "000.00.00.H19"
    # Lookup by the code issued before still works, and the slip keeps the old hand-over.
    assert services.get_dossier(session, dossier.code).code == dossier.code
    slip = session.execute(select(Handover.to_agency_id).where(Handover.dossier_id == dossier.id)).scalars().all()
    assert [_agency_code(session, a) for a in slip] == [branch]
    services.complete_task(session, survey.id, {}, actor="branch3", now=now)  # the branch's officers moved too
    tax = _only(session, dossier.code)
    assert _agency_code(session, tax.agency_id) == THUE  # the district's tax unit is gone: the province's serves


def test_inbox_offers_steps_to_role_holders_at_the_agency(province: Session) -> None:
    session = province
    now = vn(2026, 3, 2, 8, 0)
    early = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now, agency_code=XA)
    late = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=now + timedelta(hours=2), agency_code=XA)
    other = services.start_dossier(session, "1.999010", {}, actor="long.desk", now=now, agency_code=XA2_DESK)
    box = services.inbox(session, "lan.desk")
    assert [row.dossier_id for row in box.queue] == [early.id, late.id]  # most urgent first; not the other commune's
    assert services.inbox(session, "long.desk").queue[0].dossier_id == other.id
    assert services.inbox(session, "hung.xa").queue == []  # an officer, not a receptionist
    lifecycle.claim(session, box.queue[1].id, "lan.desk", now + timedelta(hours=3))
    box = services.inbox(session, "lan.desk")
    assert [row.dossier_id for row in box.mine] == [late.id]
    assert [row.dossier_id for row in box.queue] == [early.id]


def test_a_procedure_can_set_its_own_escalation_ladder(session: Session, now: datetime) -> None:
    _load(session, "org_two_tier.yaml", now)
    bpmn_text = fixture_bytes("land_joint.bpmn")["land_joint.bpmn"].replace(
        b'<camunda:property name="financial_obligation" value="true"/>',
        b'<camunda:property name="escalation" value="warning=-2h, leader=1d"/>',
    )
    services.deploy(session, {"land.bpmn": bpmn_text}, actor="designer", now=now)
    dossier = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=vn(2026, 3, 2, 8, 0), agency_code=XA)
    task = _only(session, dossier.code)
    # Half a day from Mon 08:00 is due 13:30; the warning 2 working hours before (but at most half-way: 2 h), the leader a day after.
    assert (task.escalation_level, task.escalation_at.astimezone(VN_TZ)) == ("warning", vn(2026, 3, 2, 10, 0))
    sessions = sessionmaker(session.get_bind(), expire_on_commit=False)
    assert escalation.sweep(sessions, vn(2026, 3, 2, 10, 0)).fired == 1
    task = session.get(Task, task.id, populate_existing=True)
    assert (task.escalation_level, task.escalation_at.astimezone(VN_TZ)) == ("leader", vn(2026, 3, 3, 13, 30))
    assert escalation.sweep(sessions, vn(2026, 3, 3, 13, 30)).fired == 1
    assert session.get(Task, task.id, populate_existing=True).escalation_level is None  # the top of this ladder
    fired = session.scalars(select(Escalation.level).where(Escalation.task_id == task.id).order_by(Escalation.due_at)).all()
    assert fired == ["warning", "leader"]
    bad = bpmn_text.replace(b"warning=-2h, leader=1d", b"boss=3h")
    with pytest.raises(services.DeploymentRejected) as caught:
        services.deploy(session, {"bad.bpmn": bad}, actor="designer", now=now)
    assert any("Escalation" in p.message for p in caught.value.problems)


def test_nothing_escalates_while_the_clock_is_stopped(province: Session, db_engine: Engine) -> None:
    session = province
    sessions = sessionmaker(db_engine, expire_on_commit=False)
    dossier = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=vn(2026, 3, 2, 8, 0), agency_code=XA,
                                     applicant={"name": "Lê Văn Bé", "phone": "0911222333"})
    receive = _only(session, dossier.code)  # half a day: due Mon 2/3 13:30
    lifecycle.request_supplement(session, dossier.code, ["Bản sao sổ hộ khẩu"], "lan.desk", vn(2026, 3, 2, 9, 0))
    assert escalation.sweep(sessions, vn(2026, 3, 4, 9, 0)).fired == 0  # two days later, still paused
    lifecycle.resume(session, dossier.code, "lan.desk", vn(2026, 3, 4, 9, 0))
    receive = session.get(Task, receive.id, populate_existing=True)
    # 1 h had run before the pause (08:00–09:00): the remaining 3 h run from Wed 09:00 → 13:30 with lunch.
    assert receive.due_at.astimezone(VN_TZ) == vn(2026, 3, 4, 13, 30)
    assert escalation.sweep(sessions, vn(2026, 3, 4, 13, 30)).fired == 2  # the warning and the head of unit, now due


def test_the_background_scheduler_runs_the_sweep(province: Session, db_engine: Engine) -> None:
    import time as wall

    from engine.scheduler import build_scheduler

    session = province
    dossier = services.start_dossier(session, "1.999010", {}, actor="lan.desk", now=vn(2026, 3, 2, 8, 0), agency_code=XA)
    scheduler = build_scheduler(sessionmaker(db_engine, expire_on_commit=False), sweep_seconds=3600,
                                clock=lambda: vn(2026, 4, 1, 8, 0), background=True)
    scheduler.start()
    try:
        deadline = wall.monotonic() + 20
        while wall.monotonic() < deadline:
            fired = session.scalars(select(Escalation.level).where(Escalation.dossier_id == dossier.id)).all()
            if fired:
                break
            session.rollback()  # see the scheduler's commits
            wall.sleep(0.2)
    finally:
        scheduler.shutdown(wait=True)
    assert sorted(fired) == ["head_of_unit", "leader", "supervisor", "warning"]
