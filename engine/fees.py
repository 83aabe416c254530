"""Fees (phí, lệ phí) of a procedure: declared on its diagram, due at receipt, paid at the desk or online.

Declaration — two extension properties of the main process (Camunda Modeler:
*Extension properties*, *Add property*)::

    fees                    le_phi:Lệ phí cấp Giấy chứng nhận:25000; phi_tham_dinh:Phí thẩm định:100000
    fees_before_processing  true

``fees`` lists ``code:label:amount`` items separated by ``;`` (or new lines);
the amount is a whole number of đồng, ``0`` for a fee the procedure waives
(``25000``, ``25.000``, ``25.000 đồng`` are the same). With
``fees_before_processing`` true the dossier waits in the financial-obligation
status (national status 6) from its receipt until every fee is paid; the
payment of the last fee resumes it (:func:`engine.lifecycle.resume`), and its
due dates move by the working time it waited.

Use cases:

* :func:`on_receipt` — records the fees a dossier just received owes (inside
  the receipt's transaction; it never commits);
* :func:`record_payment` — a receptionist records a payment at the desk (or a
  transfer), with the receipt number (số biên lai);
* :func:`accept_callback` — a payment gateway reports an online payment
  (the web layer checks its signature with :func:`signature_valid` first);
* :func:`statement` — a dossier's fees and payments; :func:`form_fee_lines`
  the fee lines of form 01.

Rules: a fee is paid once, in full (partial payments are refused); a receipt
number is used once per agency; a gateway transaction id once overall (a
replay of the same payment answers with the payment already recorded and
changes nothing). Every payment is in the audit trail (action ``fee.paid``).

Example::

    record = services.start_dossier(session, "1.001612", data, actor="motcua.phuocan", now=now, agency_code=desk)
    fees.on_receipt(session, record, services.get_version(session, "1.001612").meta, now, actor="motcua.phuocan")
    session.commit()
    fees.record_payment(session, record.code, "le_phi", 100000, "0001234", "desk", actor="motcua.phuocan", now=now)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import organisation, services
from .core import bpmn
from .core.calendar import VN_TZ
from .errors import Conflict, Forbidden, InvalidRequest, NotFound
from .persistence import dossiers
from .persistence.db import unit_of_work
from .persistence.dossiers import DossierRecord
from .persistence.models import Agency, DossierFee, FeePayment, ProcedureFile, Task

__all__ = [
    "Declaration",
    "FeeDeclarationError",
    "FeeItem",
    "FeeLine",
    "FeeStatement",
    "GATEWAY_ACTOR",
    "METHODS",
    "PaymentResult",
    "SIGNATURE_HEADER",
    "accept_callback",
    "declaration",
    "form_fee_lines",
    "format_amount",
    "on_receipt",
    "parse_fees",
    "parse_flag",
    "record_payment",
    "sign",
    "signature_valid",
    "statement",
]

#: How a payment was made: at the desk, by bank transfer, online through a gateway.
METHODS = ("desk", "transfer", "online")
METHOD_LABELS = {"desk": "Nộp tại Bộ phận Một cửa", "transfer": "Chuyển khoản", "online": "Thanh toán trực tuyến"}
#: States of a fee row.
DUE, PAID, FREE = "due", "paid", "free"
STATE_LABELS = {DUE: "Chưa nộp", PAID: "Đã nộp", FREE: "Miễn"}
#: ``sub_status`` of a dossier waiting for its declared fees (``pause_reason`` is ``payment``).
WAITING_FOR_FEES = "fees"
#: Who records a payment reported by the gateway, in the audit trail.
GATEWAY_ACTOR = "payment-gateway"
#: Header carrying the gateway's signature: ``sha256=<hex HMAC-SHA256 of the raw body>``.
SIGNATURE_HEADER = "X-MotCua-Signature"

MAX_AMOUNT = 10**12  # one thousand billion đồng
MAX_FEES = 50
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_GROUPED = re.compile(r"\d{1,3}(?:([.,])\d{3})(?:\1\d{3})*", re.ASCII)
_CURRENCY = re.compile(r"\s*(?:đồng|đ|vnđ|vnd)\s*$", re.IGNORECASE)
_TRUE = ("true", "yes", "có", "1")
_FALSE = ("false", "no", "không", "0", "")
_FORMAT_HINT = "viết mỗi khoản theo dạng mã:tên:số tiền, các khoản cách nhau bởi dấu chấm phẩy, ví dụ le_phi:Lệ phí cấp Giấy chứng nhận:25000"


# --------------------------------------------------------------------------- the declaration (pure)


class FeeDeclarationError(ValueError):
    """The ``fees`` or ``fees_before_processing`` property cannot be read; the message says why, in Vietnamese."""


@dataclass(frozen=True)
class FeeItem:
    """One declared fee: a code unique in the procedure, its label, its amount in đồng."""

    code: str
    label: str
    amount: int


@dataclass(frozen=True)
class Declaration:
    """What a procedure declares about fees."""

    fees: tuple[FeeItem, ...] = ()
    before_processing: bool = False

    @property
    def total(self) -> int:
        return sum(item.amount for item in self.fees)


def format_amount(amount: int) -> str:
    """``100000`` → ``100.000 đồng``."""
    return f"{amount:,}".replace(",", ".") + " đồng"


def _amount(text: str, where: str) -> int:
    raw = _CURRENCY.sub("", text.strip()).replace(" ", "").replace("\u00a0", "")
    if raw.startswith("-"):
        raise FeeDeclarationError(f"{where}: số tiền '{text.strip()}' là số âm; số tiền là số nguyên đồng, từ 0 trở lên.")
    if raw.isascii() and raw.isdigit():
        value = int(raw)
    elif _GROUPED.fullmatch(raw):
        value = int(raw.replace(".", "").replace(",", ""))
    else:
        raise FeeDeclarationError(
            f"{where}: số tiền '{text.strip()}' không phải số nguyên đồng (ví dụ 25000 hoặc 25.000)."
        )
    if value > MAX_AMOUNT:
        raise FeeDeclarationError(f"{where}: số tiền {format_amount(value)} vượt quá {format_amount(MAX_AMOUNT)}.")
    return value


def _item(code: str, label: str, amount: int, where: str, seen: set[str]) -> FeeItem:
    if not code:
        raise FeeDeclarationError(f"{where}: thiếu mã khoản phí; {_FORMAT_HINT}.")
    if not _CODE.fullmatch(code):
        raise FeeDeclarationError(
            f"{where}: mã '{code}' chỉ được gồm chữ không dấu, chữ số, dấu gạch dưới, dấu chấm, dấu gạch ngang (tối đa 64 ký tự)."
        )
    if code in seen:
        raise FeeDeclarationError(f"{where}: mã '{code}' đã dùng cho một khoản khác; mỗi khoản một mã riêng.")
    if not label:
        raise FeeDeclarationError(f"{where}: thiếu tên khoản phí; {_FORMAT_HINT}.")
    if len(label) > 300:
        raise FeeDeclarationError(f"{where}: tên khoản phí dài quá 300 ký tự.")
    seen.add(code)
    return FeeItem(code, label, amount)


def parse_fees(text: str | None) -> tuple[FeeItem, ...]:
    """The fees of a ``fees`` property: ``code:label:amount`` items separated by ``;`` or new lines.

    The label may itself contain ``:`` (the code ends at the first, the amount
    starts after the last). Empty text declares no fee.

    >>> parse_fees("le_phi:Lệ phí cấp Giấy chứng nhận:25.000; phi_tham_dinh:Phí thẩm định:100000")[1]
    FeeItem(code='phi_tham_dinh', label='Phí thẩm định', amount=100000)
    """
    if text is None or not text.strip():
        return ()
    parts = [p.strip() for p in re.split(r"[;\n]", text)]
    items: list[FeeItem] = []
    seen: set[str] = set()
    for number, part in enumerate((p for p in parts if p), start=1):
        where = f"Phí, lệ phí (thuộc tính 'fees'), khoản thứ {number} '{part[:80]}'"
        if part.count(":") < 2:
            raise FeeDeclarationError(f"{where}: thiếu mã, tên hoặc số tiền; {_FORMAT_HINT}.")
        code, rest = part.split(":", 1)
        label, amount = rest.rsplit(":", 1)
        items.append(_item(code.strip(), label.strip(), _amount(amount, where), where, seen))
    if len(items) > MAX_FEES:
        raise FeeDeclarationError(f"Phí, lệ phí (thuộc tính 'fees'): {len(items)} khoản, nhiều hơn mức tối đa {MAX_FEES}.")
    return tuple(items)


def parse_flag(text: Any) -> bool:
    """``fees_before_processing``: true/false (also yes/no, có/không, 1/0); empty is false."""
    if isinstance(text, bool):
        return text
    value = str(text if text is not None else "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FeeDeclarationError(
        f"Thuộc tính 'fees_before_processing' là '{str(text)[:40]}'; chỉ nhận true hoặc false (có hoặc không)."
    )


def declaration(meta: Mapping[str, Any]) -> Declaration:
    """The fee declaration in a version's metadata.

    ``meta["fees"]`` may be the property's text or already a list of
    ``{"code", "label", "amount"}``; ``meta["fees_before_processing"]`` a
    boolean or the property's text. Raises :class:`FeeDeclarationError`.
    """
    raw = meta.get("fees")
    if raw is None or isinstance(raw, str):
        fees = parse_fees(raw)
    elif isinstance(raw, (list, tuple)):
        seen: set[str] = set()
        items = []
        for number, entry in enumerate(raw, start=1):
            where = f"Phí, lệ phí (thuộc tính 'fees'), khoản thứ {number}"
            if not isinstance(entry, Mapping):
                raise FeeDeclarationError(f"{where}: không đọc được.")
            amount = entry.get("amount")
            if isinstance(amount, bool) or not isinstance(amount, (int, str)):
                raise FeeDeclarationError(f"{where}: số tiền '{amount}' không phải số nguyên đồng.")
            value = amount if isinstance(amount, int) else _amount(amount, where)
            if value < 0 or value > MAX_AMOUNT:
                raise FeeDeclarationError(f"{where}: số tiền phải từ 0 đến {format_amount(MAX_AMOUNT)}.")
            items.append(_item(str(entry.get("code") or "").strip(), str(entry.get("label") or "").strip(), value, where, seen))
        fees = tuple(items)
    else:
        raise FeeDeclarationError("Phí, lệ phí (thuộc tính 'fees'): không đọc được.")
    before = parse_flag(meta.get("fees_before_processing"))
    if before and not fees:
        raise FeeDeclarationError("Thuộc tính 'fees_before_processing' là true nhưng thủ tục không khai báo khoản phí, lệ phí nào ('fees').")
    return Declaration(fees, before)


# Versions never change: the declaration read from a version's files is kept.
_FROM_FILES: dict[tuple[str, int], Declaration] = {}
_FROM_FILES_LOCK = threading.Lock()


def _declaration_of(session: Session, version_id: int, meta: Mapping[str, Any]) -> Declaration:
    """The version's declaration: from its metadata, or else from the main process of its deployed files."""
    if "fees" in meta or "fees_before_processing" in meta:
        return declaration(meta)
    key = (str(session.get_bind().url), version_id)
    with _FROM_FILES_LOCK:
        found = _FROM_FILES.get(key)
    if found is not None:
        return found
    props: dict[str, str] = {}
    process_id = meta.get("process_id")
    for name, content in session.execute(
        select(ProcedureFile.filename, ProcedureFile.content).where(ProcedureFile.version_id == version_id).order_by(ProcedureFile.id)
    ):
        root, _problems = bpmn.parse_xml(bytes(content), name)
        if root is None:
            continue
        for process in root.iter(f"{{{bpmn.BPMN_NS}}}process"):
            if process.get("id") == process_id:
                props = bpmn.extension_properties(process)
    found = declaration({k: props[k] for k in ("fees", "fees_before_processing") if k in props})
    with _FROM_FILES_LOCK:
        _FROM_FILES[key] = found
    return found


