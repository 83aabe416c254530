"""Scenario: 1.013225 Cấp giấy phép xây dựng nhà ở riêng lẻ, at UBND xã Phước An (demo Đồng Nai).

Deadline "15 ngày" (calendar days, Luật Xây dựng 2014 Điều 102): the due instant is
close of business of the 15th day after receipt, moved to the next working day if
that is a day off. Step due dates are worked out by hand on the default calendar
(07:30–11:30, 13:00–17:00, Monday–Friday, Vietnamese holidays).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.core.calendar import VN_TZ
from engine.persistence.models import Task

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
FILE = "cap-giay-phep-xay-dung-nha-o.bpmn"
CODE = "1.013225"
NAME = "Cấp giấy phép xây dựng mới đối với công trình cấp III, cấp IV và nhà ở riêng lẻ"
PHUOC_AN = "000.17.22.H19"
APPLICANT = {"name": "Nguyễn Văn Bình", "phone": "0912345678"}

#: Demo account holding each role at UBND xã Phước An.
ACCOUNT = {
    "receptionist": "motcua.phuocan",
    "officer": "chuyenvien.phuocan",
    "head_of_unit": "truongphong.phuocan",
    "leader": "lanhdao.phuocan",
}
FORMS = {
    "tiep_nhan": {
        "dia_diem_xay_dung": "Ấp 3, xã Phước An, tỉnh Đồng Nai",
        "thua_dat_so": "125",
        "to_ban_do_so": "18",
        "dien_tich_xay_dung_tang_1": 80,
        "tong_dien_tich_san": 240,
        "chieu_cao_cong_trinh": "11,5",
        "so_tang": 3,
    },
    "tham_dinh": {"du_dieu_kien": True, "ket_qua_kiem_tra_thuc_dia": "Phù hợp quy hoạch, chỉ giới xây dựng"},
    "xem_xet_trinh_ky": {"y_kien_truong_phong": "Đồng ý, trình ký"},
    "ky_giay_phep": {"so_giay_phep": "12/GPXD-UBND", "nguoi_ky": "Phạm Văn Sơn, Chủ tịch UBND xã"},
    "tra_ket_qua": {"le_phi_da_thu": 0},
}


def _vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _setup(session: Session, now: datetime) -> None:
    load_demo_province(session, now)
    session.commit()
    result = services.deploy(session, {FILE: (ROOT / "processes" / FILE).read_bytes()}, actor="designer", now=now)
    assert (result.code, result.name, result.warnings) == (CODE, NAME, [])


def _only_open(session: Session, code: str) -> object:
    [task] = services.open_tasks(session, code)
    return task


def _where(task: object) -> tuple[str, str, str]:
    """Step, role and the code of the agency it is offered at."""
    return task.step_id, task.role, task.agency  # type: ignore[attr-defined]


def test_validates_and_declares_its_metadata(session: Session, now: datetime) -> None:
    assert services.validate({FILE: (ROOT / "processes" / FILE).read_bytes()}) == []
    _setup(session, now)
    meta = services.get_version(session, CODE).meta
    assert (meta["field"], meta["level"], meta["deadline_unit"]) == ("Hoạt động xây dựng", "commune", "calendar_days")
    assert int(meta["deadline_amount"]) == 15
    roles = {s: (meta["steps"][s]["role"], meta["steps"][s]["agency"]) for s in meta["steps"]}
    assert roles == {
        "tiep_nhan": ("receptionist", "home"),
        "tham_dinh": ("officer", "home"),
        "xem_xet_trinh_ky": ("head_of_unit", "home"),
        "ky_giay_phep": ("leader", "home"),
        "tra_ket_qua": ("receptionist", "home"),
    }


def test_permit_granted_end_to_end(session: Session, now: datetime) -> None:
    _setup(session, now)
    received = _vn(2026, 3, 2, 9, 0)  # Monday
    dossier = services.start_dossier(
        session, CODE, {"chu_dau_tu": APPLICANT["name"]}, actor="motcua.phuocan", now=received,
        agency_code=PHUOC_AN, applicant=APPLICANT,
    )
    assert dossier.code.startswith(PHUOC_AN)
    assert dossier.status == services.DossierStatus.RECEIVED
    # 2/3 + 15 days = Tuesday 17/3/2026, a working day: close of business.
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 17, 17, 0)

    # 1. Desk: 4 working hours from Mon 09:00 → 09:00–11:30, 13:00–14:30.
    task = _only_open(session, dossier.code)
    assert _where(task) == ("tiep_nhan", "receptionist", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 2, 14, 30)
    # Completing with the wrong role is refused.
    with pytest.raises(services.Forbidden):
        services.complete_task(session, task.id, FORMS["tiep_nhan"], actor="chuyenvien.phuocan", now=_vn(2026, 3, 2, 10, 0))
    services.complete_task(session, task.id, FORMS["tiep_nhan"], actor="motcua.phuocan", now=_vn(2026, 3, 2, 10, 0))
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING

    # 2. Officer: 6 working days = 48 h from Mon 2/3 10:00: Mon 5.5 h, Tue–Fri 32 h (37.5),
    #    Mon 9/3 8 h (45.5), Tue 10/3 2.5 h → 10:00.
    task = _only_open(session, dossier.code)
    assert _where(task) == ("tham_dinh", "officer", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 10, 10, 0)
    services.complete_task(session, task.id, FORMS["tham_dinh"], actor="chuyenvien.phuocan", now=_vn(2026, 3, 9, 16, 0))

    # 3. Head of unit: 1 working day from Mon 9/3 16:00: 1 h Mon, 7 h Tue → Tue 10/3 16:00.
    task = _only_open(session, dossier.code)
    assert _where(task) == ("xem_xet_trinh_ky", "head_of_unit", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 10, 16, 0)
    services.complete_task(session, task.id, FORMS["xem_xet_trinh_ky"], actor="truongphong.phuocan", now=_vn(2026, 3, 10, 9, 0))

    # 4. Leader: 2 working days from Tue 10/3 09:00 → Thu 12/3 09:00.
    task = _only_open(session, dossier.code)
    assert _where(task) == ("ky_giay_phep", "leader", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 12, 9, 0)
    services.complete_task(session, task.id, FORMS["ky_giay_phep"], actor="lanhdao.phuocan", now=_vn(2026, 3, 11, 15, 0))

    # 5. Desk: 4 working hours from Wed 11/3 15:00: 2 h Wed, 07:30–09:30 Thu.
    task = _only_open(session, dossier.code)
    assert _where(task) == ("tra_ket_qua", "receptionist", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 12, 9, 30)
    services.complete_task(session, task.id, FORMS["tra_ket_qua"], actor="motcua.phuocan", now=_vn(2026, 3, 12, 8, 0))

    assert services.open_tasks(session, dossier.code) == []
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at <= finished.due_at
    assert finished.data["so_giay_phep"] == "12/GPXD-UBND"
    returned = lifecycle.return_result(session, dossier.code, "desk", "motcua.phuocan", _vn(2026, 3, 12, 8, 30))
    assert returned.status == services.DossierStatus.RETURNED == 10


def test_not_qualified_ends_without_signing(session: Session, now: datetime) -> None:
    _setup(session, now)
    dossier = services.start_dossier(
        session, CODE, {}, actor="motcua.phuocan", now=_vn(2026, 3, 3, 9, 0),
        agency_code=PHUOC_AN, applicant=APPLICANT,
    )
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 18, 17, 0)  # Tue 3/3 + 15 days = Wed 18/3
    task = _only_open(session, dossier.code)
    assert _where(task) == ("tiep_nhan", "receptionist", PHUOC_AN)
    services.complete_task(session, task.id, FORMS["tiep_nhan"], actor="motcua.phuocan", now=_vn(2026, 3, 3, 10, 0))
    task = _only_open(session, dossier.code)
    assert _where(task) == ("tham_dinh", "officer", PHUOC_AN)
    refusal = {"du_dieu_kien": False, "ly_do_khong_cap_phep": "Vi phạm chỉ giới xây dựng theo quy hoạch"}
    services.complete_task(session, task.id, refusal, actor="chuyenvien.phuocan", now=_vn(2026, 3, 6, 10, 0))

    assert services.open_tasks(session, dossier.code) == []
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    offered = session.scalars(select(Task.step_id).where(Task.dossier_id == finished.id).order_by(Task.id)).all()
    assert offered == ["tiep_nhan", "tham_dinh"]


def test_due_date_falling_on_holidays_moves_to_next_working_day(session: Session, now: datetime) -> None:
    _setup(session, now)
    # Thu 16/4/2026 + 15 days = Fri 1/5 (Quốc tế Lao động); 2–3/5 weekend → Mon 4/5/2026.
    dossier = services.start_dossier(
        session, CODE, {}, actor="motcua.phuocan", now=_vn(2026, 4, 16, 10, 0),
        agency_code=PHUOC_AN, applicant=APPLICANT,
    )
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 5, 4, 17, 0)
