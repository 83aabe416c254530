"""Cấp Phiếu lý lịch tư pháp (processes/cap-phieu-ly-lich-tu-phap.bpmn) end to end in the demo province.

Received at a commune desk (phi địa giới), decided by the provincial police (the competent agency since
01/3/2025), returned at the commune desk; one round back for further verification. SQLite and PostgreSQL.

Expected instants are worked out by hand: 07:30–11:30, 13:00–17:00, Monday–Friday; in April–May 2026
Sunday 26/4 (Giỗ Tổ Hùng Vương) is observed on Monday 27/4, and Thursday 30/4 and Friday 1/5 are holidays.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.core.calendar import VN_TZ
from engine.errors import Forbidden
from engine.persistence.models import Agency, Handover, Task

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
FILE = "cap-phieu-ly-lich-tu-phap.bpmn"
CODE = "LLTP-CA-TINH"
NAME = "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam, người nước ngoài đang cư trú tại Việt Nam"

XA = "000.17.22.H19"  # UBND xã Phước An
CONG_AN = "000.00.50.H19"  # Công an tỉnh Đồng Nai

#: (step id, role, lane agency) of each step.
STEPS = {
    "tiep_nhan": ("receptionist", "home"),
    "tra_cuu": ("officer", "named:cong_an"),
    "kiem_tra": ("head_of_unit", "named:cong_an"),
    "ky_phieu": ("leader", "named:cong_an"),
    "tra_ket_qua": ("receptionist", "home"),
}


def vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _deploy(session: Session, now: datetime) -> None:
    result = services.deploy(session, {FILE: (ROOT / "processes" / FILE).read_bytes()}, actor="designer", now=now)
    assert (result.code, result.name, result.version, result.warnings) == (CODE, NAME, 1, [])


def _setup(session: Session, now: datetime) -> None:
    """The demo province, then the procedure.

    The demo passwords are left out: nobody logs in here, and hashing 33 of them costs seconds.
    """
    load_demo_province(session, now)
    _deploy(session, now)


def _code(session: Session, agency_id: int | None) -> str | None:
    return session.get(Agency, agency_id).code if agency_id else None


def _only(session: Session, dossier_code: str, step_id: str, agency: str) -> Task:
    """The single open step: check its id, role and the agency its lane resolved to."""
    [row] = services.open_tasks(session, dossier_code)
    task = session.get(Task, row.id, populate_existing=True)
    assert (task.step_id, task.role, task.agency, _code(session, task.agency_id)) == (step_id, STEPS[step_id][0], agency, agency)
    return task


def test_validates_without_remarks() -> None:
    assert services.validate({FILE: (ROOT / "processes" / FILE).read_bytes()}) == []


def test_metadata(session: Session, now: datetime) -> None:
    _deploy(session, now)
    meta = services.get_version(session, CODE).meta
    assert (meta["field"], meta["level"], meta["deadline_unit"], meta["deadline_amount"]) == ("Lý lịch tư pháp", "province", "calendar_days", "10")
    steps = meta["steps"]
    assert {s: (steps[s]["role"], steps[s]["agency"]) for s in steps} == STEPS
    # 4 h + 3 d + 1 d + 1 d + 4 h = 6 working days, within 10 calendar days.
    hours = {"working_hours": 1, "working_days": 8}
    assert sum(float(steps[s]["allotment_amount"]) * hours[steps[s]["allotment_unit"]] for s in steps) == 48


def test_received_at_commune_decided_by_police_with_one_rework(session: Session, now: datetime) -> None:
    _setup(session, now)
    # Thursday 23/4/2026 09:00 at the desk of xã Phước An.
    received = vn(2026, 4, 23, 9, 0)
    dossier = services.start_dossier(
        session,
        CODE,
        {"ho_ten": "Nguyễn Văn An"},
        actor="motcua.phuocan",
        now=received,
        agency_code=XA,
        applicant={"name": "Nguyễn Văn An", "phone": "0912345678"},
    )
    assert dossier.code.startswith(XA)
    assert dossier.status == services.DossierStatus.RECEIVED
    # 10 calendar days: Sunday 3/5 → next working day Monday 4/5, close of business.
    assert dossier.due_at.astimezone(VN_TZ) == vn(2026, 5, 4, 17, 0)

    # 1. Reception at the commune desk: 4 working hours from 09:00 → 11:30 (2.5 h) + 13:00–14:30.
    reception = _only(session, dossier.code, "tiep_nhan", XA)
    assert reception.due_at.astimezone(VN_TZ) == vn(2026, 4, 23, 14, 30)
    form = {"loai_phieu": 1, "so_luong_phieu": 1, "so_dinh_danh": "075090001234", "uy_quyen": False}
    with pytest.raises(Forbidden):
        services.complete_task(session, reception.id, form, actor="chuyenvien.congan", now=vn(2026, 4, 23, 9, 30))
    services.complete_task(session, reception.id, form, actor="motcua.phuocan", now=vn(2026, 4, 23, 10, 0))
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING

    # 2. Look-up at the provincial police: 3 working days from Thu 23/4 10:00 → Fri 24/4 10:00,
    #    (weekend, Mon 27/4 holiday) Tue 28/4 10:00, Wed 29/4 10:00.
    lookup = _only(session, dossier.code, "tra_cuu", CONG_AN)
    assert lookup.due_at.astimezone(VN_TZ) == vn(2026, 4, 29, 10, 0)
    with pytest.raises(Forbidden):  # the commune's officer does not work at the police
        services.complete_task(session, lookup.id, {"ket_qua_tra_cuu": "x"}, actor="chuyenvien.phuocan", now=vn(2026, 4, 24, 9, 0))
    services.complete_task(session, lookup.id, {"ket_qua_tra_cuu": "Chưa rõ án tích tại nơi cư trú cũ"}, actor="chuyenvien.congan", now=vn(2026, 4, 24, 15, 0))

    # 3. Check by the head of unit: 1 working day from Fri 24/4 15:00 → 2 h on Friday,
    #    (weekend, 27/4 holiday) Tue 28/4 07:30 + 6 h → 15:00. Sent back for more verification.
    check = _only(session, dossier.code, "kiem_tra", CONG_AN)
    assert check.due_at.astimezone(VN_TZ) == vn(2026, 4, 28, 15, 0)
    with pytest.raises(Forbidden):  # an officer cannot do the head of unit's check
        services.complete_task(session, check.id, {"can_xac_minh_them": True}, actor="chuyenvien.congan", now=vn(2026, 4, 28, 7, 45))
    back = {"can_xac_minh_them": True, "y_kien_kiem_tra": "Xác minh thêm tại nơi cư trú trước đây"}
    services.complete_task(session, check.id, back, actor="truongphong.congan", now=vn(2026, 4, 28, 8, 0))

    # 2'. The look-up again: 3 working days from Tue 28/4 08:00 → Wed 29/4 08:00,
    #     (30/4, 1/5 holidays, weekend) Mon 4/5 08:00, Tue 5/5 08:00.
    redo = _only(session, dossier.code, "tra_cuu", CONG_AN)
    assert redo.id != lookup.id
    assert redo.due_at.astimezone(VN_TZ) == vn(2026, 5, 5, 8, 0)
    services.complete_task(session, redo.id, {"ket_qua_tra_cuu": "Không có án tích"}, actor="chuyenvien.congan", now=vn(2026, 4, 29, 9, 0))

    # 3'. Check again: 1 working day from Wed 29/4 09:00 → 6.5 h on Wednesday, Mon 4/5 07:30 + 1.5 h → 09:00.
    check2 = _only(session, dossier.code, "kiem_tra", CONG_AN)
    assert check2.due_at.astimezone(VN_TZ) == vn(2026, 5, 4, 9, 0)
    services.complete_task(session, check2.id, {"can_xac_minh_them": False}, actor="truongphong.congan", now=vn(2026, 4, 29, 10, 0))

    # 4. The leader signs: 1 working day from Wed 29/4 10:00 → 5.5 h on Wednesday, Mon 4/5 07:30 + 2.5 h → 10:00.
    sign = _only(session, dossier.code, "ky_phieu", CONG_AN)
    assert sign.due_at.astimezone(VN_TZ) == vn(2026, 5, 4, 10, 0)
    with pytest.raises(Forbidden):  # the justice department is no longer competent
        services.complete_task(session, sign.id, {"so_phieu": "x", "nguoi_ky": "x"}, actor="lanhdao.sotp", now=vn(2026, 4, 29, 15, 0))
    signed = {"so_phieu": "125/2026/LLTP-CAT", "nguoi_ky": "Đinh Thị Nga, Phó Giám đốc Công an tỉnh"}
    services.complete_task(session, sign.id, signed, actor="lanhdao.congan", now=vn(2026, 4, 29, 16, 0))

    # 5. Return at the commune desk: 4 working hours from Wed 29/4 16:00 → 1 h, Mon 4/5 07:30 + 3 h → 10:30.
    handback = _only(session, dossier.code, "tra_ket_qua", XA)
    assert handback.due_at.astimezone(VN_TZ) == vn(2026, 5, 4, 10, 30)
    services.complete_task(session, handback.id, {"phi_da_thu": 200_000}, actor="motcua.phuocan", now=vn(2026, 5, 4, 8, 0))

    assert services.open_tasks(session, dossier.code) == []
    done = services.get_dossier(session, dossier.code)
    assert done.status == services.DossierStatus.PROCESSED
    assert done.finished_at.astimezone(VN_TZ) == vn(2026, 5, 4, 8, 0)
    assert done.finished_at <= done.due_at
    assert (done.data["ket_qua_tra_cuu"], done.data["so_phieu"], done.data["can_xac_minh_them"]) == ("Không có án tích", "125/2026/LLTP-CAT", False)

    history = session.execute(select(Task.step_id, Task.completed_by).where(Task.dossier_id == done.id).order_by(Task.id)).all()
    assert [tuple(r) for r in history] == [
        ("tiep_nhan", "motcua.phuocan"),
        ("tra_cuu", "chuyenvien.congan"),
        ("kiem_tra", "truongphong.congan"),
        ("tra_cuu", "chuyenvien.congan"),
        ("kiem_tra", "truongphong.congan"),
        ("ky_phieu", "lanhdao.congan"),
        ("tra_ket_qua", "motcua.phuocan"),
    ]

    # The control slip: commune → police → commune; the rework stays inside the police.
    slip = session.execute(
        select(Handover.from_agency_id, Handover.to_agency_id, Handover.sent_by).where(Handover.dossier_id == done.id).order_by(Handover.id)
    ).all()
    assert [(_code(session, a), _code(session, b), s) for a, b, s in slip] == [
        (XA, CONG_AN, "motcua.phuocan"),
        (CONG_AN, XA, "lanhdao.congan"),
    ]

    returned = lifecycle.return_result(session, dossier.code, "desk", "motcua.phuocan", vn(2026, 5, 4, 8, 30))
    assert returned.status == services.DossierStatus.RETURNED == 10
    assert services.get_dossier(session, dossier.code).return_channel == "desk"