# --------------------------------------------------------------------------- receipt


def on_receipt(
    session: Session,
    record: DossierRecord,
    meta: Mapping[str, Any],
    now: datetime,
    *,
    audit: Any | None = None,
    actor: str = "system",
) -> None:
    """Record the fees the dossier ``record`` (just received) owes; pause it when they come first.

    Runs in the caller's transaction and never commits. The fee rows are
    written at once. With ``audit`` (the receipt's ``services._Audit``) the
    audit rows are appended to it and the changed ``record`` is left for the
    caller to save — as ``services.start_dossier`` does when this is called
    right before its ``_sync``. Without it, the audit rows are written and a
    paused ``record`` is saved here (for a dossier already stored).
    A broken declaration raises :class:`Conflict` and the receipt fails.
    Called again for a dossier whose fees are recorded, it does nothing.
    """
    try:
        declared = _declaration_of(session, record.procedure_version_id, meta)
    except FeeDeclarationError as err:
        raise Conflict(f"Thủ tục {meta.get('code')} khai báo phí, lệ phí sai, chưa tiếp nhận được hồ sơ: {err}") from err
    if not declared.fees:
        return
    if session.scalar(select(DossierFee.id).where(DossierFee.dossier_id == record.id).limit(1)) is not None:
        return  # recorded already: a second call for the same receipt changes nothing
    session.connection().execute(
        insert(DossierFee.__table__),
        [
            {"dossier_id": record.id, "code": item.code, "label": item.label, "amount": item.amount,
             "state": DUE if item.amount else FREE, "created_at": now, "paid_at": None}
            for item in declared.fees
        ],
    )
    rows = audit if audit is not None else services._Audit(actor, now, record.id)
    due = [item for item in declared.fees if item.amount]
    rows.add(
        "fee.due", None, None, DUE if due else FREE, record.code,
        {"fees": [item.__dict__ for item in declared.fees], "total": declared.total, "before_processing": declared.before_processing},
    )
    paused = declared.before_processing and bool(due)
    if paused:
        items = [f"{item.label}: {format_amount(item.amount)}" for item in due]
        before = record.status
        record.status, record.sub_status = services.DossierStatus.FINANCIAL_OBLIGATION, WAITING_FOR_FEES
        record.paused_at, record.pause_reason = now, "payment"
        rows.add("dossier.pause", None, str(before), str(record.status), record.code, {"reason": "payment", "items": items})
        services.notify_applicant(
            session, record, "dossier.payment_requested", f"Hồ sơ {record.code}: thực hiện nghĩa vụ tài chính",
            "Đề nghị ông/bà nộp: " + "; ".join(items) + f" (tổng cộng {format_amount(declared.total)}). "
            "Hồ sơ được giải quyết sau khi nộp đủ.", now,
        )
    if audit is None:
        dossiers.add_audit(session, rows.rows)
        if paused and not dossiers.save_dossier(session, record, now):
            raise Conflict(f"Hồ sơ {record.code} vừa được thay đổi; vui lòng tải lại và thử lại.")


