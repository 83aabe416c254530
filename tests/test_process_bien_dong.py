"""The real procedure 1.013831, đăng ký biến động on a transfer (chuyển nhượng), with the called tax
sub-process and the payment pause, on the demo province (SQLite and PostgreSQL).

Received at a commune desk, checked by the land registration office, taxed by the tax authority
(the applicant pays while the clock stops), recorded and signed at the land office, returned at the
desk. Expected instants are worked out by hand from the 10 working-day deadline and the default
calendar (07:30–11:30, 13:00–17:00, Monday–Friday; no holiday in March 2026).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import lifecycle, organisation, services
from engine.core import bpmn
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, Forbidden, InvalidRequest
from engine.persistence.models import Agency, Handover, Task

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ROOT / "processes"
MAIN_FILE = "dang-ky-bien-dong-chuyen-nhuong.bpmn"
CALLED_FILE = "xac-dinh-nghia-vu-tai-chinh.bpmn"
CODE = "1.013831"
NAME = "Đăng ký biến động quyền sử dụng đất, quyền sở hữu tài sản gắn liền với đất trong trường hợp chuyển nhượng"

XA = "000.17.22.H19"  # UBND xã Phước An
VPDK = "000.00.31.H19"  # Văn phòng Đăng ký đất đai tỉnh Đồng Nai
THUE = "000.00.40.H19"  # Thuế tỉnh Đồng Nai

APPLICANT = {"name": "Lê Thị Hoa", "phone": "0987000222"}
PRICE = 1_500_000_000  # giá chuyển nhượng in the contract
RECEPTION = {
    "ben_chuyen_nhuong": "Trần Văn Nam",
    "so_dinh_danh_ben_chuyen": "075070004321",
    "ben_nhan_chuyen_nhuong": "Lê Thị Hoa",
    "so_dinh_danh_ben_nhan": "075085001122",
    "thua_dat_so": "128",
    "to_ban_do_so": "7",
    "dien_tich_m2": 150,
    "dia_chi_thua_dat": "Ấp 3, xã Phước An",
    "so_phat_hanh_gcn": "DA 456789",
    "so_hop_dong": "1234/2026/CCGD",
    "ngay_hop_dong": "2026-03-05",
    "noi_cong_chung": "Văn phòng công chứng Nhơn Trạch",
    "gia_chuyen_nhuong": PRICE,
    "de_nghi_cap_moi_gcn": False,
}

#: step id → (role, lane agency, agency code, demo account, form data)
STEPS: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "tiep_nhan": ("receptionist", "home", XA, "motcua.phuocan", RECEPTION),
    "kiem_tra_ho_so": ("officer", "named:vpdk", VPDK, "chuyenvien.vpdk", {"du_dieu_kien": True}),
    "chuyen_thong_tin": ("officer", "named:vpdk", VPDK, "chuyenvien.vpdk", {"so_phieu_chuyen": "88/PCTT-VPĐK"}),
    # Lệ phí trước bạ 0,5 % of the price; no land-use levy on a transfer.
    "xac_dinh_nghia_vu": (
        "officer",
        "named:thue",
        THUE,
        "chuyenvien.thue",
        {"so_thong_bao_thue": "TB-2026-0912", "le_phi_truoc_ba": 7_500_000, "tien_su_dung_dat": 0},
    ),
    "xac_nhan_hoan_thanh": ("officer", "named:thue", THUE, "chuyenvien.thue", {"so_chung_tu_nop_tien": "CT-2026-3344"}),
    # Thuế thu nhập cá nhân 2 % of the price, checked against the receipt by the land office.
    "chinh_ly_gcn": ("officer", "named:vpdk", VPDK, "chuyenvien.vpdk", {"thue_tncn_da_nop": 30_000_000, "cap_gcn_moi": False}),
    "ky_gcn": ("leader", "named:vpdk", VPDK, "lanhdao.vpdk", {"nguoi_ky": "Trương Thị Yến, Phó Giám đốc Văn phòng Đăng ký đất đai"}),
    "cap_nhat_ho_so": ("officer", "named:vpdk", VPDK, "chuyenvien.vpdk", {"da_cap_nhat_csdl": True}),
    "tra_ho_so": ("receptionist", "home", XA, "motcua.phuocan", {"so_van_ban_tra_ho_so": "45/VPĐK-ĐK"}),
    "tra_ket_qua": ("receptionist", "home", XA, "motcua.phuocan", {"le_phi_da_thu": 25_000}),
}


def vn(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def _files() -> dict[str, bytes]:
    return {name: (PROCESSES / name).read_bytes() for name in (MAIN_FILE, CALLED_FILE)}


@pytest.fixture
def province(session: Session, now: datetime) -> Session:
    load_demo_province(session, now)
    result = services.deploy(session, _files(), actor="thietke.tinh", now=now)
    assert (result.code, result.name, result.version, result.warnings) == (CODE, NAME, 1, [])
    return session


def _code(session: Session, agency_id: int | None) -> str | None:
    return session.get(Agency, agency_id).code if agency_id else None


def _only(session: Session, dossier_code: str, step_id: str) -> Task:
    """The one open step, checked against its role and the agency its lane resolved to."""
    [row] = services.open_tasks(session, dossier_code)
    task = session.get(Task, row.id, populate_existing=True)
    role, _, agency_code, _, _ = STEPS[step_id]
    assert (task.step_id, task.role, task.agency, _code(session, task.agency_id)) == (step_id, role, agency_code, agency_code)
    return task


def _claim_and_complete(session: Session, step_id: str, claimed: datetime, done: datetime, dossier_code: str) -> Task:
    """The step's officer claims it from the queue of their role and completes it with its form."""
    task = _only(session, dossier_code, step_id)
    _, _, _, account, form = STEPS[step_id]
    assert lifecycle.claim(session, task.id, account, claimed).assignee == account
    services.complete_task(session, task.id, form, actor=account, now=done)
    return task


