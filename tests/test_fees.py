"""Fees (phí, lệ phí): the declaration, fees due at receipt, payments at the desk and by the
payment gateway, the pause until payment and the due dates it moves. SQLite and PostgreSQL.

The procedure is 1.001612 Đăng ký thành lập hộ kinh doanh (processes/dang-ky-ho-kinh-doanh.bpmn)
with a ``fees`` property added to its text. Its real fee is set by each provincial council and
was not found; the amounts here are examples. ``services.start_dossier`` records the fees
due; the tests call ``fees.on_receipt`` once more right after, which must change nothing.

Due dates are worked out by hand on the default calendar (07:30–11:30, 13:00–17:00, Monday–Friday).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import g
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from engine import auth, documents, fees, lifecycle, services
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, Forbidden, InvalidRequest, NotFound
from engine.persistence.models import AuditEvent, Dossier, DossierFee, FeePayment, Task

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
FILE = "dang-ky-ho-kinh-doanh.bpmn"
CODE = "1.001612"
PHUOC_AN = "000.17.22.H19"
LONG_THO = "000.17.23.H19"
DESK = "motcua.phuocan"
FEES = "le_phi:Lệ phí đăng ký hộ kinh doanh:100.000; phi_sao_y:Phí cung cấp bản sao: 10000 đồng; ban_chinh:Bản chính Giấy chứng nhận:0"
SECRET = "bi-mat-cong-thanh-toan"
RECEPTION_FORM = {
    "ho_ten_chu_ho": "Trần Thị Hoa",
    "so_dinh_danh_chu_ho": "075190001234",
    "ten_ho_kinh_doanh": "Hộ kinh doanh Tạp hóa Hoa",
    "dia_chi_tru_so": "Ấp 1, xã Phước An, tỉnh Đồng Nai",
    "nganh_nghe_kinh_doanh": "Bán lẻ lương thực, thực phẩm (4721)",
    "von_kinh_doanh": 50_000_000,
    "so_luong_lao_dong": 2,
}


def vn(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant in March 2026, Hà Nội time (2/3 is a Monday)."""
    return datetime(2026, 3, day, hour, minute, tzinfo=VN_TZ)


def _bpmn(fees_text: str, before_processing: bool) -> bytes:
    text = (ROOT / "processes" / FILE).read_text(encoding="utf-8")
    anchor = '<camunda:property name="code" value="1.001612" />'
    assert text.count(anchor) == 1
    extra = f'<camunda:property name="fees" value="{fees_text}" />'
    extra += f'<camunda:property name="fees_before_processing" value="{"true" if before_processing else "false"}" />'
    return text.replace(anchor, anchor + extra).encode("utf-8")


def _setup(session: Session, before_processing: bool = False) -> None:
    load_demo_province(session, vn(1, 8))
    session.commit()
    services.deploy(session, {FILE: _bpmn(FEES, before_processing)}, actor="designer", now=vn(1, 8))


def _receive(session: Session, at: datetime, agency: str = PHUOC_AN, actor: str = DESK) -> Any:
    record = services.start_dossier(
        session, CODE, {"ten_ho_kinh_doanh": "Hộ kinh doanh Tạp hóa Hoa"}, actor=actor, now=at,
        agency_code=agency, applicant={"name": "Trần Thị Hoa", "phone": "0987654321"},
    )
    fees.on_receipt(session, record, services.get_version(session, CODE).meta, at, actor=actor)
    session.commit()
    return record


def _snapshot(session: Session, code: str) -> tuple[Any, ...]:
    """Everything a refused payment must leave as it was."""
    session.expire_all()
    dossier = services.get_dossier(session, code)
    states = session.execute(select(DossierFee.code, DossierFee.state, DossierFee.paid_at).where(DossierFee.dossier_id == dossier.id)
                             .order_by(DossierFee.id)).all()
    payments = session.scalar(select(func.count()).select_from(FeePayment))
    audit = session.scalar(select(func.count()).select_from(AuditEvent))
    return dossier.status, dossier.revision, dossier.due_at, dossier.paused_at, tuple(states), payments, audit