# --------------------------------------------------------------------------- payments


@dataclass(frozen=True)
class PaymentResult:
    """A recorded payment, what the dossier still owes, and whether it resumed."""

    dossier_code: str
    fee_code: str
    amount: int
    method: str
    agency_code: str
    receipt_number: str
    transaction_id: str | None
    paid_at: datetime
    outstanding: int
    resumed: bool = False
    #: True when the gateway reported a payment already recorded (nothing changed).
    replayed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "paid_at": self.paid_at.isoformat()}


#: Statuses in which a fee can be paid: received, processing, paused, processed (paid on collecting the result).
PAYABLE = (2, 4, 5, 6, 9)


def _record(session: Session, code: str) -> DossierRecord:
    services._checked_code(code, "dossier")
    record = dossiers.find_dossier(session, code)
    if record is None:
        raise NotFound(f"Không có hồ sơ mã {code}.")
    return record


def _text(value: Any, what: str, limit: int = 64) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRequest(f"Thiếu {what}.")
    if not isinstance(value, str):
        raise InvalidRequest(f"{what[0].upper()}{what[1:]} phải là chuỗi ký tự.")
    value = value.strip()
    if len(value) > limit or "\x00" in value:
        raise InvalidRequest(f"{what[0].upper()}{what[1:]} dài quá {limit} ký tự.")
    return value


