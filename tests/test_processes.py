"""The real procedures in ``processes/``: they deploy and run end to end (SQLite and PostgreSQL).

Expected instants are worked out by hand from the published deadline and the
default calendar (07:30–11:30, 13:00–17:00, Monday–Friday, Vietnamese holidays).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import services
from engine.core.calendar import VN_TZ
from engine.persistence.models import Task

PROCESSES = Path(__file__).resolve().parents[1] / "processes"

CHUNG_THUC_FILE = "chung-thuc-ban-sao.bpmn"
CHUNG_THUC_CODE = "2.000815"
CHUNG_THUC_NAME = (
    "Chứng thực bản sao từ bản chính giấy tờ, văn bản do cơ quan, tổ chức có thẩm quyền của Việt Nam; "
    "cơ quan, tổ chức có thẩm quyền của nước ngoài; cơ quan, tổ chức có thẩm quyền của Việt Nam liên kết "
    "với cơ quan, tổ chức có thẩm quyền của nước ngoài cấp hoặc chứng nhận"
)
COMMUNE = "dossier.commune"

#: Form data each step of 2.000815 records on the main path.
CHUNG_THUC_FORMS = {
    "tiep_nhan": {"so_ban_sao": 2, "so_trang": 3},
    "kiem_tra": {"hop_le": True},
    "ghi_loi_chung": {"so_chung_thuc": "15/2026/SCT-BS"},
    "ky_chung_thuc": {"nguoi_ky": "Trần Văn B, Phó Chủ tịch UBND xã"},
    # 3 pages: 2.000 + 2.000 + 1.000 = 5.000 đ per copy, 2 copies (TT 226/2016/TT-BTC).
    "tra_ket_qua": {"phi_da_thu": 10_000},
}
CHUNG_THUC_STEPS = [
    ("tiep_nhan", "Tiếp nhận yêu cầu chứng thực", "receptionist", COMMUNE),
    ("kiem_tra", "Kiểm tra bản chính, đối chiếu với bản sao", "officer", COMMUNE),
    ("ghi_loi_chung", "Ghi lời chứng, vào sổ chứng thực, trình ký", "officer", COMMUNE),
    ("ky_chung_thuc", "Ký chứng thực, đóng dấu", "leader", COMMUNE),
    ("tra_ket_qua", "Thu phí và trả kết quả", "receptionist", COMMUNE),
]


def _vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _deploy_chung_thuc(session: Session, now: datetime) -> services.DeployResult:
    files = {CHUNG_THUC_FILE: (PROCESSES / CHUNG_THUC_FILE).read_bytes()}
    return services.deploy(session, files, actor="designer", now=now)


def test_chung_thuc_validates_without_remarks() -> None:
    problems = services.validate({CHUNG_THUC_FILE: (PROCESSES / CHUNG_THUC_FILE).read_bytes()})
    assert problems == []


def test_chung_thuc_deploys_with_its_metadata(session: Session, now: datetime) -> None:
    result = _deploy_chung_thuc(session, now)
    assert (result.code, result.name, result.version, result.created) == (CHUNG_THUC_CODE, CHUNG_THUC_NAME, 1, True)
    assert result.warnings == []
    meta = services.get_version(session, CHUNG_THUC_CODE).meta
    assert (meta["field"], meta["level"]) == ("Chứng thực", "commune")
    assert (meta["deadline_unit"], meta["cutoff"]) == ("same_day", "15:00")
    steps = meta["steps"]
    assert set(steps) == {s[0] for s in CHUNG_THUC_STEPS}
    for step_id, name, role, agency in CHUNG_THUC_STEPS:
        assert (steps[step_id]["name"], steps[step_id]["role"], steps[step_id]["agency"]) == (name, role, agency)
        assert steps[step_id]["allotment_unit"] == "working_hours"
    # 1 + 2 + 1 + 2 + 1 working hours: within the 8 hours of the receiving day.
    assert sum(int(steps[s]["allotment_amount"]) for s in steps) == 7
    assert steps["ky_chung_thuc"]["lane_name"] == "Lãnh đạo UBND xã"
    forms = {s: {f["id"]: (f["type"], f["required"]) for f in steps[s]["form"]} for s in steps}
    assert forms["tiep_nhan"]["so_ban_sao"] == ("long", True)
    assert forms["kiem_tra"]["hop_le"] == ("boolean", True)


def test_chung_thuc_received_at_ten_is_done_the_same_day(session: Session, now: datetime) -> None:
    _deploy_chung_thuc(session, now)
    received = _vn(2026, 3, 2, 10, 0)  # Monday, a plain working day
    dossier = services.start_dossier(session, CHUNG_THUC_CODE, {"nguoi_yeu_cau": "Nguyễn Văn A"}, actor="desk", now=received)
    assert dossier.status == services.DossierStatus.RECEIVED
    # Same day, received before the 15:00 cut-off: close of business that day.
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 17, 0)

    completions = {
        "tiep_nhan": _vn(2026, 3, 2, 10, 30),
        "kiem_tra": _vn(2026, 3, 2, 11, 15),
        "ghi_loi_chung": _vn(2026, 3, 2, 13, 30),
        "ky_chung_thuc": _vn(2026, 3, 2, 14, 30),
        "tra_ket_qua": _vn(2026, 3, 2, 15, 0),
    }
    seen = []
    while tasks := services.open_tasks(session, dossier.code):
        [task] = tasks
        seen.append((task.step_id, task.step_name, task.role))
        if task.step_id == "tiep_nhan":
            assert task.lane == "Bộ phận Một cửa"
            assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 11, 0)  # 1 working hour from 10:00
        if task.step_id == "kiem_tra":
            # 2 working hours from 10:30: 10:30–11:30, lunch, 13:00–14:00.
            assert task.started_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 10, 30)
            assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 14, 0)
        services.complete_task(session, task.id, CHUNG_THUC_FORMS[task.step_id], actor=task.role, now=completions[task.step_id])
        if task.step_id == "tiep_nhan":
            assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING
    assert seen == [step[:3] for step in CHUNG_THUC_STEPS]

    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 15, 0)
    assert finished.finished_at <= finished.due_at
    assert finished.data["so_chung_thuc"] == "15/2026/SCT-BS"
    assert finished.data["phi_da_thu"] == 10_000


def test_chung_thuc_received_after_cutoff_before_holidays(session: Session, now: datetime) -> None:
    _deploy_chung_thuc(session, now)
    # Wednesday 29/4/2026 15:30, after the 15:00 cut-off: due the next working day.
    # Thursday 30/4 (Giải phóng miền Nam) and Friday 1/5 (Quốc tế Lao động) are holidays,
    # 2–3/5 a weekend → Monday 4/5/2026 at close of business.
    received = _vn(2026, 4, 29, 15, 30)
    dossier = services.start_dossier(session, CHUNG_THUC_CODE, {}, actor="desk", now=received)
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 5, 4, 17, 0)

    [task] = services.open_tasks(session, dossier.code)
    assert (task.step_id, task.role) == ("tiep_nhan", "receptionist")
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 4, 29, 16, 30)  # 1 working hour from 15:30
    # The desk issues an appointment slip (phiếu hẹn) and the work goes on on Monday.
    services.complete_task(session, task.id, {**CHUNG_THUC_FORMS["tiep_nhan"], "phieu_hen": True}, actor="desk", now=_vn(2026, 4, 29, 15, 45))
    clock = _vn(2026, 5, 4, 8, 0)
    seen = ["tiep_nhan"]
    while tasks := services.open_tasks(session, dossier.code):
        [task] = tasks
        seen.append(task.step_id)
        clock = clock.replace(hour=clock.hour + 1)
        services.complete_task(session, task.id, CHUNG_THUC_FORMS[task.step_id], actor=task.role, now=clock)
    assert seen == [s[0] for s in CHUNG_THUC_STEPS]
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.data["phieu_hen"] is True
    assert finished.finished_at.astimezone(VN_TZ) == _vn(2026, 5, 4, 12, 0)


def test_chung_thuc_refused_when_original_is_not_valid(session: Session, now: datetime) -> None:
    _deploy_chung_thuc(session, now)
    received = _vn(2026, 3, 3, 9, 0)  # Tuesday
    dossier = services.start_dossier(session, CHUNG_THUC_CODE, {}, actor="desk", now=received)
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 3, 17, 0)

    [reception] = services.open_tasks(session, dossier.code)
    assert (reception.step_id, reception.role) == ("tiep_nhan", "receptionist")
    services.complete_task(session, reception.id, {"so_ban_sao": 1, "so_trang": 1}, actor="desk", now=_vn(2026, 3, 3, 9, 15))
    [check] = services.open_tasks(session, dossier.code)
    assert (check.step_id, check.role) == ("kiem_tra", "officer")
    refusal = {"hop_le": False, "ly_do_tu_choi": "Bản chính bị tẩy xóa, sửa chữa nội dung"}
    services.complete_task(session, check.id, refusal, actor="officer", now=_vn(2026, 3, 3, 9, 45))

    assert services.open_tasks(session, dossier.code) == []
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.data["hop_le"] is False
    offered = session.scalars(select(Task.step_id).where(Task.dossier_id == finished.id).order_by(Task.id)).all()
    assert offered == ["tiep_nhan", "kiem_tra"]  # never offered for signing nor returned through the desk
