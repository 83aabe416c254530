"""Liên thông khai sinh – thường trú – thẻ BHYT cho trẻ em dưới 6 tuổi (Nghị định 63/2024/NĐ-CP).

Runs the procedure end to end in the demo province (Đồng Nai), on SQLite and
PostgreSQL: reception and birth registration at UBND xã Phước An, then the
police (đăng ký thường trú) and social insurance (thẻ BHYT) in parallel, and the
result returned at the commune desk. Due instants are worked out by hand from
the 3-working-day deadline and the default calendar (07:30–11:30, 13:00–17:00,
Monday–Friday, Vietnamese holidays).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.core.calendar import VN_TZ
from engine.persistence.models import Agency, Handover

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
FILE = "lien-thong-khai-sinh-thuong-tru-bhyt.bpmn"
CODE = "LT.KS-TT-BHYT"  # designer's code: the national mã TTHC of the group was not found
NAME = (
    "Liên thông thủ tục hành chính: đăng ký khai sinh, đăng ký thường trú, "
    "cấp thẻ bảo hiểm y tế cho trẻ em dưới 6 tuổi"
)

PHUOC_AN = "000.17.22.H19"
CONG_AN = "000.00.50.H19"
BHXH = "000.00.60.H19"

#: step → (role, agency code, demo account doing it, form data)
STEPS = {
    "tiep_nhan": ("receptionist", PHUOC_AN, "motcua.phuocan", {"ho_ten_tre": "Nguyễn Minh An", "co_giay_chung_sinh_dien_tu": True}),
    "dang_ky_khai_sinh": ("officer", PHUOC_AN, "chuyenvien.phuocan", {"so_dinh_danh_ca_nhan": "075226000123", "so_dang_ky_khai_sinh": "45/2026"}),
    "ky_giay_khai_sinh": ("leader", PHUOC_AN, "lanhdao.phuocan", {"nguoi_ky": "Phạm Văn Sơn, Chủ tịch UBND xã"}),
    "dang_ky_thuong_tru": ("officer", CONG_AN, "chuyenvien.congan", {"noi_thuong_tru": "Ấp 1, xã Phước An, tỉnh Đồng Nai"}),
    "cap_the_bhyt": ("officer", BHXH, "chuyenvien.bhxh", {"ma_so_bhxh": "7526123456"}),
    "tra_ket_qua": ("receptionist", PHUOC_AN, "motcua.phuocan", {"da_thong_bao_ket_qua": True}),
}


def _vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _deploy(session: Session, now: datetime) -> None:
    result = services.deploy(session, {FILE: (ROOT / "processes" / FILE).read_bytes()}, actor="thietke.tinh", now=now)
    assert (result.code, result.name, result.version, result.created) == (CODE, NAME, 1, True)
    assert result.warnings == []


def _setup(session: Session, now: datetime) -> None:
    """The demo province (Đồng Nai) and the procedure."""
    load_demo_province(session, now)
    _deploy(session, now)


def _receive(session: Session, at: datetime) -> services.DossierRecord:
    dossier = services.start_dossier(
        session, CODE, {}, actor="motcua.phuocan", now=at, agency_code=PHUOC_AN,
        applicant={"name": "Nguyễn Văn Bình", "phone": "0912345678"},
    )
    assert dossier.status == services.DossierStatus.RECEIVED
    assert dossier.code.startswith(PHUOC_AN + "-")
    return dossier


def _open(session: Session, code: str) -> dict[str, object]:
    """Open steps by id, each checked against its expected role and agency."""
    tasks = {t.step_id: t for t in services.open_tasks(session, code)}
    for step_id, task in tasks.items():
        role, agency, _, _ = STEPS[step_id]
        assert (task.role, task.agency) == (role, agency), step_id
    return tasks


def _do(session: Session, task: object, at: datetime, actor: str | None = None) -> services.DossierRecord:
    _, _, account, form = STEPS[task.step_id]  # type: ignore[attr-defined]
    return services.complete_task(session, task.id, form, actor=actor or account, now=at)  # type: ignore[attr-defined]


def _commune_part(session: Session, code: str, times: list[datetime], dues: list[datetime]) -> None:
    """Reception, birth registration, signing: one step at a time, all at the commune."""
    for step_id, done_at, due in zip(["tiep_nhan", "dang_ky_khai_sinh", "ky_giay_khai_sinh"], times, dues):
        tasks = _open(session, code)
        assert list(tasks) == [step_id]
        assert tasks[step_id].due_at.astimezone(VN_TZ) == due
        _do(session, tasks[step_id], done_at)


def _handovers(session: Session, dossier_id: int) -> list[tuple[str, str, str, str | None]]:
    codes = {a.id: a.code for a in session.scalars(select(Agency))}
    rows = session.scalars(select(Handover).where(Handover.dossier_id == dossier_id).order_by(Handover.id)).all()
    return [(codes[h.from_agency_id], codes[h.to_agency_id], h.sent_by, h.received_by) for h in rows]


def test_lien_thong_validates_without_remarks() -> None:
    assert services.validate({FILE: (ROOT / "processes" / FILE).read_bytes()}) == []


def test_lien_thong_metadata(session: Session, now: datetime) -> None:
    _deploy(session, now)
    meta = services.get_version(session, CODE).meta
    assert (meta["level"], meta["deadline_unit"]) == ("commune", "working_days")
    steps = meta["steps"]
    assert set(steps) == set(STEPS)
    assert steps["dang_ky_thuong_tru"]["agency"] == "named:cong_an"
    assert steps["cap_the_bhyt"]["agency"] == "named:bhxh"
    # 1 h + 4 h + 2 h at the commune, 2 working days per parallel branch (counted once), 1 h to return: 3 days.
    hours = {"working_hours": 1, "working_days": 8}
    longest = sum(int(steps[s]["allotment_amount"]) * hours[steps[s]["allotment_unit"]] for s in STEPS if s != "cap_the_bhyt")
    assert longest == 24


def test_police_first_then_social_insurance(session: Session, now: datetime) -> None:
    _setup(session, now)
    # Monday 2/3/2026 09:00. 3 working days = 24 h: Mon 6.5 h, Tue 8 h, Wed 8 h, Thu 07:30–09:00.
    dossier = _receive(session, _vn(2026, 3, 2, 9, 0))
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 3, 5, 9, 0)

    _commune_part(
        session, dossier.code,
        times=[_vn(2026, 3, 2, 9, 30), _vn(2026, 3, 2, 11, 0), _vn(2026, 3, 2, 14, 0)],
        # 1 h from 09:00; 4 h from 09:30 (2 h before lunch, 2 h after); 2 h from 11:00 (0.5 h + 1.5 h).
        dues=[_vn(2026, 3, 2, 10, 0), _vn(2026, 3, 2, 15, 0), _vn(2026, 3, 2, 14, 30)],
    )
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING

    # The split: both branches open at once, each with 2 working days from Mon 14:00 →
    # Mon 3 h, Tue 8 h, Wed 07:30–11:30 + 13:00–14:00 = Wed 4/3 14:00.
    tasks = _open(session, dossier.code)
    assert set(tasks) == {"dang_ky_thuong_tru", "cap_the_bhyt"}
    for task in tasks.values():
        assert task.due_at.astimezone(VN_TZ) == _vn(2026, 3, 4, 14, 0)

    # Completion checks the role at the resolved agency.
    for wrong in ("chuyenvien.phuocan", "chuyenvien.bhxh", "lanhdao.congan"):
        with pytest.raises(services.Forbidden):
            _do(session, tasks["dang_ky_thuong_tru"], _vn(2026, 3, 3, 8, 0), actor=wrong)

    # The police officer claims (receiving the hand-over), then completes.
    lifecycle.claim(session, tasks["dang_ky_thuong_tru"].id, "chuyenvien.congan", _vn(2026, 3, 3, 8, 0))
    _do(session, tasks["dang_ky_thuong_tru"], _vn(2026, 3, 3, 10, 0))
    assert set(_open(session, dossier.code)) == {"cap_the_bhyt"}  # the join waits for BHXH

    _do(session, tasks["cap_the_bhyt"], _vn(2026, 3, 3, 15, 0))
    tasks = _open(session, dossier.code)
    assert list(tasks) == ["tra_ket_qua"]
    assert tasks["tra_ket_qua"].due_at.astimezone(VN_TZ) == _vn(2026, 3, 3, 16, 0)
    finished = _do(session, tasks["tra_ket_qua"], _vn(2026, 3, 3, 15, 30))

    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at <= finished.due_at
    assert finished.data["noi_thuong_tru"] == "Ấp 1, xã Phước An, tỉnh Đồng Nai"
    assert finished.data["ma_so_bhxh"] == "7526123456"
    assert services.open_tasks(session, dossier.code) == []

    handovers = _handovers(session, finished.id)
    assert sorted(handovers[:2]) == [
        (PHUOC_AN, CONG_AN, "lanhdao.phuocan", "chuyenvien.congan"),
        (PHUOC_AN, BHXH, "lanhdao.phuocan", None),  # completed without claiming
    ]
    # The result goes back to the commune desk from the branch that finished last.
    assert handovers[2:] == [(BHXH, PHUOC_AN, "chuyenvien.bhxh", None)]

    returned = lifecycle.return_result(session, dossier.code, "desk", "motcua.phuocan", _vn(2026, 3, 3, 16, 0))
    assert returned.status == services.DossierStatus.RETURNED == 10


def test_social_insurance_first_then_police_over_holidays(session: Session, now: datetime) -> None:
    _setup(session, now)
    # Tuesday 28/4/2026 14:00. 24 h: Tue 3 h, Wed 29/4 8 h, Thu 30/4 and Fri 1/5 holidays,
    # weekend, Mon 4/5 8 h, Tue 5/5 07:30–11:30 + 13:00–14:00 → Tue 5/5 14:00.
    dossier = _receive(session, _vn(2026, 4, 28, 14, 0))
    assert dossier.due_at.astimezone(VN_TZ) == _vn(2026, 5, 5, 14, 0)

    _commune_part(
        session, dossier.code,
        times=[_vn(2026, 4, 28, 14, 15), _vn(2026, 4, 28, 15, 30), _vn(2026, 4, 28, 16, 30)],
        # 1 h from 14:00; 4 h from 14:15 (2.75 h, then 07:30 + 1.25 h next day);
        # 2 h from 15:30 (1.5 h, then 07:30 + 0.5 h next day).
        dues=[_vn(2026, 4, 28, 15, 0), _vn(2026, 4, 29, 8, 45), _vn(2026, 4, 29, 8, 0)],
    )

    # 2 working days from Tue 16:30: Tue 0.5 h, Wed 8 h, (holidays, weekend), Mon 4/5 7.5 h → 16:30.
    tasks = _open(session, dossier.code)
    assert set(tasks) == {"dang_ky_thuong_tru", "cap_the_bhyt"}
    for task in tasks.values():
        assert task.due_at.astimezone(VN_TZ) == _vn(2026, 5, 4, 16, 30)

    _do(session, tasks["cap_the_bhyt"], _vn(2026, 4, 29, 9, 0))
    assert set(_open(session, dossier.code)) == {"dang_ky_thuong_tru"}  # the join waits for the police

    _do(session, tasks["dang_ky_thuong_tru"], _vn(2026, 5, 4, 10, 0))
    tasks = _open(session, dossier.code)
    assert list(tasks) == ["tra_ket_qua"]
    assert tasks["tra_ket_qua"].due_at.astimezone(VN_TZ) == _vn(2026, 5, 4, 11, 0)
    finished = _do(session, tasks["tra_ket_qua"], _vn(2026, 5, 4, 10, 30))
    assert finished.status == services.DossierStatus.PROCESSED
    assert finished.finished_at <= finished.due_at

    handovers = _handovers(session, finished.id)
    assert sorted(handovers[:2]) == [
        (PHUOC_AN, CONG_AN, "lanhdao.phuocan", None),
        (PHUOC_AN, BHXH, "lanhdao.phuocan", None),
    ]
    assert handovers[2:] == [(CONG_AN, PHUOC_AN, "chuyenvien.congan", None)]

    returned = lifecycle.return_result(session, dossier.code, "desk", "motcua.phuocan", _vn(2026, 5, 4, 11, 0))
    assert returned.status == services.DossierStatus.RETURNED
