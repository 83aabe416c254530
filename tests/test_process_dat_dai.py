"""The real procedure 1.013978 (first land registration and certificate, households and
individuals) with its called tax sub-process, on the demo province (SQLite and PostgreSQL).

Expected instants are worked out by hand from the 20 working-day deadline and the default
calendar (07:30–11:30, 13:00–17:00, Monday–Friday, Vietnamese holidays; none in March 2026).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from engine import lifecycle, services
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, Forbidden
from engine.persistence.models import Agency, Task

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ROOT / "processes"
MAIN_FILE = "dang-ky-dat-dai-lan-dau.bpmn"
CALLED_FILE = "xac-dinh-nghia-vu-tai-chinh.bpmn"
CODE = "1.013978"

XA = "000.17.22.H19"  # UBND xã Phước An
VPDK = "000.00.31.H19"  # Văn phòng Đăng ký đất đai tỉnh Đồng Nai
THUE = "000.00.40.H19"  # Thuế tỉnh Đồng Nai

APPLICANT = {"name": "Nguyễn Văn Bình", "phone": "0987000111"}

#: step id → (role, lane agency, agency code, demo account, form data)
STEPS = {
    "tiep_nhan": (
        "receptionist",
        "home",
        XA,
        "motcua.phuocan",
        {
            "nguoi_su_dung_dat": "Nguyễn Văn Bình",
            "so_dinh_danh": "075080001234",
            "thua_dat_so": "345",
            "to_ban_do_so": "12",
            "dien_tich_m2": 250,
            "muc_dich_su_dung": "Đất ở tại nông thôn",
        },
    ),
    "xac_nhan_hien_trang": (
        "officer",
        "home",
        XA,
        "chuyenvien.phuocan",
        {
            "nguon_goc_su_dung": "Nhận thừa kế, sử dụng ổn định từ năm 1995",
            "khong_tranh_chap": True,
        },
    ),
    "tham_tra_ho_so": (
        "officer",
        "named:vpdk",
        VPDK,
        "chuyenvien.vpdk",
        {"du_dieu_kien": True},
    ),
    "chuyen_thong_tin": (
        "officer",
        "named:vpdk",
        VPDK,
        "chuyenvien.vpdk",
        {"so_phieu_chuyen": "125/PCTT-VPĐK"},
    ),
    "xac_dinh_nghia_vu": (
        "officer",
        "named:thue",
        THUE,
        "chuyenvien.thue",
        {
            "so_thong_bao_thue": "TB-2026-0456",
            "le_phi_truoc_ba": 1_250_000,
            "tien_su_dung_dat": 0,
        },
    ),
    "xac_nhan_hoan_thanh": (
        "officer",
        "named:thue",
        THUE,
        "chuyenvien.thue",
        {"so_chung_tu_nop_tien": "CT-2026-7788"},
    ),
    "in_giay_chung_nhan": (
        "officer",
        "named:vpdk",
        VPDK,
        "chuyenvien.vpdk",
        {"so_phat_hanh_gcn": "DĐ 123456"},
    ),
    "ky_giay_chung_nhan": (
        "leader",
        "home",
        XA,
        "lanhdao.phuocan",
        {"nguoi_ky_gcn": "Phạm Văn Sơn, Chủ tịch UBND xã"},
    ),
    "cap_nhat_ho_so": (
        "officer",
        "named:vpdk",
        VPDK,
        "chuyenvien.vpdk",
        {"so_vao_so_gcn": "CS 00789"},
    ),
    "tra_ket_qua": (
        "receptionist",
        "home",
        XA,
        "motcua.phuocan",
        {"le_phi_da_thu": 25_000},
    ),
}


def vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _files() -> dict[str, bytes]:
    return {name: (PROCESSES / name).read_bytes() for name in (MAIN_FILE, CALLED_FILE)}


@pytest.fixture
def province(session: Session, now: datetime) -> Session:
    load_demo_province(session, now)
    services.deploy(session, _files(), actor="designer", now=now)
    return session


def _only(session: Session, code: str, step_id: str) -> Task:
    """The one open step, checked against its role and the code of the agency its lane resolved to."""
    [row] = services.open_tasks(session, code)
    task = session.get(Task, row.id, populate_existing=True)
    role, _, agency_code, _, _ = STEPS[step_id]
    assert (task.step_id, task.role, task.agency) == (step_id, role, agency_code)
    assert session.get(Agency, task.agency_id).code == agency_code
    return task


def _complete(session: Session, task: Task, when: datetime) -> None:
    _, _, _, account, form = STEPS[task.step_id]
    services.complete_task(session, task.id, form, actor=account, now=when)


def test_both_files_validate_without_remarks() -> None:
    assert services.validate(_files()) == []


def test_lanes_declare_role_and_agency(province: Session) -> None:
    steps = services.get_version(province, CODE).meta["steps"]
    assert {s: (steps[s]["role"], steps[s]["agency"]) for s in steps} == {
        s: v[:2] for s, v in STEPS.items()
    }


def test_called_file_alone_is_not_a_procedure() -> None:
    problems = services.validate({CALLED_FILE: (PROCESSES / CALLED_FILE).read_bytes()})
    assert problems  # no procedure code: it is deployed only with the main procedure


def test_first_registration_with_tax_pause_end_to_end(province: Session) -> None:
    session = province
    received = vn(2026, 3, 3, 8, 0)  # Tuesday
    dossier = services.start_dossier(
        session,
        CODE,
        {},
        actor="motcua.phuocan",
        now=received,
        agency_code=XA,
        applicant=APPLICANT,
    )
    assert dossier.status == services.DossierStatus.RECEIVED
    assert dossier.code.startswith(f"{XA}-260303-")
    # 20 working days from Tue 3/3 08:00 → Tue 31/3 08:00 (no holiday in March 2026).
    assert dossier.due_at.astimezone(VN_TZ) == vn(2026, 3, 31, 8, 0)

    # 1. The commune's one-stop desk.
    task = _only(session, dossier.code, "tiep_nhan")
    assert task.due_at.astimezone(VN_TZ) == vn(
        2026, 3, 3, 13, 30
    )  # half a day: 08:00–11:30, 13:00–13:30
    with pytest.raises(Forbidden):
        services.complete_task(
            session,
            task.id,
            STEPS["tiep_nhan"][4],
            actor="chuyenvien.phuocan",
            now=vn(2026, 3, 3, 9, 0),
        )
    _complete(session, task, vn(2026, 3, 3, 9, 0))
    assert (
        services.get_dossier(session, dossier.code).status
        == services.DossierStatus.PROCESSING
    )

    # 2. The commune's land officer confirms current use and origin (3 days).
    task = _only(session, dossier.code, "xac_nhan_hien_trang")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 6, 9, 0)
    _complete(session, task, vn(2026, 3, 5, 10, 0))

    # 3. The land registration office checks the dossier (5 days).
    task = _only(session, dossier.code, "tham_tra_ho_so")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 12, 10, 0)
    _complete(session, task, vn(2026, 3, 10, 10, 0))

    # 4. The called sub-process: land office → tax authority.
    task = _only(session, dossier.code, "chuyen_thong_tin")
    _complete(session, task, vn(2026, 3, 10, 15, 0))
    task = _only(session, dossier.code, "xac_dinh_nghia_vu")
    with pytest.raises(Forbidden):  # the land office cannot do the tax authority's step
        services.complete_task(
            session,
            task.id,
            STEPS["xac_dinh_nghia_vu"][4],
            actor="chuyenvien.vpdk",
            now=vn(2026, 3, 12, 9, 0),
        )
    _complete(session, task, vn(2026, 3, 12, 10, 0))
    task = _only(session, dossier.code, "xac_nhan_hoan_thanh")
    # Half a day from Thu 12/3 10:00: 10:00–11:30, 13:00–15:30.
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 12, 15, 30)

    # The applicant pays: the clock stops Thu 12/3 10:30 and restarts Mon 16/3 14:00.
    paused = lifecycle.request_payment(
        session,
        dossier.code,
        ["Lệ phí trước bạ", "Tiền sử dụng đất"],
        "chuyenvien.thue",
        vn(2026, 3, 12, 10, 30),
    )
    assert paused.status == services.DossierStatus.FINANCIAL_OBLIGATION == 6
    with pytest.raises(Conflict):
        _complete(session, task, vn(2026, 3, 13, 9, 0))
    resumed = lifecycle.resume(
        session, dossier.code, "chuyenvien.thue", vn(2026, 3, 16, 14, 0)
    )
    assert resumed.status == services.DossierStatus.PROCESSING
    # Paused: Thu 10:30–11:30 + 13:00–17:00 (5 h), Fri (8 h), Mon 07:30–11:30 + 13:00–14:00 (5 h) = 18 working hours.
    # Dossier: Tue 31/3 08:00 + 18 h → Tue 31/3 (7.5 h), Wed 1/4 (8 h), Thu 2/4 07:30 + 2.5 h = 10:00.
    assert resumed.due_at.astimezone(VN_TZ) == vn(2026, 4, 2, 10, 0)
    # The step had 3.5 h left (10:30–11:30, 13:00–15:30): Mon 14:00–17:00 + Tue 07:30–08:00.
    task = _only(session, dossier.code, "xac_nhan_hoan_thanh")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 17, 8, 0)
    _complete(session, task, vn(2026, 3, 16, 15, 0))

    # 5. Back to the land office, signed by the commune chairman, recorded, returned at the desk.
    task = _only(session, dossier.code, "in_giay_chung_nhan")
    _complete(session, task, vn(2026, 3, 17, 10, 0))
    task = _only(session, dossier.code, "ky_giay_chung_nhan")
    with pytest.raises(Forbidden):
        services.complete_task(
            session,
            task.id,
            STEPS["ky_giay_chung_nhan"][4],
            actor="lanhdao.vpdk",
            now=vn(2026, 3, 19, 9, 0),
        )
    _complete(session, task, vn(2026, 3, 19, 10, 0))
    task = _only(session, dossier.code, "cap_nhat_ho_so")
    _complete(session, task, vn(2026, 3, 20, 10, 0))
    task = _only(session, dossier.code, "tra_ket_qua")
    _complete(session, task, vn(2026, 3, 23, 9, 0))

    assert services.open_tasks(session, dossier.code) == []
    done = services.get_dossier(session, dossier.code)
    assert done.status == services.DossierStatus.PROCESSED
    assert done.finished_at <= done.due_at
    assert (
        done.data["le_phi_truoc_ba"],
        done.data["so_phat_hanh_gcn"],
        done.data["le_phi_da_thu"],
    ) == (1_250_000, "DĐ 123456", 25_000)
    returned = lifecycle.return_result(
        session, dossier.code, "desk", "motcua.phuocan", vn(2026, 3, 23, 9, 30)
    )
    assert returned.status == services.DossierStatus.RETURNED == 10


def test_not_eligible_goes_straight_back_to_the_desk(province: Session) -> None:
    session = province
    dossier = services.start_dossier(
        session,
        CODE,
        {},
        actor="motcua.phuocan",
        now=vn(2026, 3, 2, 8, 0),
        agency_code=XA,
        applicant=APPLICANT,
    )
    for step_id, when in (
        ("tiep_nhan", vn(2026, 3, 2, 9, 0)),
        ("xac_nhan_hien_trang", vn(2026, 3, 3, 9, 0)),
    ):
        _complete(session, _only(session, dossier.code, step_id), when)
    task = _only(session, dossier.code, "tham_tra_ho_so")
    refusal = {"du_dieu_kien": False, "ly_do_khong_du": "Đất đang có tranh chấp"}
    services.complete_task(
        session, task.id, refusal, actor="chuyenvien.vpdk", now=vn(2026, 3, 4, 9, 0)
    )
    task = _only(session, dossier.code, "tra_ket_qua")  # no tax step, no certificate
    services.complete_task(
        session,
        task.id,
        {"le_phi_da_thu": 0},
        actor="motcua.phuocan",
        now=vn(2026, 3, 4, 10, 0),
    )
    done = services.get_dossier(session, dossier.code)
    assert done.status == services.DossierStatus.PROCESSED
    assert done.data["du_dieu_kien"] is False