def _money(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"Số tiền phải là số nguyên đồng, không phải '{str(value)[:40]}'.")
    if value <= 0 or value > MAX_AMOUNT:
        raise InvalidRequest(f"Số tiền phải lớn hơn 0 và không quá {format_amount(MAX_AMOUNT)}.")
    return value


def _outstanding(session: Session, dossier_id: int) -> int:
    amounts = session.scalars(select(DossierFee.amount).where(DossierFee.dossier_id == dossier_id, DossierFee.state == DUE))
    return sum(amounts)


def _pay(
    session: Session, record: DossierRecord, fee_code: str, amount: int, receipt_number: str, method: str,
    agency_code: str, transaction_id: str | None, paid_at: datetime, actor: str, now: datetime,
) -> PaymentResult:
    """Record the payment, audit it, resume the dossier when it waited for its last fee; commit."""
    if record.status not in PAYABLE:
        label = services.DossierStatus.LABELS.get(record.status, str(record.status))
        raise Conflict(f"Hồ sơ {record.code} đang ở trạng thái '{label}'; không ghi nhận nộp phí, lệ phí.")
    fee = session.scalar(
        select(DossierFee).where(DossierFee.dossier_id == record.id, DossierFee.code == fee_code)
        .with_for_update().execution_options(populate_existing=True)
    )
    if fee is None:
        raise NotFound(f"Hồ sơ {record.code} không có khoản phí, lệ phí mã '{fee_code}'.")
    if fee.state == FREE:
        raise Conflict(f"Khoản '{fee.label}' của hồ sơ {record.code} được miễn; không phải nộp.")
    if fee.state == PAID:
        raise Conflict(f"Khoản '{fee.label}' của hồ sơ {record.code} đã nộp; mỗi khoản chỉ nộp một lần.")
    if amount != fee.amount:
        raise InvalidRequest(
            f"Số tiền {format_amount(amount)} không khớp khoản '{fee.label}' phải nộp {format_amount(fee.amount)}; "
            "mỗi khoản nộp đủ một lần, không nhận nộp một phần.",
            due=fee.amount,
        )
    taken = session.scalar(
        select(FeePayment.id).where(FeePayment.agency_code == agency_code, FeePayment.receipt_number == receipt_number)
    )
    if taken is not None:
        raise Conflict(f"Biên lai số {receipt_number} của cơ quan {agency_code} đã dùng cho một khoản nộp khác.")
    session.add(
        FeePayment(
            dossier_id=record.id, fee_id=fee.id, amount=amount, method=method, agency_code=agency_code,
            receipt_number=receipt_number, transaction_id=transaction_id, paid_at=paid_at, recorded_at=now, recorded_by=actor,
        )
    )
    fee.state, fee.paid_at = PAID, paid_at
    try:
        session.flush()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(f"Khoản '{fee_code}' của hồ sơ {record.code} vừa được ghi nhận bởi một giao dịch khác.") from err
    audit = services._Audit(actor, now, record.id)
    audit.add(
        "fee.paid", None, DUE, PAID, fee_code,
        {"label": fee.label, "amount": amount, "method": method, "agency": agency_code, "receipt_number": receipt_number,
         "transaction_id": transaction_id, "paid_at": paid_at.isoformat()},
    )
    dossiers.add_audit(session, audit.rows)
    outstanding = _outstanding(session, record.id)
    resume = (
        outstanding == 0 and record.status == services.DossierStatus.FINANCIAL_OBLIGATION
        and record.sub_status == WAITING_FOR_FEES and record.paused_at is not None
    )
    if resume:
        from . import lifecycle  # lifecycle imports services, which may import this module

        lifecycle.resume(session, record.code, actor, now)  # commits the payment with the resumption
    else:
        session.commit()
    return PaymentResult(
        record.code, fee_code, amount, method, agency_code, receipt_number, transaction_id, paid_at, outstanding, resumed=resume
    )