# --------------------------------------------------------------------------- the declaration


def test_declaration_is_read_as_people_type_it() -> None:
    assert fees.parse_fees(" le_phi : Lệ phí cấp Giấy chứng nhận : 25000 ;\n phi_tham_dinh:Phí thẩm định:1.250.000 đồng;") == (
        fees.FeeItem("le_phi", "Lệ phí cấp Giấy chứng nhận", 25_000),
        fees.FeeItem("phi_tham_dinh", "Phí thẩm định", 1_250_000),
    )
    # The label keeps its own colons; 0 is a fee the procedure waives; 25,000 and 25 000 are 25000.
    assert fees.parse_fees("a:Phí: bản sao:0;b:x:25,000;c:y:25 000 VNĐ") == (
        fees.FeeItem("a", "Phí: bản sao", 0), fees.FeeItem("b", "x", 25_000), fees.FeeItem("c", "y", 25_000)
    )
    assert fees.parse_fees("") == () and fees.parse_fees(None) == ()
    assert [fees.parse_flag(v) for v in (True, "true", "Có", "1", "false", "không", "", None)] == [True] * 4 + [False] * 4
    declared = fees.declaration({"fees": [{"code": "le_phi", "label": "Lệ phí", "amount": 25000}], "fees_before_processing": True})
    assert (declared.fees, declared.before_processing, declared.total) == ((fees.FeeItem("le_phi", "Lệ phí", 25000),), True, 25000)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("le_phi:25000", "thiếu mã, tên hoặc số tiền"),
        ("le_phi:Lệ phí:-5000", "là số âm"),
        ("le_phi:Lệ phí:2.5", "không phải số nguyên đồng"),
        ("le_phi:Lệ phí:hai mươi nghìn", "không phải số nguyên đồng"),
        ("le_phi:Lệ phí:", "không phải số nguyên đồng"),
        ("lệ phí:Lệ phí:1000", "chỉ được gồm chữ không dấu"),
        (":Lệ phí:1000", "thiếu mã khoản phí"),
        ("le_phi: :1000", "thiếu tên khoản phí"),
        ("a:Lệ phí:1000; a:Phí khác:2000", "khoản thứ 2"),
        ("a:Lệ phí:1000000000001", "vượt quá"),
        ("a:Lệ phí:²", "không phải số nguyên đồng"),
    ],
)
def test_a_wrong_declaration_says_what_and_where(text: str, says: str) -> None:
    with pytest.raises(fees.FeeDeclarationError) as caught:
        fees.parse_fees(text)
    assert says in str(caught.value)
    assert "'fees'" in str(caught.value)


def test_a_wrong_flag_or_a_flag_without_fees_is_refused() -> None:
    with pytest.raises(fees.FeeDeclarationError, match="chỉ nhận true hoặc false"):
        fees.parse_flag("maybe")
    with pytest.raises(fees.FeeDeclarationError, match="không khai báo khoản phí"):
        fees.declaration({"fees": "", "fees_before_processing": "true"})


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = '{"transaction_id":"GD-1","amount":100000}'.encode()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert fees.sign(body, SECRET) == "sha256=" + expected
    for header in ("sha256=" + expected, expected, expected.upper(), " sha256=" + expected + " "):
        assert fees.signature_valid(body, header, SECRET)
    for header in (None, "", "sha256=", "sha256=" + expected[:-1] + "0", "chữ ký giả", expected + "00"):
        assert not fees.signature_valid(body, header, SECRET)
    assert not fees.signature_valid(body + b" ", "sha256=" + expected, SECRET)
    assert not fees.signature_valid(body, "sha256=" + expected, "another secret")
    assert not fees.signature_valid(body, "sha256=" + expected, "")


# --------------------------------------------------------------------------- receipt and desk payments