def _start(session: Session, when: datetime) -> services.DossierRecord:
    return services.start_dossier(session, CODE, {}, actor="motcua.phuocan", now=when, agency_code=XA, applicant=APPLICANT)


# ----------------------------------------------------------------------------- the files


def test_both_files_validate_without_remarks() -> None:
    assert services.validate(_files()) == []


def test_the_demo_deploys_it_together_with_the_called_tax_process() -> None:
    files = {path.name: path.read_bytes() for path in sorted(PROCESSES.glob("*.bpmn"))}
    bundles = [sorted(bundle) for bundle in bpmn.procedure_bundles(files)]
    assert sorted([CALLED_FILE, MAIN_FILE]) in bundles
    assert [CALLED_FILE] not in bundles  # the called process is never a procedure of its own


def test_metadata_lanes_and_published_form(province: Session) -> None:
    meta = services.get_version(province, CODE).meta
    assert (meta["field"], meta["level"], meta["financial_obligation"]) == ("Đất đai", "province", True)
    assert (meta["deadline_amount"], meta["deadline_unit"]) == ("10", "working_days")
    steps = meta["steps"]
    assert {s: (steps[s]["role"], steps[s]["agency"]) for s in steps} == {s: v[:2] for s, v in STEPS.items()}
    # Main path: 0.5 + 2 + (0.5 + 2 + 0.5) + 1.5 + 1 + 0.5 + 0.5 = 9 of the 10 working days.
    main_path = [s for s in STEPS if s != "tra_ho_so"]
    assert sum(float(steps[s]["allotment_amount"]) for s in main_path) == 9
    assert {steps[s]["allotment_unit"] for s in steps} == {"working_days"}
    reception = {f["id"]: (f["type"], f["required"]) for f in steps["tiep_nhan"]["form"]}
    for field in ("ben_chuyen_nhuong", "ben_nhan_chuyen_nhuong", "thua_dat_so", "to_ban_do_so", "so_hop_dong", "so_phat_hanh_gcn"):
        assert reception[field] == ("string", True), field
    assert reception["dien_tich_m2"] == reception["gia_chuyen_nhuong"] == ("long", True)
    assert reception["ngay_hop_dong"] == ("date", True)
    assert reception["de_nghi_cap_moi_gcn"] == ("boolean", False)
    assert steps["ky_gcn"]["lane_name"] == "Văn phòng đăng ký đất đai – lãnh đạo"


# ----------------------------------------------------------------------------- the diagram

_NS = {
    "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
    "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
    "dc": "http://www.omg.org/spec/DD/20100524/DC",
    "di": "http://www.omg.org/spec/DD/20100524/DI",
}
_NODES = ("startEvent", "endEvent", "userTask", "exclusiveGateway", "callActivity")
Box = tuple[float, float, float, float]  # x, y, right, bottom


def _box(bounds: Any) -> Box:
    x, y, w, h = (float(bounds.get(k)) for k in ("x", "y", "width", "height"))
    return x, y, x + w, y + h


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _on_border(point: tuple[float, float], box: Box) -> bool:
    x, y = point
    inside = box[0] <= x <= box[2] and box[1] <= y <= box[3]
    return inside and (x in (box[0], box[2]) or y in (box[1], box[3]))