def _dossier_agencies(session: Session, record: DossierRecord) -> set[int]:
    ids = {record.home_agency_id, record.receiving_agency_id}
    ids |= set(session.scalars(select(Task.agency_id).where(Task.dossier_id == record.id)))
    return {i for i in ids if i is not None}


@unit_of_work
def record_payment(
    session: Session,
    code: str,
    fee_code: str,
    amount: int,
    receipt_number: str,
    method: str,
    actor: str,
    now: datetime,
    agency_code: str | None = None,
) -> PaymentResult:
    """A receptionist records the payment of fee ``fee_code`` of dossier ``code``, with its receipt number.

    ``agency_code`` is the agency whose receipt series ``receipt_number``
    belongs to (default: the desk that received the dossier); ``actor`` must
    hold the role ``receptionist`` there, and it must handle the dossier.
    The amount must be exactly what is due. Commits; paying the last fee of a
    dossier waiting for its fees resumes it.
    """
    if method not in METHODS:
        raise InvalidRequest(f"Hình thức nộp phải là một trong {', '.join(METHODS)}, không phải '{str(method)[:20]}'.")
    fee_code = _text(fee_code, "mã khoản phí, lệ phí")
    receipt_number = _text(receipt_number, "số biên lai")
    amount = _money(amount)
    record = _record(session, code)
    agency_code = agency_code or record.agency_code
    agency = session.scalar(select(Agency).where(Agency.code == agency_code))
    if agency is None and session.scalar(select(Agency.id).limit(1)) is not None:
        raise NotFound(f"Không có cơ quan mã {agency_code}.")
    if agency is not None:  # without an organisation loaded there is nothing to check against
        if not organisation.holds_role(session, actor, "receptionist", agency.id):
            raise Forbidden(f"{actor} không giữ vai trò receptionist (Bộ phận Một cửa) tại {agency.name}.")
        if agency.id not in _dossier_agencies(session, record):
            raise Forbidden(f"{agency.name} không tham gia giải quyết hồ sơ {record.code}.")
    return _pay(session, record, fee_code, amount, receipt_number, method, agency_code, None, now, actor, now)