def test_fees_are_recorded_at_receipt(session: Session) -> None:
    _setup(session)
    record = _receive(session, vn(2, 8))
    found = fees.statement(session, record.code)
    assert [(f.code, f.label, f.amount, f.state) for f in found.fees] == [
        ("le_phi", "Lệ phí đăng ký hộ kinh doanh", 100_000, "due"),
        ("phi_sao_y", "Phí cung cấp bản sao", 10_000, "due"),
        ("ban_chinh", "Bản chính Giấy chứng nhận", 0, "free"),
    ]
    assert (found.total, found.paid, found.outstanding, found.waiting) == (110_000, 0, 110_000, False)
    dossier = services.get_dossier(session, record.code)
    assert dossier.status == services.DossierStatus.RECEIVED and dossier.paused_at is None
    [due] = [e for e in services.dossier_history(session, record.code) if e.action == "fee.due"]
    assert (due.actor, due.details["total"]) == (DESK, 110_000)
    assert fees.form_fee_lines(session, dossier.id) == (
        "Lệ phí đăng ký hộ kinh doanh: 100.000 đồng (chưa nộp)",
        "Phí cung cấp bản sao: 10.000 đồng (chưa nộp)",
        "Bản chính Giấy chứng nhận: 0 đồng (miễn)",
    )


def test_a_procedure_without_fees_records_none(session: Session) -> None:
    load_demo_province(session, vn(1, 8))
    session.commit()
    services.deploy(session, {FILE: (ROOT / "processes" / FILE).read_bytes()}, actor="designer", now=vn(1, 8))
    record = _receive(session, vn(2, 8))
    assert fees.statement(session, record.code).fees == ()
    assert services.get_dossier(session, record.code).status == services.DossierStatus.RECEIVED


def test_desk_payment_with_its_receipt_number(session: Session) -> None:
    _setup(session)
    record = _receive(session, vn(2, 8))
    paid = fees.record_payment(session, record.code, "le_phi", 100_000, "BL-0000123", "desk", actor=DESK, now=vn(2, 9))
    assert (paid.agency_code, paid.receipt_number, paid.outstanding, paid.resumed) == (PHUOC_AN, "BL-0000123", 10_000, False)
    found = fees.statement(session, record.code)
    line = found.fees[0]
    assert (line.state, line.receipt_number, line.method, line.paid_at, line.recorded_by) == ("paid", "BL-0000123", "desk", vn(2, 9), DESK)
    assert (found.paid, found.outstanding) == (100_000, 10_000)
    [event] = [e for e in services.dossier_history(session, record.code) if e.action == "fee.paid"]
    assert (event.actor, event.subject, event.details["receipt_number"], event.details["amount"]) == (DESK, "le_phi", "BL-0000123", 100_000)
    assert fees.form_fee_lines(session, services.get_dossier(session, record.code).id)[0] == (
        "Lệ phí đăng ký hộ kinh doanh: 100.000 đồng (đã nộp, biên lai số BL-0000123 ngày 02/03/2026)"
    )
    receipt = documents.render(session, record.code, "01", "https://dichvucong.dongnai.gov.vn").decode()
    assert "5. Phí, lệ phí:" in receipt and "biên lai số BL-0000123" in receipt  # on the receipt form (mẫu 01)

    before = _snapshot(session, record.code)
    refused = [
        (Conflict, "đã nộp", ("le_phi", 100_000, "BL-0000124", "desk")),  # a fee is paid once
        (InvalidRequest, "không nhận nộp một phần", ("phi_sao_y", 5_000, "BL-0000124", "desk")),  # partial payment
        (InvalidRequest, "không khớp", ("phi_sao_y", 20_000, "BL-0000124", "desk")),
        (NotFound, "không có khoản", ("phi_khac", 10_000, "BL-0000124", "desk")),
        (Conflict, "được miễn", ("ban_chinh", 1, "BL-0000124", "desk")),
        (Conflict, "BL-0000123", ("phi_sao_y", 10_000, "BL-0000123", "desk")),  # the receipt number is taken here
        (InvalidRequest, "Hình thức nộp", ("phi_sao_y", 10_000, "BL-0000124", "cash")),
        (InvalidRequest, "số nguyên", ("phi_sao_y", "10000", "BL-0000124", "desk")),
        (InvalidRequest, "Thiếu số biên lai", ("phi_sao_y", 10_000, "  ", "desk")),
    ]
    for error, says, (fee_code, amount, receipt, method) in refused:
        with pytest.raises(error, match=says):
            fees.record_payment(session, record.code, fee_code, amount, receipt, method, actor=DESK, now=vn(2, 10))
        assert _snapshot(session, record.code) == before
    with pytest.raises(Forbidden):  # an officer without the desk role
        fees.record_payment(session, record.code, "phi_sao_y", 10_000, "BL-0000124", "desk", actor="chuyenvien.phuocan", now=vn(2, 10))
    with pytest.raises(Forbidden):  # another commune's desk does not handle this dossier
        fees.record_payment(session, record.code, "phi_sao_y", 10_000, "BL-0000124", "desk", actor="motcua.longtho", now=vn(2, 10),
                            agency_code=LONG_THO)
    with pytest.raises(NotFound, match="Không có cơ quan"):
        fees.record_payment(session, record.code, "phi_sao_y", 10_000, "BL-0000124", "desk", actor=DESK, now=vn(2, 10),
                            agency_code="000.99.99.H19")
    with pytest.raises(NotFound):
        fees.record_payment(session, "000.17.22.H19-260302-9999", "le_phi", 100_000, "BL-1", "desk", actor=DESK, now=vn(2, 10))
    assert _snapshot(session, record.code) == before

    # Receipt numbers are per agency: Long Thọ's desk has its own series.
    other = _receive(session, vn(2, 8, 30), agency=LONG_THO, actor="motcua.longtho")
    fees.record_payment(session, other.code, "le_phi", 100_000, "BL-0000123", "transfer", actor="motcua.longtho", now=vn(2, 10))
    assert fees.statement(session, other.code).fees[0].receipt_number == "BL-0000123"