def test_diagram_is_laid_out_left_to_right_without_overlaps() -> None:
    root = etree.fromstring((PROCESSES / MAIN_FILE).read_bytes())
    process = root.find("bpmn:process", _NS)
    shapes = {s.get("bpmnElement"): s for s in root.iterfind(".//bpmndi:BPMNShape", _NS)}
    edges = {e.get("bpmnElement"): e for e in root.iterfind(".//bpmndi:BPMNEdge", _NS)}
    nodes = {el.get("id"): el for tag in _NODES for el in process.iterfind(f"bpmn:{tag}", _NS)}
    flows = process.findall("bpmn:sequenceFlow", _NS)
    assert set(shapes) == {*nodes, "pool_bien_dong", *(lane.get("id") for lane in process.iterfind(".//bpmn:lane", _NS))}
    assert set(edges) == {f.get("id") for f in flows}
    box = {key: _box(shape.find("dc:Bounds", _NS)) for key, shape in shapes.items()}

    pool = box["pool_bien_dong"]
    lanes = process.findall(".//bpmn:lane", _NS)
    for lane in lanes:  # lanes stack inside the pool, each holding its own steps
        lane_box = box[lane.get("id")]
        assert pool[0] < lane_box[0] and lane_box[2] == pool[2] and pool[1] <= lane_box[1] and lane_box[3] <= pool[3]
        for ref in lane.iterfind("bpmn:flowNodeRef", _NS):
            node = box[ref.text]
            assert lane_box[0] < node[0] and node[2] < lane_box[2] and lane_box[1] < node[1] and node[3] < lane_box[3], ref.text
            label = shapes[ref.text].find("bpmndi:BPMNLabel/dc:Bounds", _NS)
            if label is not None:  # an event's or gateway's name stays in its lane too
                x, y, right, bottom = _box(label)
                assert lane_box[0] < x and right < lane_box[2] and lane_box[1] < y and bottom < lane_box[3], ref.text
    assert sorted(ref.text for ref in process.iterfind(".//bpmn:flowNodeRef", _NS)) == sorted(nodes)

    labels = [_box(b) for b in root.iterfind(".//bpmndi:BPMNLabel/dc:Bounds", _NS)]
    for i, a in enumerate(nodes):
        for b in list(nodes)[i + 1 :]:
            assert not _overlap(box[a], box[b]), (a, b)
        for label in labels:
            own = shapes[a].find("bpmndi:BPMNLabel/dc:Bounds", _NS)
            if own is None or _box(own) != label:
                assert not _overlap(box[a], label), a

    for flow in flows:
        source, target = flow.get("sourceRef"), flow.get("targetRef")
        points = [(float(w.get("x")), float(w.get("y"))) for w in edges[flow.get("id")].iterfind("di:waypoint", _NS)]
        assert len(points) >= 2
        assert _on_border(points[0], box[source]) and _on_border(points[-1], box[target]), flow.get("id")
        centre = {n: (box[n][0] + box[n][2]) / 2 for n in (source, target)}
        assert centre[target] >= centre[source], flow.get("id")  # left to right
        for (x1, y1), (x2, y2) in zip(points, points[1:]):
            assert x1 == x2 or y1 == y2, flow.get("id")  # orthogonal segments
            segment = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
            for other in nodes:
                if other not in (source, target):
                    o = box[other]
                    crosses = segment[0] <= o[2] and o[0] <= segment[2] and segment[1] <= o[3] and o[1] <= segment[3]
                    assert not crosses, (flow.get("id"), other)


# ----------------------------------------------------------------------------- running dossiers