@unit_of_work
def accept_callback(session: Session, payload: Any, now: datetime) -> PaymentResult:
    """A payment gateway reports that a fee was paid online (its signature already checked).

    ``payload``: ``transaction_id``, ``dossier_code``, ``fee_code``,
    ``amount`` (integer đồng), optionally ``receipt_number`` (default: the
    transaction id) and ``paid_at`` (ISO 8601 with offset; default: now).
    The same transaction reported again answers with the recorded payment
    (``replayed``) and changes nothing; a transaction id reused for another
    payment is a :class:`Conflict`. Unknown dossiers and fees are
    :class:`NotFound`, a wrong amount :class:`InvalidRequest`.
    """
    if not isinstance(payload, Mapping):
        raise InvalidRequest("Nội dung thông báo thanh toán phải là một đối tượng JSON.")
    transaction_id = _text(payload.get("transaction_id"), "mã giao dịch (transaction_id)")
    code = _text(payload.get("dossier_code"), "mã hồ sơ (dossier_code)")
    fee_code = _text(payload.get("fee_code"), "mã khoản phí, lệ phí (fee_code)")
    amount = _money(payload.get("amount"))
    receipt_number = _text(payload.get("receipt_number") or transaction_id, "số biên lai (receipt_number)")
    paid_at = now
    if payload.get("paid_at") is not None:
        try:
            paid_at = datetime.fromisoformat(str(payload["paid_at"]))
        except ValueError:
            raise InvalidRequest(f"Thời điểm thanh toán (paid_at) '{str(payload['paid_at'])[:40]}' không đúng dạng ISO 8601.") from None
        if paid_at.tzinfo is None:
            raise InvalidRequest("Thời điểm thanh toán (paid_at) phải có múi giờ, ví dụ 2026-03-02T09:15:00+07:00.")
    seen = _replay(session, transaction_id, code, fee_code, amount)
    if seen is not None:
        return seen
    record = _record(session, code)
    try:
        return _pay(session, record, fee_code, amount, receipt_number, "online", record.agency_code, transaction_id, paid_at, GATEWAY_ACTOR, now)
    except Conflict:
        session.rollback()
        seen = _replay(session, transaction_id, code, fee_code, amount)  # the same callback raced in
        if seen is not None:
            return seen
        raise