def test_a_withdrawn_dossier_takes_no_payment(session: Session) -> None:
    _setup(session)
    record = _receive(session, vn(2, 8))
    lifecycle.withdraw(session, record.code, "Công dân rút hồ sơ", DESK, vn(2, 9))
    before = _snapshot(session, record.code)
    with pytest.raises(Conflict, match="Công dân yêu cầu rút hồ sơ"):
        fees.record_payment(session, record.code, "le_phi", 100_000, "BL-1", "desk", actor=DESK, now=vn(2, 10))
    assert _snapshot(session, record.code) == before


# --------------------------------------------------------------------------- paying before processing


def test_waits_until_every_fee_is_paid_and_due_dates_move_by_the_pause(session: Session) -> None:
    _setup(session, before_processing=True)
    record = _receive(session, vn(2, 8))  # Monday 2/3 08:00
    dossier = services.get_dossier(session, record.code)
    # 3 working days = 24 h from Mon 08:00: Mon 7.5 h, Tue 8 h, Wed 8 h (23.5), Thu 07:30 + 0.5 h.
    assert dossier.due_at == vn(5, 8)
    assert (dossier.status, dossier.sub_status, dossier.pause_reason, dossier.paused_at) == (
        services.DossierStatus.FINANCIAL_OBLIGATION, "fees", "payment", vn(2, 8))
    assert fees.statement(session, record.code).waiting
    [task] = services.open_tasks(session, record.code)
    assert (task.step_id, task.due_at) == ("tiep_nhan", vn(2, 10))  # 2 working hours
    with pytest.raises(Conflict, match="paused"):
        services.complete_task(session, task.id, RECEPTION_FORM, actor=DESK, now=vn(2, 9))
    pause = [e for e in services.dossier_history(session, record.code) if e.action == "dossier.pause"]
    assert [(e.to_state, e.details["reason"]) for e in pause] == [("6", "payment")]

    fees.record_payment(session, record.code, "le_phi", 100_000, "BL-1", "desk", actor=DESK, now=vn(3, 10))
    assert services.get_dossier(session, record.code).status == services.DossierStatus.FINANCIAL_OBLIGATION  # one fee left

    paid = fees.accept_callback(
        session, {"transaction_id": "GD-20260304-01", "dossier_code": record.code, "fee_code": "phi_sao_y", "amount": 10_000},
        vn(4, 9),
    )
    assert (paid.resumed, paid.outstanding, paid.method, paid.receipt_number) == (True, 0, "online", "GD-20260304-01")
    dossier = services.get_dossier(session, record.code)
    assert (dossier.status, dossier.paused_at) == (services.DossierStatus.RECEIVED, None)
    # Paused Mon 08:00 → Wed 09:00. The 24 h left count again from Wed 09:00: Wed 6.5 h, Thu 8, Fri 8 (22.5),
    # Mon 9/3 07:30 + 1.5 h → 09:00. The step's 2 h: Wed 09:00 → 11:00.
    assert dossier.due_at == vn(9, 9)
    assert session.get(Task, task.id, populate_existing=True).due_at == vn(4, 11)
    [resumed] = [e for e in services.dossier_history(session, record.code) if e.action == "dossier.resume"]
    assert (resumed.actor, resumed.at) == (fees.GATEWAY_ACTOR, vn(4, 9))
    services.complete_task(session, task.id, RECEPTION_FORM, actor=DESK, now=vn(4, 10))
    assert services.get_dossier(session, record.code).status == services.DossierStatus.PROCESSING


