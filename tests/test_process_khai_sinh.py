"""Đăng ký khai sinh (1.001193, commune level) runs end to end in the demo province.

Sources: ../shared/domain/procedures.md §2 (deadline "same day", 15:00 cut-off;
officer records, the commune chairman signs). Expected instants are worked out by
hand on the default calendar (07:30–11:30, 13:00–17:00, Monday–Friday).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.core.calendar import VN_TZ
from engine.persistence.models import Task

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
FILE = "dang-ky-khai-sinh.bpmn"
CODE = "1.001193"
PHUOC_AN = "000.17.22.H19"

#: Who completes a step: the demo account holding the step's role at Phước An.
ACCOUNT = {
    "receptionist": "motcua.phuocan",
    "officer": "chuyenvien.phuocan",
    "leader": "lanhdao.phuocan",
}
STEP_ROLE = {
    "tiep_nhan_ks": "receptionist",
    "kiem_tra_ghi_so": "officer",
    "ky_giay_khai_sinh": "leader",
    "tra_giay_khai_sinh": "receptionist",
}
TO_KHAI = {
    "nguoi_yeu_cau": "Nguyễn Văn Minh",
    "quan_he": "Cha",
    "ho_ten_tre": "Nguyễn Ngọc Anh",
    "ngay_sinh": "2026-02-20",
    "gioi_tinh": "Nữ",
    "dan_toc": "Kinh",
    "quoc_tich": "Việt Nam",
    "noi_sinh": "Bệnh viện Đa khoa Đồng Nai",
    "ho_ten_me": "Trần Thị Hoa",
    "nam_sinh_me": 1995,
    "ho_ten_cha": "Nguyễn Văn Minh",
    "nam_sinh_cha": 1993,
}
FORMS = {
    "tiep_nhan_ks": TO_KHAI,
    "kiem_tra_ghi_so": {
        "so_dang_ky": "12/2026",
        "so_dinh_danh": "075226000123",
        "dung_han": True,
    },
    "ky_giay_khai_sinh": {"tra_lai": False},
    # Registered within 60 days: lệ phí waived; one copy at 8.000 đ.
    "tra_giay_khai_sinh": {"so_ban_sao": 1, "phi_le_phi_da_thu": 8_000},
}
APPLICANT = {"name": "Nguyễn Văn Minh", "phone": "0912345678"}


def _vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _setup(session: Session, now: datetime) -> None:
    load_demo_province(session, now)
    result = services.deploy(
        session,
        {FILE: (ROOT / "processes" / FILE).read_bytes()},
        actor="designer",
        now=now,
    )
    assert (result.code, result.name, result.created) == (
        CODE,
        "Đăng ký khai sinh",
        True,
    )
    assert result.warnings == []


def _complete_only(
    session: Session,
    dossier_code: str,
    step_id: str,
    data: dict,
    now: datetime,
    due: datetime,
) -> None:
    """Assert the single open step, its role, agency and due time; complete it as the right demo account."""
    [task] = services.open_tasks(session, dossier_code)
    role = STEP_ROLE[step_id]
    assert (task.step_id, task.role, task.agency) == (step_id, role, PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == due
    services.complete_task(session, task.id, data, actor=ACCOUNT[role], now=now)


def test_khai_sinh_validates_and_declares_its_steps(
    session: Session, now: datetime
) -> None:
    assert services.validate({FILE: (ROOT / "processes" / FILE).read_bytes()}) == []
    _setup(session, now)
    meta = services.get_version(session, CODE).meta
    assert (meta["field"], meta["level"], meta["deadline_unit"], meta["cutoff"]) == (
        "Hộ tịch",
        "commune",
        "same_day",
        "15:00",
    )
    steps = meta["steps"]
    assert {s: (steps[s]["role"], steps[s]["agency"]) for s in steps} == {
        s: (r, "home") for s, r in STEP_ROLE.items()
    }
    # 1 + 2 + 2 + 1 working hours: within the 8 hours of the receiving day.
    assert [steps[s]["allotment_unit"] for s in STEP_ROLE] == ["working_hours"] * 4
    assert sum(int(steps[s]["allotment_amount"]) for s in steps) == 6
    forms = {
        s: {f["id"]: (f["type"], f["required"]) for f in steps[s]["form"]}
        for s in steps
    }
    assert forms["tiep_nhan_ks"]["ngay_sinh"] == ("date", True)
    assert forms["tiep_nhan_ks"]["gioi_tinh"] == ("enum", True)
    assert forms["ky_giay_khai_sinh"]["tra_lai"] == ("boolean", True)


def test_khai_sinh_straight_through_the_same_day(
    session: Session, now: datetime
) -> None:
    _setup(session, now)
    received = _vn(2026, 3, 2, 9, 0)  # Monday, before the 15:00 cut-off
    dossier = services.start_dossier(
        session,
        CODE,
        TO_KHAI,
        actor="motcua.phuocan",
        now=received,
        agency_code=PHUOC_AN,
        applicant=APPLICANT,
    )
    assert dossier.code.startswith(PHUOC_AN)
    assert dossier.status == services.DossierStatus.RECEIVED
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 17, 0)

    # tiếp nhận: 1 wh from 09:00.
    _complete_only(
        session,
        dossier.code,
        "tiep_nhan_ks",
        FORMS["tiep_nhan_ks"],
        _vn(2026, 3, 2, 9, 30),
        _vn(2026, 3, 2, 10, 0),
    )
    assert (
        services.get_dossier(session, dossier.code).status
        == services.DossierStatus.PROCESSING
    )
    # kiểm tra, ghi sổ: 2 wh from 09:30.
    _complete_only(
        session,
        dossier.code,
        "kiem_tra_ghi_so",
        FORMS["kiem_tra_ghi_so"],
        _vn(2026, 3, 2, 10, 30),
        _vn(2026, 3, 2, 11, 30),
    )
    # ký: 2 wh from 10:30 = 10:30–11:30, lunch, 13:00–14:00.
    _complete_only(
        session,
        dossier.code,
        "ky_giay_khai_sinh",
        FORMS["ky_giay_khai_sinh"],
        _vn(2026, 3, 2, 13, 30),
        _vn(2026, 3, 2, 14, 0),
    )
    # trả kết quả: 1 wh from 13:30.
    _complete_only(
        session,
        dossier.code,
        "tra_giay_khai_sinh",
        FORMS["tra_giay_khai_sinh"],
        _vn(2026, 3, 2, 14, 0),
        _vn(2026, 3, 2, 14, 30),
    )

    assert services.open_tasks(session, dossier.code) == []
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 14, 0)
    assert finished.finished_at <= finished.due_at
    assert (finished.data["ho_ten_tre"], finished.data["so_dinh_danh"]) == (
        "Nguyễn Ngọc Anh",
        "075226000123",
    )

    returned = lifecycle.return_result(
        session, dossier.code, "desk", "motcua.phuocan", _vn(2026, 3, 2, 14, 15)
    )
    assert returned.status == services.DossierStatus.RETURNED == 10


def test_khai_sinh_chairman_returns_once_for_rework(
    session: Session, now: datetime
) -> None:
    _setup(session, now)
    # Friday 6/3/2026 15:30, after the cut-off: due at close of business on Monday 9/3.
    received = _vn(2026, 3, 6, 15, 30)
    dossier = services.start_dossier(
        session,
        CODE,
        TO_KHAI,
        actor="motcua.phuocan",
        now=received,
        agency_code=PHUOC_AN,
        applicant=APPLICANT,
    )
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 9, 17, 0)

    _complete_only(
        session,
        dossier.code,
        "tiep_nhan_ks",
        FORMS["tiep_nhan_ks"],
        _vn(2026, 3, 6, 15, 45),
        _vn(2026, 3, 6, 16, 30),
    )
    # 2 wh from Friday 15:45: 1h15 on Friday, 45 min on Monday from 07:30.
    _complete_only(
        session,
        dossier.code,
        "kiem_tra_ghi_so",
        FORMS["kiem_tra_ghi_so"],
        _vn(2026, 3, 9, 8, 0),
        _vn(2026, 3, 9, 8, 15),
    )
    # The chairman sends it back: the flow returns to the officer's check.
    rework = {"tra_lai": True, "ly_do_tra_lai": "Sai chính tả tên người mẹ"}
    _complete_only(
        session,
        dossier.code,
        "ky_giay_khai_sinh",
        rework,
        _vn(2026, 3, 9, 8, 30),
        _vn(2026, 3, 9, 10, 0),
    )
    assert (
        services.get_dossier(session, dossier.code).status
        == services.DossierStatus.PROCESSING
    )
    redone = {**FORMS["kiem_tra_ghi_so"], "so_dang_ky": "12/2026 (sửa)"}
    _complete_only(
        session,
        dossier.code,
        "kiem_tra_ghi_so",
        redone,
        _vn(2026, 3, 9, 9, 0),
        _vn(2026, 3, 9, 10, 30),
    )
    _complete_only(
        session,
        dossier.code,
        "ky_giay_khai_sinh",
        {"tra_lai": False},
        _vn(2026, 3, 9, 9, 30),
        _vn(2026, 3, 9, 11, 0),
    )
    _complete_only(
        session,
        dossier.code,
        "tra_giay_khai_sinh",
        FORMS["tra_giay_khai_sinh"],
        _vn(2026, 3, 9, 10, 0),
        _vn(2026, 3, 9, 10, 30),
    )

    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at <= finished.due_at
    assert finished.data["so_dang_ky"] == "12/2026 (sửa)"
    done = session.execute(
        select(Task.step_id, Task.completed_by)
        .where(Task.dossier_id == finished.id)
        .order_by(Task.id)
    ).all()
    assert [tuple(row) for row in done] == [
        ("tiep_nhan_ks", "motcua.phuocan"),
        ("kiem_tra_ghi_so", "chuyenvien.phuocan"),
        ("ky_giay_khai_sinh", "lanhdao.phuocan"),
        ("kiem_tra_ghi_so", "chuyenvien.phuocan"),
        ("ky_giay_khai_sinh", "lanhdao.phuocan"),
        ("tra_giay_khai_sinh", "motcua.phuocan"),
    ]
    returned = lifecycle.return_result(
        session, dossier.code, "desk", "motcua.phuocan", _vn(2026, 3, 9, 10, 15)
    )
    assert returned.status == services.DossierStatus.RETURNED