def _replay(session: Session, transaction_id: str, code: str, fee_code: str, amount: int) -> PaymentResult | None:
    """The payment already recorded for ``transaction_id``, if it is this one; Conflict if it is another."""
    row = session.execute(
        select(FeePayment, DossierFee.code)
        .join(DossierFee, DossierFee.id == FeePayment.fee_id)
        .where(FeePayment.transaction_id == transaction_id)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        return None
    payment, paid_code = row
    record = dossiers.find_dossier(session, code)
    if record is None or record.id != payment.dossier_id or paid_code != fee_code or payment.amount != amount:
        raise Conflict(f"Mã giao dịch {transaction_id} đã được ghi nhận cho một khoản nộp khác.")
    return PaymentResult(
        record.code, paid_code, payment.amount, payment.method, payment.agency_code, payment.receipt_number,
        payment.transaction_id, payment.paid_at, _outstanding(session, record.id), replayed=True,
    )


# --------------------------------------------------------------------------- signatures


def sign(body: bytes, secret: str) -> str:
    """The signature header value of ``body``: ``sha256=`` and the hex HMAC-SHA256 under ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` (``sha256=<hex>`` or the bare hex) signs ``body`` under ``secret`` (constant-time)."""
    if not secret or not header:
        return False
    given = header.strip()
    if given[:7].lower() == "sha256=":
        given = given[7:]
    expected = sign(body, secret)[7:]
    return hmac.compare_digest(given.lower().encode("utf-8"), expected.encode("utf-8"))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FeeLine:
    """A fee of a dossier and, once paid, its payment."""

    code: str
    label: str
    amount: int
    state: str
    paid_at: datetime | None = None
    method: str | None = None
    agency_code: str | None = None
    receipt_number: str | None = None
    transaction_id: str | None = None
    recorded_by: str | None = None

    @property
    def state_label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)


@dataclass(frozen=True)
class FeeStatement:
    """What a dossier owes and what was paid."""

    dossier_code: str
    fees: tuple[FeeLine, ...]
    #: The dossier waits (clock stopped) until its fees are paid.
    waiting: bool

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.fees)

    @property
    def paid(self) -> int:
        return sum(line.amount for line in self.fees if line.state == PAID)

    @property
    def outstanding(self) -> int:
        return sum(line.amount for line in self.fees if line.state == DUE)


def _lines(session: Session, dossier_id: int) -> tuple[FeeLine, ...]:
    rows = session.execute(
        select(DossierFee, FeePayment)
        .outerjoin(FeePayment, FeePayment.fee_id == DossierFee.id)
        .where(DossierFee.dossier_id == dossier_id)
        .order_by(DossierFee.id)
        .execution_options(populate_existing=True)
    ).all()
    return tuple(
        FeeLine(
            fee.code, fee.label, fee.amount, fee.state,
            *((pay.paid_at, pay.method, pay.agency_code, pay.receipt_number, pay.transaction_id, pay.recorded_by) if pay else ()),
        )
        for fee, pay in rows
    )


def statement(session: Session, code: str) -> FeeStatement:
    """The fees of dossier ``code``, in declaration order, with their payments."""
    record = _record(session, code)
    waiting = record.status == services.DossierStatus.FINANCIAL_OBLIGATION and record.sub_status == WAITING_FOR_FEES
    return FeeStatement(record.code, _lines(session, record.id), waiting)


def form_fee_lines(session: Session, dossier_id: int) -> tuple[str, ...]:
    """The fee lines form 01 prints, e.g. ``Lệ phí …: 100.000 đồng (đã nộp, biên lai số 0001234 ngày 02/03/2026)``."""
    out = []
    for line in _lines(session, dossier_id):
        if line.state == FREE:
            note = "miễn"
        elif line.state == PAID and line.paid_at is not None:
            note = f"đã nộp, biên lai số {line.receipt_number} ngày {line.paid_at.astimezone(VN_TZ):%d/%m/%Y}"
        else:
            note = "chưa nộp"
        out.append(f"{line.label}: {format_amount(line.amount)} ({note})")
    return tuple(out)