def test_inside_the_receipt_the_caller_writes_the_audit_and_saves_the_dossier(session: Session) -> None:
    """With the receipt's audit (as ``services.start_dossier`` passes it), nothing but the fee rows is written here.

    The procedure is deployed without fees; the declaration comes with the metadata given.
    """
    from engine.persistence import dossiers

    load_demo_province(session, vn(1, 8))
    session.commit()
    services.deploy(session, {FILE: (ROOT / "processes" / FILE).read_bytes()}, actor="designer", now=vn(1, 8))
    record = services.start_dossier(session, CODE, {}, actor=DESK, now=vn(2, 8), agency_code=PHUOC_AN)
    meta = {**services.get_version(session, CODE).meta, "fees": FEES, "fees_before_processing": "true"}
    audit = services._Audit(DESK, vn(2, 8), record.id)
    fees.on_receipt(session, record, meta, vn(2, 8), audit=audit)
    assert [row["action"] for row in audit.rows] == ["fee.due", "dossier.pause"]
    assert (record.status, record.paused_at) == (services.DossierStatus.FINANCIAL_OBLIGATION, vn(2, 8))
    stored = session.execute(select(Dossier.status, Dossier.paused_at).where(Dossier.id == record.id)).one()
    assert tuple(stored) == (services.DossierStatus.RECEIVED, None)
    assert session.scalar(select(func.count()).select_from(DossierFee).where(DossierFee.dossier_id == record.id)) == 3
    assert dossiers.save_dossier(session, record, vn(2, 8))
    dossiers.add_audit(session, audit.rows)
    session.commit()
    assert fees.statement(session, record.code).waiting
    # A second call for the same receipt changes nothing.
    again = services._Audit(DESK, vn(2, 8), record.id)
    fees.on_receipt(session, record, meta, vn(2, 8), audit=again)
    assert again.rows == []
    assert session.scalar(select(func.count()).select_from(DossierFee).where(DossierFee.dossier_id == record.id)) == 3