def test_transfer_with_tax_and_payment_pause_end_to_end(province: Session) -> None:
    session = province
    dossier = _start(session, vn(2026, 3, 9, 8, 0))  # Monday
    assert dossier.status == services.DossierStatus.RECEIVED
    assert dossier.code.startswith(f"{XA}-260309-")
    # 10 working days from Mon 9/3 08:00 → Mon 23/3 08:00.
    assert dossier.due_at.astimezone(VN_TZ) == vn(2026, 3, 23, 8, 0)

    # 1. The commune's one-stop desk records the Mẫu 18 application and the contract (half a day).
    task = _only(session, dossier.code, "tiep_nhan")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 9, 13, 30)  # 08:00–11:30, 13:00–13:30
    with pytest.raises(Forbidden):  # the commune's officer does not sit at the desk
        lifecycle.claim(session, task.id, "chuyenvien.phuocan", vn(2026, 3, 9, 8, 15))
    lifecycle.claim(session, task.id, "motcua.phuocan", vn(2026, 3, 9, 8, 30))
    without_price = {k: v for k, v in RECEPTION.items() if k != "gia_chuyen_nhuong"}
    with pytest.raises(InvalidRequest, match="Giá chuyển nhượng"):
        services.complete_task(session, task.id, without_price, actor="motcua.phuocan", now=vn(2026, 3, 9, 8, 45))
    services.complete_task(session, task.id, RECEPTION, actor="motcua.phuocan", now=vn(2026, 3, 9, 9, 0))
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSING

    # 2. The land office checks the dossier: 2 working days from Mon 09:00 → Wed 11/3 09:00.
    task = _only(session, dossier.code, "kiem_tra_ho_so")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 11, 9, 0)
    with pytest.raises(Forbidden):  # the commune cannot decide for the land office
        lifecycle.claim(session, task.id, "chuyenvien.phuocan", vn(2026, 3, 9, 9, 15))
    _claim_and_complete(session, "kiem_tra_ho_so", vn(2026, 3, 9, 9, 30), vn(2026, 3, 10, 10, 0), dossier.code)

    # 3. The called sub-process: the land office sends the cadastral data to the tax authority.
    task = _only(session, dossier.code, "chuyen_thong_tin")
    assert task.process_id == "XacDinhNghiaVuTaiChinh"
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 10, 15, 30)  # 10:00–11:30, 13:00–15:30
    _claim_and_complete(session, "chuyen_thong_tin", vn(2026, 3, 10, 10, 30), vn(2026, 3, 10, 14, 0), dossier.code)
    task = _only(session, dossier.code, "xac_dinh_nghia_vu")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 12, 14, 0)
    with pytest.raises(Forbidden):  # the land office cannot assess the tax
        lifecycle.claim(session, task.id, "chuyenvien.vpdk", vn(2026, 3, 10, 14, 30))
    _claim_and_complete(session, "xac_dinh_nghia_vu", vn(2026, 3, 11, 8, 0), vn(2026, 3, 11, 15, 0), dossier.code)

    # 4. The applicant pays: the clock stops Wed 11/3 15:30 and restarts Mon 16/3 10:00.
    task = _only(session, dossier.code, "xac_nhan_hoan_thanh")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 12, 9, 30)  # 15:00–17:00, Thu 07:30–09:30
    lifecycle.claim(session, task.id, "chuyenvien.thue", vn(2026, 3, 11, 15, 10))
    owed = ["Thuế thu nhập cá nhân 30.000.000 đồng (2 %)", "Lệ phí trước bạ 7.500.000 đồng (0,5 %)"]
    paused = lifecycle.request_payment(session, dossier.code, owed, "chuyenvien.thue", vn(2026, 3, 11, 15, 30))
    assert paused.status == services.DossierStatus.FINANCIAL_OBLIGATION == 6
    with pytest.raises(Conflict):  # nothing moves while the applicant pays
        services.complete_task(session, task.id, STEPS["xac_nhan_hoan_thanh"][4], actor="chuyenvien.thue", now=vn(2026, 3, 13, 9, 0))
    resumed = lifecycle.resume(session, dossier.code, "chuyenvien.thue", vn(2026, 3, 16, 10, 0))
    assert resumed.status == services.DossierStatus.PROCESSING
    # Paused: Wed 15:30–17:00 (1.5 h) + Thu (8 h) + Fri (8 h) + Mon 07:30–10:00 (2.5 h) = 20 working hours.
    # Dossier: Mon 23/3 08:00 + 20 h → Mon (7.5 h), Tue (8 h), Wed 25/3 07:30–11:30 (4 h) + 13:00–13:30.
    assert resumed.due_at.astimezone(VN_TZ) == vn(2026, 3, 25, 13, 30)
    # The step had 3.5 h left (Wed 15:30–17:00, Thu 07:30–09:30): Mon 10:00–11:30 + 13:00–15:00.
    task = _only(session, dossier.code, "xac_nhan_hoan_thanh")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 16, 15, 0)
    services.complete_task(session, task.id, STEPS["xac_nhan_hoan_thanh"][4], actor="chuyenvien.thue", now=vn(2026, 3, 16, 11, 0))

    # 5. Back at the land office: the certificate is updated (1.5 days), signed by the office's leader,
    #    the cadastral records updated, and the result returned at the commune desk.
    task = _only(session, dossier.code, "chinh_ly_gcn")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 17, 16, 30)  # Mon 11:00 + 12 working hours
    _claim_and_complete(session, "chinh_ly_gcn", vn(2026, 3, 16, 13, 0), vn(2026, 3, 17, 9, 0), dossier.code)
    task = _only(session, dossier.code, "ky_gcn")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 18, 9, 0)
    with pytest.raises(Forbidden):  # the commune chairman does not sign a transfer at the land office
        lifecycle.claim(session, task.id, "lanhdao.phuocan", vn(2026, 3, 17, 9, 30))
    _claim_and_complete(session, "ky_gcn", vn(2026, 3, 17, 10, 0), vn(2026, 3, 17, 14, 0), dossier.code)
    task = _only(session, dossier.code, "cap_nhat_ho_so")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 18, 8, 30)
    _claim_and_complete(session, "cap_nhat_ho_so", vn(2026, 3, 17, 14, 30), vn(2026, 3, 17, 16, 0), dossier.code)
    task = _only(session, dossier.code, "tra_ket_qua")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 18, 10, 30)
    _claim_and_complete(session, "tra_ket_qua", vn(2026, 3, 18, 8, 0), vn(2026, 3, 18, 9, 0), dossier.code)

    assert services.open_tasks(session, dossier.code) == []
    done = services.get_dossier(session, dossier.code)
    assert done.status == services.DossierStatus.PROCESSED
    assert done.finished_at.astimezone(VN_TZ) == vn(2026, 3, 18, 9, 0)
    assert services.judge(done.finished_at, done.due_at) == "early"  # a week before Wed 25/3 13:30
    assert (done.data["gia_chuyen_nhuong"], done.data["le_phi_truoc_ba"], done.data["thue_tncn_da_nop"]) == (
        PRICE,
        PRICE * 5 // 1000,
        PRICE * 2 // 100,
    )
    assert (done.data["so_chung_tu_nop_tien"], done.data["le_phi_da_thu"]) == ("CT-2026-3344", 25_000)

    # Each step, who did it, and how it stood against its own allotment.
    rows = session.execute(
        select(Task.step_id, Task.assignee, Task.completed_by, Task.result).where(Task.dossier_id == done.id).order_by(Task.id)
    ).all()
    results = {
        "tiep_nhan": "on_time",
        "kiem_tra_ho_so": "early",
        "chuyen_thong_tin": "on_time",
        "xac_dinh_nghia_vu": "early",
        "xac_nhan_hoan_thanh": "on_time",  # Mon 11:00, due Mon 15:00 after the pause
        "chinh_ly_gcn": "on_time",
        "ky_gcn": "early",
        "cap_nhat_ho_so": "early",
        "tra_ket_qua": "on_time",
    }
    assert [tuple(r) for r in rows] == [(s, STEPS[s][3], STEPS[s][3], r) for s, r in results.items()]

    # The control slip: desk → land office → tax → land office → desk, each received on claim.
    slip = session.execute(
        select(Handover.from_agency_id, Handover.to_agency_id, Handover.sent_by, Handover.received_by)
        .where(Handover.dossier_id == done.id)
        .order_by(Handover.id)
    ).all()
    assert [(_code(session, a), _code(session, b), s, r) for a, b, s, r in slip] == [
        (XA, VPDK, "motcua.phuocan", "chuyenvien.vpdk"),
        (VPDK, THUE, "chuyenvien.vpdk", "chuyenvien.thue"),
        (THUE, VPDK, "chuyenvien.thue", "chuyenvien.vpdk"),
        (VPDK, XA, "chuyenvien.vpdk", "motcua.phuocan"),
    ]

    returned = lifecycle.return_result(session, dossier.code, "desk", "motcua.phuocan", vn(2026, 3, 18, 9, 30))
    assert returned.status == services.DossierStatus.RETURNED == 10

    history = services.dossier_history(session, dossier.code)
    moves = [(e.action, e.from_state, e.to_state) for e in history if e.action.startswith("dossier.")]
    assert moves == [
        ("dossier.receive", None, "2"),
        ("dossier.status", "2", "4"),
        ("dossier.pause", "4", "6"),
        ("dossier.resume", "6", "4"),
        ("dossier.status", "4", "9"),
        ("dossier.status", "9", "10"),
    ]
    completions = [(e.actor, e.subject) for e in history if e.action == "task.complete"]
    assert completions == [(STEPS[s][3], s) for s in results]
    assert sum(e.action == "task.claim" for e in history) == len(results)
    pause = next(e for e in history if e.action == "dossier.pause")
    assert (pause.actor, pause.details["reason"], pause.details["items"]) == ("chuyenvien.thue", "payment", owed)


