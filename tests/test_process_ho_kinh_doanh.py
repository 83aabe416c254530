"""Scenario: 1.001612 Đăng ký thành lập hộ kinh doanh at UBND xã Phước An (demo Đồng Nai),
with the hand-over of the new household business to the tax authority (Thuế tỉnh Đồng Nai).

Deadline 03 ngày làm việc (Nghị định 168/2025/NĐ-CP); due dates are worked out by hand on
the default calendar (07:30–11:30, 13:00–17:00, Monday–Friday, Vietnamese holidays).
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
FILE = "dang-ky-ho-kinh-doanh.bpmn"
CODE = "1.001612"
PHUOC_AN = "000.17.22.H19"
THUE = "000.00.40.H19"  # Thuế tỉnh Đồng Nai (kind thue)
APPLICANT = {"name": "Trần Thị Hoa", "phone": "0987654321"}
FORMS = {
    "tiep_nhan": {
        "ho_ten_chu_ho": "Trần Thị Hoa",
        "so_dinh_danh_chu_ho": "075190001234",
        "ten_ho_kinh_doanh": "Hộ kinh doanh Tạp hóa Hoa",
        "dia_chi_tru_so": "Ấp 1, xã Phước An, tỉnh Đồng Nai",
        "nganh_nghe_kinh_doanh": "Bán lẻ lương thực, thực phẩm (4721)",
        "von_kinh_doanh": 50_000_000,
        "so_luong_lao_dong": 2,
    },
    "tham_dinh": {"hop_le": True},
    "cap_giay_chung_nhan": {"ma_so_ho_kinh_doanh": "47A8001234", "nguoi_ky": "Lê Thị Mai, Trưởng Phòng Kinh tế"},
    "tra_ket_qua": {"le_phi_da_thu": 0},
    "thue_tiep_nhan": {"da_cap_nhat_thue": True},
}


def _vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _setup(session: Session, now: datetime) -> None:
    load_demo_province(session, now)
    session.commit()
    result = services.deploy(session, {FILE: (ROOT / "processes" / FILE).read_bytes()}, actor="designer", now=now)
    assert (result.code, result.name, result.warnings) == (CODE, "Đăng ký thành lập hộ kinh doanh", [])


def _open(session: Session, code: str) -> dict[str, object]:
    return {t.step_id: t for t in services.open_tasks(session, code)}


def _where(task: object) -> tuple[str, str]:
    """Role and the code of the agency the step is offered at."""
    return task.role, task.agency  # type: ignore[attr-defined]


def test_validates_and_declares_its_metadata(session: Session, now: datetime) -> None:
    assert services.validate({FILE: (ROOT / "processes" / FILE).read_bytes()}) == []
    _setup(session, now)
    meta = services.get_version(session, CODE).meta
    assert (meta["level"], meta["deadline_unit"], int(meta["deadline_amount"])) == ("commune", "working_days", 3)
    roles = {s: (meta["steps"][s]["role"], meta["steps"][s]["agency"]) for s in meta["steps"]}
    assert roles == {
        "tiep_nhan": ("receptionist", "home"),
        "tham_dinh": ("officer", "home"),
        "cap_giay_chung_nhan": ("head_of_unit", "home"),
        "tra_ket_qua": ("receptionist", "home"),
        "thue_tiep_nhan": ("officer", "named:thue"),
    }


def test_registered_across_the_may_holidays_and_sent_to_tax(session: Session, now: datetime) -> None:
    _setup(session, now)
    received = _vn(2026, 4, 29, 10, 0)  # Wednesday before 30/4 and 1/5
    dossier = services.start_dossier(
        session, CODE, {"ten_ho_kinh_doanh": "Hộ kinh doanh Tạp hóa Hoa"}, actor="motcua.phuocan", now=received,
        agency_code=PHUOC_AN, applicant=APPLICANT,
    )
    assert dossier.code.startswith(PHUOC_AN)
    assert dossier.status == services.DossierStatus.RECEIVED
    # 24 working hours: Wed 29/4 5.5 h; 30/4, 1/5 holidays, 2–3/5 weekend; Mon 4/5 8 h (13.5);
    # Tue 5/5 8 h (21.5); Wed 6/5 2.5 h → 10:00.
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 5, 6, 10, 0)

    # 1. Desk, 2 working hours from 10:00: 10:00–11:30, 13:00–13:30.
    [task] = _open(session, dossier.code).values()
    assert (task.step_id, *_where(task)) == ("tiep_nhan", "receptionist", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 4, 29, 13, 30)
    services.complete_task(session, task.id, FORMS["tiep_nhan"], actor="motcua.phuocan", now=_vn(2026, 4, 29, 11, 0))
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING

    # 2. Officer, 8 working hours from Wed 11:00: 4.5 h Wed, then Mon 4/5 07:30 + 3.5 h.
    [task] = _open(session, dossier.code).values()
    assert (task.step_id, *_where(task)) == ("tham_dinh", "officer", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 5, 4, 11, 0)
    services.complete_task(session, task.id, FORMS["tham_dinh"], actor="chuyenvien.phuocan", now=_vn(2026, 5, 4, 9, 0))

    # 3. Head of unit, 6 working hours from Mon 09:00: 2.5 h to 11:30, 13:00 + 3.5 h.
    [task] = _open(session, dossier.code).values()
    assert (task.step_id, *_where(task)) == ("cap_giay_chung_nhan", "head_of_unit", PHUOC_AN)
    assert task.due_at.astimezone(VN_TZ) == _vn(2026, 5, 4, 16, 30)
    services.complete_task(session, task.id, FORMS["cap_giay_chung_nhan"], actor="truongphong.phuocan", now=_vn(2026, 5, 4, 14, 0))

    # 4. In parallel: the desk returns the certificate; the tax authority takes the information over.
    #    4 working hours each from Mon 14:00: 3 h Monday, 1 h Tuesday → Tue 5/5 08:30.
    tasks = _open(session, dossier.code)
    assert {s: _where(t) for s, t in tasks.items()} == {
        "tra_ket_qua": ("receptionist", PHUOC_AN),
        "thue_tiep_nhan": ("officer", THUE),
    }
    for t in tasks.values():
        assert t.due_at.astimezone(VN_TZ) == _vn(2026, 5, 5, 8, 30)
    with pytest.raises(services.Forbidden):  # the commune's officer does not work for the tax authority
        services.complete_task(session, tasks["thue_tiep_nhan"].id, FORMS["thue_tiep_nhan"], actor="chuyenvien.phuocan", now=_vn(2026, 5, 4, 15, 0))
    services.complete_task(session, tasks["thue_tiep_nhan"].id, FORMS["thue_tiep_nhan"], actor="chuyenvien.thue", now=_vn(2026, 5, 4, 15, 0))
    [task] = _open(session, dossier.code).values()
    assert (task.step_id, *_where(task)) == ("tra_ket_qua", "receptionist", PHUOC_AN)
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING
    services.complete_task(session, task.id, FORMS["tra_ket_qua"], actor="motcua.phuocan", now=_vn(2026, 5, 5, 8, 0))

    assert services.open_tasks(session, dossier.code) == []
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at.astimezone(VN_TZ) == _vn(2026, 5, 5, 8, 0)
    assert finished.finished_at <= finished.due_at
    assert finished.data["ma_so_ho_kinh_doanh"] == "47A8001234"
    returned = lifecycle.return_result(session, dossier.code, "desk", "motcua.phuocan", _vn(2026, 5, 5, 8, 15))
    assert returned.status == services.DossierStatus.RETURNED == 10


def test_invalid_dossier_ends_without_certificate_or_tax_handover(session: Session, now: datetime) -> None:
    _setup(session, now)
    dossier = services.start_dossier(
        session, CODE, {}, actor="motcua.phuocan", now=_vn(2026, 3, 2, 9, 0),
        agency_code=PHUOC_AN, applicant=APPLICANT,
    )
    # 24 working hours from Mon 2/3 09:00: Mon 6.5 h, Tue 8 h, Wed 8 h (22.5), Thu 07:30 + 1.5 h.
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 5, 9, 0)
    [task] = _open(session, dossier.code).values()
    assert (task.step_id, *_where(task)) == ("tiep_nhan", "receptionist", PHUOC_AN)
    services.complete_task(session, task.id, FORMS["tiep_nhan"], actor="motcua.phuocan", now=_vn(2026, 3, 2, 9, 30))
    [task] = _open(session, dossier.code).values()
    assert (task.step_id, *_where(task)) == ("tham_dinh", "officer", PHUOC_AN)
    refusal = {"hop_le": False, "noi_dung_can_bo_sung": "Tên hộ kinh doanh trùng với hộ kinh doanh đã đăng ký trong xã"}
    services.complete_task(session, task.id, refusal, actor="chuyenvien.phuocan", now=_vn(2026, 3, 2, 15, 0))

    assert services.open_tasks(session, dossier.code) == []
    finished = services.get_dossier(session, dossier.code)
    assert finished.status == services.DossierStatus.PROCESSED
    offered = session.scalars(select(Task.step_id).where(Task.dossier_id == finished.id).order_by(Task.id)).all()
    assert offered == ["tiep_nhan", "tham_dinh"]
