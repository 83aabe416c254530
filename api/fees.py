"""Fees (phí, lệ phí) of a dossier and their payments.

* ``GET  /api/v1/dossiers/<code>/fees`` — the dossier's fees, what was paid, what is outstanding;
* ``POST /api/v1/dossiers/<code>/payments`` — a receptionist of an agency handling the dossier
  records a payment with its receipt number (số biên lai);
* ``POST /api/v1/payments/callback`` — the payment gateway reports an online payment. It signs
  the raw body: header ``X-MotCua-Signature: sha256=<hex HMAC-SHA256>`` under
  ``MOTCUA_PAYMENT_SECRET`` (see ``docs/fees.md``).
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, jsonify, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from engine import fees
from engine.errors import Forbidden
from engine.persistence.models import Agency

from .app import db_session
from .dossiers import _dossier, _dossier_agencies
from .problems import problem
from .security import current, login_required, now

PREFIX = ""
bp = Blueprint("fees", __name__, description="Phí, lệ phí (fees) và thanh toán (payments)")
SECURED = [{"bearer": []}]


class PaymentIn(Schema):
    fee_code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    amount = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=fees.MAX_AMOUNT))
    receipt_number = fields.String(required=True, validate=validate.Length(min=1, max=64))
    method = fields.String(load_default="desk", validate=validate.OneOf(fees.METHODS))


class FeeLineOut(Schema):
    code = fields.String()
    label = fields.String()
    amount = fields.Integer()
    state = fields.String()
    state_label = fields.String()
    paid_at = fields.AwareDateTime(allow_none=True)
    method = fields.String(allow_none=True)
    agency_code = fields.String(allow_none=True)
    receipt_number = fields.String(allow_none=True)
    transaction_id = fields.String(allow_none=True)
    recorded_by = fields.String(allow_none=True)


class FeeStatementOut(Schema):
    dossier_code = fields.String()
    waiting = fields.Boolean()
    total = fields.Integer()
    paid = fields.Integer()
    outstanding = fields.Integer()
    fees = fields.List(fields.Nested(FeeLineOut))


class PaymentOut(Schema):
    dossier_code = fields.String()
    fee_code = fields.String()
    amount = fields.Integer()
    method = fields.String()
    agency_code = fields.String()
    receipt_number = fields.String()
    transaction_id = fields.String(allow_none=True)
    paid_at = fields.AwareDateTime()
    outstanding = fields.Integer()
    resumed = fields.Boolean()
    replayed = fields.Boolean()


def _statement_out(code: str) -> dict[str, Any]:
    found = fees.statement(db_session(), code)
    return {
        "dossier_code": found.dossier_code, "waiting": found.waiting, "total": found.total, "paid": found.paid,
        "outstanding": found.outstanding, "fees": [{**line.__dict__, "state_label": line.state_label} for line in found.fees],
    }


@bp.route("/dossiers/<string:code>/fees", methods=["GET"])
@bp.response(200, FeeStatementOut)
@bp.doc(security=SECURED, summary="Phí, lệ phí của hồ sơ")
@login_required
def list_fees(code: str) -> Any:
    """The dossier's fees in declaration order, each with its payment; totals paid and outstanding."""
    _dossier(code)
    return _statement_out(code)


@bp.route("/dossiers/<string:code>/payments", methods=["POST"])
@bp.arguments(PaymentIn)
@bp.response(201, PaymentOut)
@bp.doc(security=SECURED, summary="Ghi nhận nộp phí, lệ phí tại Bộ phận Một cửa")
@login_required
def record_payment(body: dict[str, Any], code: str) -> Any:
    """A receptionist of an agency handling the dossier records a payment (exact amount, receipt number unique per agency)."""
    session = db_session()
    dossier = _dossier(code, "receptionist")
    mine = current().agencies("receptionist") & _dossier_agencies(session, dossier)
    preferred = [a for a in (dossier.receiving_agency_id, dossier.home_agency_id) if a in mine] or sorted(mine)
    if not preferred:
        raise Forbidden(f"Cần vai trò receptionist tại một cơ quan giải quyết hồ sơ {code}.")
    agency = session.get(Agency, preferred[0])
    result = fees.record_payment(
        session, code, body["fee_code"], body["amount"], body["receipt_number"], body["method"],
        actor=current().username, now=now(), agency_code=agency.code,
    )
    return result.__dict__


@bp.route("/payments/callback", methods=["POST"])
@bp.doc(
    summary="Cổng thanh toán báo kết quả thanh toán trực tuyến",
    parameters=[{"in": "header", "name": fees.SIGNATURE_HEADER, "required": True, "schema": {"type": "string"},
                 "description": "sha256=<hex HMAC-SHA256 of the raw body under MOTCUA_PAYMENT_SECRET>"}],
    requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
    responses={
        "200": {"description": "Đã ghi nhận (replayed: true khi giao dịch đã ghi nhận trước đó)"},
        "400": {"description": "Sai định dạng hoặc sai số tiền"},
        "401": {"description": "Sai chữ ký"},
        "404": {"description": "Không có hồ sơ hoặc khoản phí"},
        "409": {"description": "Khoản đã nộp, mã giao dịch hoặc số biên lai đã dùng cho khoản khác"},
        "403": {"description": "Chưa cấu hình MOTCUA_PAYMENT_SECRET: không nhận báo thanh toán"},
    },
)
def payment_callback() -> Any:
    """The gateway reports a payment; authenticated by its HMAC signature, idempotent on ``transaction_id``."""
    secret = str(getattr(current_app.config["MOTCUA"], "payment_secret", "") or "")
    if not secret:
        return problem(403, "Chưa cấu hình kết nối cổng thanh toán (MOTCUA_PAYMENT_SECRET).", "payments-disabled")
    body = request.get_data(cache=True)
    if not fees.signature_valid(body, request.headers.get(fees.SIGNATURE_HEADER), secret):
        return problem(401, f"Thiếu hoặc sai chữ ký của cổng thanh toán (header {fees.SIGNATURE_HEADER}).", "payment-signature")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return problem(400, "Nội dung thông báo thanh toán phải là JSON (UTF-8).", "payment-payload")
    result = fees.accept_callback(db_session(), payload, now())
    return jsonify(PaymentOut().dump(result.__dict__)), 200