def test_not_eligible_goes_back_to_the_desk_without_tax(province: Session) -> None:
    session = province
    dossier = _start(session, vn(2026, 3, 10, 8, 0))  # Tuesday
    _claim_and_complete(session, "tiep_nhan", vn(2026, 3, 10, 8, 10), vn(2026, 3, 10, 8, 30), dossier.code)
    task = _only(session, dossier.code, "kiem_tra_ho_so")
    lifecycle.claim(session, task.id, "chuyenvien.vpdk", vn(2026, 3, 10, 9, 0))
    refusal = {"du_dieu_kien": False, "ly_do_khong_du": "Thửa đất đang thế chấp, không có văn bản đồng ý của bên nhận thế chấp"}
    services.complete_task(session, task.id, refusal, actor="chuyenvien.vpdk", now=vn(2026, 3, 11, 10, 0))

    # Half a day at the desk from Wed 11/3 10:00: 10:00–11:30, 13:00–15:30.
    task = _only(session, dossier.code, "tra_ho_so")
    assert task.due_at.astimezone(VN_TZ) == vn(2026, 3, 11, 15, 30)
    _claim_and_complete(session, "tra_ho_so", vn(2026, 3, 11, 13, 0), vn(2026, 3, 11, 14, 0), dossier.code)

    done = services.get_dossier(session, dossier.code)
    assert done.status == services.DossierStatus.PROCESSED
    assert (done.data["du_dieu_kien"], done.data["so_van_ban_tra_ho_so"]) == (False, "45/VPĐK-ĐK")
    offered = session.scalars(select(Task.step_id).where(Task.dossier_id == done.id).order_by(Task.id)).all()
    assert offered == ["tiep_nhan", "kiem_tra_ho_so", "tra_ho_so"]  # never taxed, never signed
    slip = session.execute(select(Handover.from_agency_id, Handover.to_agency_id).where(Handover.dossier_id == done.id).order_by(Handover.id)).all()
    assert [(_code(session, a), _code(session, b)) for a, b in slip] == [(XA, VPDK), (VPDK, XA)]
    with pytest.raises(Conflict):  # nothing left to pay for
        lifecycle.request_payment(session, dossier.code, ["Lệ phí trước bạ"], "chuyenvien.thue", vn(2026, 3, 11, 14, 30))
    returned = lifecycle.return_result(session, dossier.code, "desk", "motcua.phuocan", vn(2026, 3, 11, 14, 30))
    assert returned.status == services.DossierStatus.RETURNED