def test_a_pause_an_officer_asked_for_is_not_ended_by_the_fees(session: Session) -> None:
    """Paying the declared fees resumes only the wait for them, not a pause asked for later (e.g. taxes)."""
    _setup(session)
    record = _receive(session, vn(2, 8))
    lifecycle.request_supplement(session, record.code, ["Bản sao CCCD"], DESK, vn(2, 9))
    fees.record_payment(session, record.code, "le_phi", 100_000, "BL-1", "desk", actor=DESK, now=vn(2, 10))
    paid = fees.record_payment(session, record.code, "phi_sao_y", 10_000, "BL-2", "desk", actor=DESK, now=vn(2, 10, 5))
    assert (paid.outstanding, paid.resumed) == (0, False)
    assert services.get_dossier(session, record.code).status == services.DossierStatus.SUPPLEMENT_REQUESTED


# --------------------------------------------------------------------------- the web API


@pytest.fixture
def web(db_engine: Engine) -> Any:
    """The web application with the gateway's secret, its clock fixed at Wednesday 4/3 09:00."""
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False), payment_secret=SECRET)

    @app.before_request
    def fixed_clock() -> None:
        g.now = vn(4, 9)

    yield app.test_client()
    app.extensions["motcua.engine"].dispose()


def _callback(web: Any, payload: Any, secret: str = SECRET, raw: bytes | None = None) -> Any:
    body = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return web.post("/api/v1/payments/callback", data=body, content_type="application/json",
                    headers={fees.SIGNATURE_HEADER: fees.sign(body, secret)})


def test_gateway_callback_pays_and_resumes_and_refuses_what_is_wrong(session: Session, web: Any) -> None:
    _setup(session, before_processing=True)
    record = _receive(session, vn(2, 8))
    fees.record_payment(session, record.code, "le_phi", 100_000, "BL-1", "desk", actor=DESK, now=vn(3, 10))
    good = {"transaction_id": "GD-20260304-01", "dossier_code": record.code, "fee_code": "phi_sao_y", "amount": 10_000,
            "receipt_number": "EBL-555", "paid_at": "2026-03-04T08:59:00+07:00"}
    before = _snapshot(session, record.code)

    refused = [
        (_callback(web, good, secret="sai-bi-mat"), 401),  # bad signature
        (web.post("/api/v1/payments/callback", json=good), 401),  # no signature
        (_callback(web, {**good, "amount": 9_000}), 400),  # wrong amount
        (_callback(web, {**good, "amount": "10000"}), 400),
        (_callback(web, {**good, "fee_code": "phi_khac"}), 404),  # unknown fee
        (_callback(web, {**good, "dossier_code": "000.17.22.H19-260302-9999"}), 404),  # unknown dossier
        (_callback(web, {**good, "fee_code": "le_phi", "amount": 100_000}), 409),  # already paid at the desk
        (_callback(web, {**good, "paid_at": "hôm qua"}), 400),
        (_callback(web, None, raw=b"{not json"), 400),
        (_callback(web, ["not", "an", "object"]), 400),
    ]
    for response, status in refused:
        assert response.status_code == status, response.get_json()
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["detail"]
        assert _snapshot(session, record.code) == before

    response = _callback(web, good)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["resumed"], body["replayed"], body["outstanding"], body["receipt_number"]) == (True, False, 0, "EBL-555")
    dossier = services.get_dossier(session, record.code)
    assert (dossier.status, dossier.due_at) == (services.DossierStatus.RECEIVED, vn(9, 9))  # as in the use-case test
    line = fees.statement(session, record.code).fees[1]
    assert (line.state, line.method, line.transaction_id, line.paid_at) == ("paid", "online", "GD-20260304-01", vn(4, 8, 59))

    # The gateway retries: the same transaction is answered again and nothing changes.
    after = _snapshot(session, record.code)
    again = _callback(web, good)
    assert again.status_code == 200 and again.get_json()["replayed"] is True
    assert _snapshot(session, record.code) == after
    # The same transaction id for another payment is refused.
    other = _receive(session, vn(4, 10))
    clash = _callback(web, {**good, "dossier_code": other.code, "fee_code": "le_phi", "amount": 100_000})
    assert clash.status_code == 409 and "GD-20260304-01" in clash.get_json()["detail"]
    assert fees.statement(session, other.code).paid == 0