def test_three_tier_variant_routes_to_the_district_branch(session: Session, now: datetime) -> None:
    variant = PROCESSES / "demo" / "variants" / "nhon-trach-3-cap.yaml"
    data = organisation.parse_organisation(variant.read_text(encoding="utf-8"), variant.name)
    accounts = {(grant["agency"], grant["role"]): o["username"] for o in data["officers"] for grant in o["roles"]}
    data["officers"] = [{k: v for k, v in o.items() if k != "password"} for o in data["officers"]]
    organisation.load_organisation(session, data, "admin", now)
    services.deploy(session, _files(), actor="thietke.tinh", now=now)
    commune = "000.15.22.T19"
    dossier = services.start_dossier(session, CODE, {}, actor="motcua.phuocan", now=now, agency_code=commune, applicant=APPLICANT)
    seen = []
    while tasks := services.open_tasks(session, dossier.code):
        [task] = tasks
        seen.append((task.step_id, task.agency))
        actor = accounts[(task.agency, task.role)]
        services.complete_task(session, task.id, STEPS[task.step_id][4], actor=actor, now=now)
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSED
    branch, tax = "000.15.31.T19", "000.15.40.T19"  # the district's land branch and tax unit
    assert seen == [
        ("tiep_nhan", commune),
        ("kiem_tra_ho_so", branch),
        ("chuyen_thong_tin", branch),
        ("xac_dinh_nghia_vu", tax),
        ("xac_nhan_hoan_thanh", tax),
        ("chinh_ly_gcn", branch),
        ("ky_gcn", branch),
        ("cap_nhat_ho_so", branch),
        ("tra_ket_qua", commune),
    ]