def test_callbacks_are_refused_while_no_secret_is_configured(session: Session, db_engine: Engine) -> None:
    app = create_app(database_url=db_engine.url.render_as_string(hide_password=False), payment_secret="")
    try:
        response = app.test_client().post("/api/v1/payments/callback", data=b"{}", content_type="application/json",
                                          headers={fees.SIGNATURE_HEADER: fees.sign(b"{}", "")})
        assert response.status_code == 403 and response.mimetype == "application/problem+json"
    finally:
        app.extensions["motcua.engine"].dispose()


def test_desk_payment_and_fee_list_over_the_api(session: Session, web: Any) -> None:
    _setup(session)
    record = _receive(session, vn(2, 8))
    for username in (DESK, "motcua.longtho"):
        auth.set_password(session, username, "mat-khau-an-toan")

    def token(username: str) -> str:
        response = web.post("/api/v1/auth/login", json={"username": username, "password": "mat-khau-an-toan"})
        assert response.status_code == 200
        return response.get_json()["token"]

    desk = {"Authorization": f"Bearer {token(DESK)}"}
    payment = {"fee_code": "le_phi", "amount": 100_000, "receipt_number": "BL-77", "method": "desk"}
    assert web.post(f"/api/v1/dossiers/{record.code}/payments", json=payment).status_code == 401
    stranger = {"Authorization": f"Bearer {token('motcua.longtho')}"}
    assert web.post(f"/api/v1/dossiers/{record.code}/payments", json=payment, headers=stranger).status_code == 403
    assert web.post(f"/api/v1/dossiers/{record.code}/payments", json={**payment, "amount": 1_000}, headers=desk).status_code == 400
    assert web.post(f"/api/v1/dossiers/{record.code}/payments", json={**payment, "method": "cash"}, headers=desk).status_code == 422

    response = web.post(f"/api/v1/dossiers/{record.code}/payments", json=payment, headers=desk)
    assert response.status_code == 201, response.get_json()
    assert (response.get_json()["agency_code"], response.get_json()["outstanding"]) == (PHUOC_AN, 10_000)
    assert web.post(f"/api/v1/dossiers/{record.code}/payments", json=payment, headers=desk).status_code == 409

    listed = web.get(f"/api/v1/dossiers/{record.code}/fees", headers=desk)
    assert listed.status_code == 200
    body = listed.get_json()
    assert (body["total"], body["paid"], body["outstanding"], body["waiting"]) == (110_000, 100_000, 10_000, False)
    assert [(f["code"], f["state"], f["state_label"], f["receipt_number"]) for f in body["fees"]] == [
        ("le_phi", "paid", "Đã nộp", "BL-77"), ("phi_sao_y", "due", "Chưa nộp", None), ("ban_chinh", "free", "Miễn", None),
    ]
    assert web.get(f"/api/v1/dossiers/{record.code}/fees", headers=stranger).status_code == 403
    assert session.scalar(select(func.count()).select_from(FeePayment)) == 1
    assert session.scalar(select(Dossier.status).where(Dossier.code == record.code)) == services.DossierStatus.RECEIVED


def test_the_same_callback_twice_at_once_pays_once(session: Session, db_engine: Engine) -> None:
    _setup(session)
    record = _receive(session, vn(2, 8))
    payload = {"transaction_id": "GD-RACE", "dossier_code": record.code, "fee_code": "le_phi", "amount": 100_000}
    start = threading.Barrier(2)
    results: list[Any] = []

    def deliver() -> None:
        with Session(db_engine, expire_on_commit=False) as own:
            start.wait()
            try:
                results.append(fees.accept_callback(own, payload, vn(2, 9)))
            except Exception as err:  # reported below
                results.append(err)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(r, fees.PaymentResult) for r in results), results
    assert sorted(r.replayed for r in results) == [False, True]
    assert session.scalar(select(func.count()).select_from(FeePayment)) == 1
    assert len([e for e in services.dossier_history(session, record.code) if e.action == "fee.paid"]) == 1
