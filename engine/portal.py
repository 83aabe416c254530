"""The national public service portal (Cổng Dịch vụ công quốc gia): intake and status feed.

The portal is the only online entry point: citizens file there, the portal
hands the dossier to the province (:func:`receive`), and the province reports
every change of it back (:func:`feed` + the outbox's ``portal`` channel).
The JSON format, with the portal's Vietnamese field names, is described in
``docs/portal.md``.

Intake
    :func:`receive` validates a filing, reserves its ``MaHoSo`` (so a retried
    filing finds it), starts the dossier through
    :func:`engine.services.start_dossier` with channel ``online`` and records
    the mapping ``MaHoSo`` ↔ local dossier code. The same ``MaHoSo`` again
    answers with the same dossier (``created`` is False).

Feed
    :func:`feed` reads the audit trail after a stored cursor, in id order, and
    turns each relevant change of a portal dossier (every dossier with
    ``push_all``) into one outbox message on the ``portal`` channel, **in the
    transaction that moves the cursor**: a change is queued once, whether the
    feeder is killed before or after its commit. On PostgreSQL an audit id
    may become visible after a higher one (transactions commit out of order);
    the feeder does not step over such a hole until every transaction that
    was running when it saw the hole has ended (``pg_current_snapshot``), so
    nothing is skipped and nothing is queued out of order. The outbox then
    delivers the messages in order per dossier (``ORDERED_CHANNELS``).

Dates travel in the portal's format ``yyyyMMddHHmmss``, Hà Nội time
(:func:`format_time`, :func:`parse_time`).

Example::

    result = portal.receive(session, payload, now=now)      # 201 / 200
    portal.feed(sessions, now)                               # queue changes
    notify.deliver_due(sessions, {"portal": PortalChannel(url)}, now)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import notify, services
from .core.calendar import VN_TZ
from .errors import Conflict, EngineError, InvalidRequest, NotFound
from .persistence.models import (
    Agency,
    AuditEvent,
    Dossier,
    Officer,
    OfficerRole,
    OutboxMessage,
    PortalDossier,
    PortalFeedCursor,
    Procedure,
    Task,
)

__all__ = [
    "CHANNEL",
    "DATA_KEY",
    "FeedReport",
    "IntakeResult",
    "PORTAL_ACTOR",
    "PUSHED_ACTIONS",
    "PortalPayloadError",
    "TIME_FORMAT",
    "feed",
    "format_time",
    "parse_time",
    "push_state",
    "receive",
    "retry_failed",
]

log = logging.getLogger(__name__)

#: Who the audit trail names for what the portal does.
PORTAL_ACTOR = "cong-dvc-quoc-gia"
PORTAL_NAME = "Cổng Dịch vụ công quốc gia"
#: Outbox channel of the status feed.
CHANNEL = "portal"
#: Field of the dossier data holding the portal's MaHoSo (the dossier itself says it came from the portal).
DATA_KEY = "ma_ho_so_dvcqg"
#: Other fields of the dossier data the intake fills.
RESERVED_KEYS = (DATA_KEY, "chu_ho_so", "tai_lieu_nop", "phi_le_phi", "ngay_nop_dvcqg", "ngay_hen_tra_dvcqg")
#: The portal's date-time format (Hà Nội time, no zone in the text).
TIME_FORMAT = "%Y%m%d%H%M%S"
#: A reservation older than this with no dossier is taken over by a retried filing.
STALE_RESERVATION = timedelta(minutes=2)
#: A hole in the audit ids is stepped over after this long even if PostgreSQL cannot tell (safety net).
GAP_TIMEOUT = timedelta(minutes=10)
#: KenhNop: only online filings come through the portal.
ONLINE = 2

_DIGITS = re.compile(r"[0-9]{14}", re.ASCII)
_CODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.\-_/]{0,63}", re.ASCII)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)


# --------------------------------------------------------------------------- dates


def format_time(value: datetime) -> str:
    """``value`` as the portal writes it: ``yyyyMMddHHmmss`` in Hà Nội time.

    >>> format_time(datetime(2026, 3, 1, 17, 0, tzinfo=timezone.utc))
    '20260302000000'
    """
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("format_time needs a timezone-aware datetime")
    return value.astimezone(VN_TZ).strftime(TIME_FORMAT)


def parse_time(value: Any, field_name: str = "thời điểm") -> datetime:
    """A portal date-time (``yyyyMMddHHmmss``, Hà Nội time) as an aware datetime.

    Raises :class:`PortalPayloadError` (in Vietnamese) for anything else:
    wrong length, non-ASCII digits, impossible dates such as 30/02 or 24:00.
    """
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise PortalPayloadError(
            f"{field_name} phải có dạng yyyyMMddHHmmss (14 chữ số, giờ Việt Nam), nhận được {_show(value)}.",
            errors=[{"field": field_name, "message": "Sai định dạng yyyyMMddHHmmss."}],
        )
    try:
        naive = datetime.strptime(value, TIME_FORMAT)
    except ValueError:
        raise PortalPayloadError(
            f"{field_name} không phải là một thời điểm có thật: {value}.",
            errors=[{"field": field_name, "message": "Ngày giờ không tồn tại."}],
        ) from None
    return naive.replace(tzinfo=VN_TZ)


def _show(value: Any) -> str:
    return repr(value)[:40]


# --------------------------------------------------------------------------- intake


class PortalPayloadError(InvalidRequest):
    """A filing the intake cannot take. ``unprocessable`` (HTTP 422): well formed, but
    naming a procedure or agency this province does not have; otherwise HTTP 400."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None, unprocessable: bool = False) -> None:
        super().__init__(message, errors=errors or [])
        self.errors = errors or []
        self.unprocessable = unprocessable


@dataclass(frozen=True)
class Filing:
    """A validated filing from the portal."""

    ma_ho_so: str
    procedure_code: str
    agency_code: str
    applicant: dict[str, str | None]
    data: dict[str, Any]
    submitted_at: datetime | None
    appointment_at: datetime | None


@dataclass(frozen=True)
class IntakeResult:
    """The local dossier of a filing; ``created`` is False for a repeated MaHoSo."""

    created: bool
    ma_ho_so: str
    dossier_code: str
    status: int
    received_at: datetime
    due_at: datetime | None

    def as_portal(self) -> dict[str, Any]:
        """The answer in the portal's terms."""
        return {
            "MaHoSo": self.ma_ho_so,
            "MaHoSoDiaPhuong": self.dossier_code,
            "TrangThaiHoSo": self.status,
            "NgayTiepNhan": format_time(self.received_at),
            "NgayHenTra": format_time(self.due_at) if self.due_at else None,
            "DaTonTai": not self.created,
        }


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field_name: str, message: str) -> None:
        self.items.append({"field": field_name, "message": message})


def _text(obj: Mapping[str, Any], key: str, errors: _Errors, path: str, *, required: bool = False, limit: int = 500) -> str | None:
    value = obj.get(key)
    name = f"{path}{key}"
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.add(name, "Bắt buộc, không được để trống.")
        return None
    if not isinstance(value, str):
        errors.add(name, "Phải là chuỗi ký tự.")
        return None
    value = value.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        errors.add(name, "Không được chứa ký tự điều khiển.")
        return None
    if len(value) > limit:
        errors.add(name, f"Dài quá {limit} ký tự.")
        return None
    return value


def _code(obj: Mapping[str, Any], key: str, errors: _Errors, path: str = "") -> str | None:
    value = _text(obj, key, errors, path, required=True, limit=64)
    if value is not None and not _CODE.fullmatch(value):
        errors.add(f"{path}{key}", "Chỉ gồm chữ không dấu, chữ số và . - _ / (tối đa 64 ký tự).")
        return None
    return value


def _time(obj: Mapping[str, Any], key: str, errors: _Errors, path: str = "") -> datetime | None:
    if obj.get(key) in (None, ""):
        return None
    try:
        return parse_time(obj.get(key), f"{path}{key}")
    except PortalPayloadError as err:
        errors.items.extend(err.errors)
        return None


def _list_of_objects(payload: Mapping[str, Any], key: str, errors: _Errors) -> list[Mapping[str, Any]]:
    value = payload.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        errors.add(key, "Phải là một danh sách các đối tượng.")
        return []
    if len(value) > 200:
        errors.add(key, "Tối đa 200 mục.")
        return []
    return value


def parse_filing(payload: Any) -> Filing:
    """Check a filing's shape and formats (not yet the codes it names); raise :class:`PortalPayloadError`."""
    if not isinstance(payload, Mapping):
        raise PortalPayloadError("Nội dung gửi lên phải là một đối tượng JSON theo định dạng hồ sơ của Cổng DVC quốc gia.")
    errors = _Errors()
    ma_ho_so = _code(payload, "MaHoSo", errors)
    procedure_code = _code(payload, "MaTTHC", errors)
    unit = payload.get("DonViXuLy")
    agency_code = None
    if not isinstance(unit, Mapping):
        errors.add("DonViXuLy", "Bắt buộc: đối tượng có MaCoQuan (mã cơ quan tiếp nhận).")
    else:
        agency_code = _code(unit, "MaCoQuan", errors, "DonViXuLy.")
    submitted_at = _time(payload, "NgayTiepNhan", errors)
    appointment_at = _time(payload, "NgayHenTra", errors)
    status = payload.get("TrangThaiHoSo")
    if status is not None and (isinstance(status, bool) or status not in (1, 2, "1", "2")):
        errors.add("TrangThaiHoSo", "Hồ sơ gửi sang để tiếp nhận phải ở trạng thái 1 (mới đăng ký) hoặc 2 (được tiếp nhận).")
    channel = payload.get("KenhNop", ONLINE)
    if isinstance(channel, bool) or channel not in (ONLINE, str(ONLINE)):
        errors.add("KenhNop", "Hồ sơ từ Cổng DVC quốc gia là hồ sơ trực tuyến: KenhNop = 2.")

    owner = payload.get("ChuHoSo")
    applicant: dict[str, str | None] = {}
    owner_data: dict[str, Any] = {}
    if not isinstance(owner, Mapping):
        errors.add("ChuHoSo", "Bắt buộc: thông tin chủ hồ sơ (HoTen, SoDienThoai, Email, SoCCCD…).")
    else:
        name = _text(owner, "HoTen", errors, "ChuHoSo.", required=True, limit=200)
        phone = _text(owner, "SoDienThoai", errors, "ChuHoSo.", limit=30)
        if phone is not None and not re.fullmatch(r"\+?[0-9 .\-]{8,20}", phone, re.ASCII):
            errors.add("ChuHoSo.SoDienThoai", "Số điện thoại không hợp lệ.")
            phone = None
        mail = _text(owner, "Email", errors, "ChuHoSo.", limit=200)
        if mail is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", mail):
            errors.add("ChuHoSo.Email", "Địa chỉ thư điện tử không hợp lệ.")
            mail = None
        cccd = _text(owner, "SoCCCD", errors, "ChuHoSo.", limit=12)
        if cccd is not None and not re.fullmatch(r"[0-9]{12}", cccd, re.ASCII):
            errors.add("ChuHoSo.SoCCCD", "Số căn cước công dân gồm đúng 12 chữ số.")
            cccd = None
        address = _text(owner, "DiaChi", errors, "ChuHoSo.", limit=500)
        applicant = {"name": name, "phone": phone, "email": mail}
        owner_data = {k: v for k, v in {"ho_ten": name, "so_dien_thoai": phone, "email": mail, "so_cccd": cccd, "dia_chi": address}.items() if v}

    documents = []
    for index, item in enumerate(_list_of_objects(payload, "TaiLieuNop", errors)):
        path = f"TaiLieuNop[{index}]."
        title = _text(item, "TenTaiLieu", errors, path, required=True, limit=500)
        link = _text(item, "DuongDan", errors, path, limit=2000)
        checksum = _text(item, "Checksum", errors, path, limit=64)
        if link is not None and not link.startswith(("https://", "http://")):
            errors.add(f"{path}DuongDan", "Đường dẫn phải bắt đầu bằng https:// hoặc http://.")
        if checksum is not None and not _SHA256.fullmatch(checksum):
            errors.add(f"{path}Checksum", "Checksum là mã SHA-256 (64 chữ số hệ 16).")
        if link is None and checksum is None:
            errors.add(path.rstrip("."), "Cần DuongDan hoặc Checksum của tài liệu.")
        documents.append({k: v for k, v in {"ten": title, "duong_dan": link, "checksum": checksum and checksum.lower()}.items() if v})

    fees = []
    for index, item in enumerate(_list_of_objects(payload, "PhiLePhi", errors)):
        path = f"PhiLePhi[{index}]."
        fee_code = _text(item, "MaPhiLePhi", errors, path, required=True, limit=64)
        amount = item.get("SoTien")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= 10**13:
            errors.add(f"{path}SoTien", "Số tiền (đồng) là số nguyên không âm.")
        paid = item.get("TrangThaiThanhToan", 0)
        if isinstance(paid, bool) or paid not in (0, 1):
            errors.add(f"{path}TrangThaiThanhToan", "0 (chưa thanh toán) hoặc 1 (đã thanh toán).")
        fees.append({"ma": fee_code, "so_tien": amount, "da_thanh_toan": paid == 1})

    form = payload.get("DuLieuBieuMau", {})
    if form is None:
        form = {}
    if not isinstance(form, Mapping):
        errors.add("DuLieuBieuMau", "Phải là một đối tượng: mã trường → giá trị.")
        form = {}
    for key in form:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,99}", key, re.ASCII):
            errors.add(f"DuLieuBieuMau.{str(key)[:40]}", "Mã trường chỉ gồm chữ không dấu, chữ số và dấu gạch dưới, bắt đầu bằng chữ.")
        elif key in RESERVED_KEYS:
            errors.add(f"DuLieuBieuMau.{key}", "Mã trường này dành cho hệ thống.")

    if errors.items:
        listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors.items[:10])
        raise PortalPayloadError(f"Hồ sơ từ Cổng DVC quốc gia không hợp lệ — {listed}", errors=errors.items)
    assert ma_ho_so and procedure_code and agency_code
    data: dict[str, Any] = dict(form)
    data[DATA_KEY] = ma_ho_so
    data["chu_ho_so"] = owner_data
    if documents:
        data["tai_lieu_nop"] = documents
    if fees:
        data["phi_le_phi"] = fees
    if submitted_at:
        data["ngay_nop_dvcqg"] = submitted_at.isoformat()
    if appointment_at:
        data["ngay_hen_tra_dvcqg"] = appointment_at.isoformat()
    return Filing(ma_ho_so, procedure_code, agency_code, applicant, data, submitted_at, appointment_at)


def _digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def _check_codes(session: Session, filing: Filing) -> None:
    errors = []
    if session.scalar(select(Procedure.id).where(Procedure.code == filing.procedure_code, Procedure.latest_version > 0)) is None:
        errors.append({"field": "MaTTHC", "message": f"Tỉnh chưa triển khai thủ tục hành chính mã {filing.procedure_code}."})
    agency = session.execute(select(Agency.id, Agency.active).where(Agency.code == filing.agency_code)).first()
    if agency is None:
        errors.append({"field": "DonViXuLy.MaCoQuan", "message": f"Không có cơ quan mã {filing.agency_code} trong tỉnh."})
    elif not agency.active:
        errors.append({"field": "DonViXuLy.MaCoQuan", "message": f"Cơ quan mã {filing.agency_code} đã ngừng hoạt động."})
    if errors:
        raise PortalPayloadError(
            "Không tiếp nhận được hồ sơ — " + "; ".join(e["message"] for e in errors), errors=errors, unprocessable=True
        )


def _result(session: Session, row: PortalDossier, created: bool) -> IntakeResult:
    dossier = session.execute(
        select(Dossier.code, Dossier.status, Dossier.received_at, Dossier.due_at).where(Dossier.id == row.dossier_id)
    ).one()
    return IntakeResult(created, row.ma_ho_so, dossier.code, dossier.status, dossier.received_at, dossier.due_at)


def _started_dossier(session: Session, ma_ho_so: str, since: datetime) -> Any:
    """A dossier a crashed earlier filing of ``ma_ho_so`` started (its data names the MaHoSo)."""
    return session.execute(
        select(Dossier.id, Dossier.code)
        .where(Dossier.channel == "online", Dossier.received_at >= since, Dossier.data[DATA_KEY].as_string() == ma_ho_so)
        .order_by(Dossier.id)
        .limit(1)
    ).first()


def _link(session: Session, row: PortalDossier, dossier_id: int, code: str, now: datetime) -> None:
    row.dossier_id, row.dossier_code, row.state, row.received_at = dossier_id, code, "received", now
    session.commit()


def receive(session: Session, payload: Any, now: datetime) -> IntakeResult:
    """Receive a filing from the portal: the local dossier of its ``MaHoSo``, started if new.

    Raises :class:`PortalPayloadError` for a bad filing, :class:`Conflict`
    when the ``MaHoSo`` was filed with other content (or is being received
    right now), and what :func:`engine.services.start_dossier` raises.
    """
    try:
        filing = parse_filing(payload)
        digest = _digest(payload)
        for _ in range(2):
            row = session.scalar(
                select(PortalDossier).where(PortalDossier.ma_ho_so == filing.ma_ho_so).execution_options(populate_existing=True)
            )
            if row is not None and row.state == "received":
                if row.request_hash != digest:
                    raise Conflict(
                        f"Hồ sơ {filing.ma_ho_so} đã được tiếp nhận (mã {row.dossier_code}) với nội dung khác.",
                        dossier_code=row.dossier_code,
                    )
                result = _result(session, row, created=False)
                session.commit()
                return result
            if row is not None:  # reserved by a filing still running, or one that died
                started = _started_dossier(session, filing.ma_ho_so, row.created_at)
                if started is not None:
                    _link(session, row, started.id, started.code, now)
                    return _result(session, row, created=False)
                if now - row.created_at < STALE_RESERVATION:
                    raise Conflict(f"Hồ sơ {filing.ma_ho_so} đang được tiếp nhận; vui lòng gửi lại sau ít phút.", retry_after=30)
                row.request_hash, row.payload, row.created_at = digest, dict(payload), now
                session.commit()
                break
            _check_codes(session, filing)
            row = PortalDossier(
                ma_ho_so=filing.ma_ho_so, procedure_code=filing.procedure_code, agency_code=filing.agency_code,
                state="receiving", request_hash=digest, payload=dict(payload), created_at=now, received_at=None,
            )
            session.add(row)
            try:
                session.commit()
                break
            except IntegrityError:  # the same MaHoSo raced in: answer as for a repeat
                session.rollback()
        else:
            raise Conflict(f"Hồ sơ {filing.ma_ho_so} đang được tiếp nhận; vui lòng gửi lại sau ít phút.", retry_after=30)
        _check_codes(session, filing)
        try:
            record = services.start_dossier(
                session, filing.procedure_code, filing.data, actor=PORTAL_ACTOR, now=now,
                agency_code=filing.agency_code, home_agency_code=filing.agency_code,
                applicant=filing.applicant, channel="online",
            )
        except EngineError:
            session.execute(
                PortalDossier.__table__.delete().where(PortalDossier.id == row.id, PortalDossier.state == "receiving")
            )
            session.commit()
            raise
        row = session.get(PortalDossier, row.id, populate_existing=True)
        _link(session, row, record.id, record.code, now)
        return IntakeResult(True, filing.ma_ho_so, record.code, record.status, record.received_at, record.due_at)
    except BaseException:
        session.rollback()
        raise


# --------------------------------------------------------------------------- feed

#: Audit actions pushed to the portal, with what the portal shows for them.
PUSHED_ACTIONS = (
    "dossier.receive",
    "dossier.status",
    "dossier.pause",
    "dossier.resume",
    "dossier.refuse",
    "dossier.recall",
    "dossier.reset",
    "task.ready",
    "task.claim",
    "task.complete",
    "task.return",
    "task.transfer",
    "task.reassign",
)

_JUDGEMENT = {"early": "trước hạn", "on_time": "đúng hạn", "late": "trễ hạn"}


@dataclass
class FeedReport:
    """What one feeder pass did."""

    #: Audit events read and passed (the cursor moved over them).
    read: int = 0
    #: Outbox messages queued for the portal.
    queued: int = 0
    #: Holes in the audit ids stepped over (rolled-back transactions).
    gaps_skipped: int = 0
    #: The pass stopped at a hole that may still be filled by a running transaction.
    waiting: bool = False
    #: The cursor after the pass.
    cursor: int = 0


def _status_event(action: str, to_state: str | None) -> int | None:
    if action.startswith("dossier.") and to_state and to_state.isdigit() and 1 <= int(to_state) <= 10:
        return int(to_state)
    return None


def _content(event: AuditEvent, step: str | None) -> str:
    details = event.details or {}
    action = event.action
    label = services.DossierStatus.LABELS
    if action == "dossier.receive":
        return "Tiếp nhận hồ sơ trực tuyến từ Cổng Dịch vụ công quốc gia" if event.actor == PORTAL_ACTOR else "Tiếp nhận hồ sơ"
    if action == "dossier.status":
        text_ = f"Chuyển trạng thái: {label.get(int(event.to_state), event.to_state) if (event.to_state or '').isdigit() else event.to_state}"
        return text_ + (f". Lý do: {details['reason']}" if details.get("reason") else "")
    if action == "dossier.pause":
        items = "; ".join(str(i) for i in details.get("items") or [])
        what = "Yêu cầu bổ sung hồ sơ" if details.get("reason") == "supplement" else "Yêu cầu thực hiện nghĩa vụ tài chính"
        return what + (f": {items}" if items else "")
    if action == "dossier.resume":
        done = "bổ sung hồ sơ" if details.get("reason") == "supplement" else "thực hiện nghĩa vụ tài chính"
        return f"Tiếp tục xử lý sau khi công dân đã {done}"
    if action == "dossier.refuse":
        return "Không tiếp nhận hồ sơ: " + "; ".join(str(r) for r in details.get("reasons") or [])
    if action in ("dossier.recall", "dossier.reset"):
        what = "Thu hồi hồ sơ" if action == "dossier.recall" else "Đưa hồ sơ về bước trước"
        return what + (f". Lý do: {details['reason']}" if details.get("reason") else "")
    name = f"«{step or event.subject}»"
    if action == "task.ready":
        return f"Chuyển đến bước {name}"
    if action == "task.claim":
        return f"Nhận xử lý bước {name}"
    if action == "task.complete":
        judged = _JUDGEMENT.get(details.get("result") or "")
        return f"Hoàn thành bước {name}" + (f" ({judged})" if judged else "")
    if action == "task.return":
        return f"Trả lại bước trước từ bước {name}" + (f". Lý do: {details['reason']}" if details.get("reason") else "")
    if action in ("task.transfer", "task.reassign"):
        return f"Chuyển người xử lý bước {name}"
    return action


class _Context:
    """Lookups one feeder pass needs, each done once for the whole batch."""

    def __init__(self, session: Session, events: list[AuditEvent], push_all: bool) -> None:
        self.session = session
        dossier_ids = sorted({e.dossier_id for e in events if e.dossier_id is not None and e.action in PUSHED_ACTIONS})
        self.ma_ho_so: dict[int, str] = {}
        self.codes: dict[int, str] = {}
        self.dossier_agency: dict[int, int | None] = {}
        self.current_status: dict[int, int] = {}
        self.due_at: dict[int, datetime | None] = {}
        self.status: dict[int, int] = {}
        self.tasks: dict[int, Any] = {}
        if not dossier_ids:
            return
        for row in session.execute(
            select(PortalDossier.dossier_id, PortalDossier.ma_ho_so).where(PortalDossier.dossier_id.in_(dossier_ids))
        ):
            self.ma_ho_so[row.dossier_id] = row.ma_ho_so
        for row in session.execute(
            select(Dossier.id, Dossier.code, Dossier.status, Dossier.receiving_agency_id, Dossier.due_at, Dossier.channel,
                   Dossier.data[DATA_KEY].as_string().label("marker"))
            .where(Dossier.id.in_(dossier_ids))
        ):
            self.codes[row.id] = row.code
            self.dossier_agency[row.id] = row.receiving_agency_id
            self.current_status[row.id] = row.status
            self.due_at[row.id] = row.due_at
            if row.id not in self.ma_ho_so and row.marker and row.channel == "online":
                self.ma_ho_so[row.id] = row.marker  # filed through the portal; mapping not linked yet
            if push_all and row.id not in self.ma_ho_so:
                self.ma_ho_so[row.id] = row.code
        task_ids = sorted({e.task_id for e in events if e.task_id is not None})
        self.tasks = {
            row.id: row
            for row in session.execute(select(Task.id, Task.step_name, Task.agency_id).where(Task.id.in_(task_ids)))
        } if task_ids else {}
        actors = sorted({e.actor for e in events})
        self.names = dict(session.execute(select(Officer.username, Officer.full_name).where(Officer.username.in_(actors))).all())
        self.actor_agency: dict[str, int] = {}
        for username, agency_id in session.execute(
            select(Officer.username, OfficerRole.agency_id)
            .join(OfficerRole, OfficerRole.officer_id == Officer.id)
            .where(Officer.username.in_(actors))
            .order_by(OfficerRole.id)
        ):
            self.actor_agency.setdefault(username, agency_id)
        agency_ids = {t.agency_id for t in self.tasks.values()} | set(self.actor_agency.values()) | set(self.dossier_agency.values())
        agency_ids.discard(None)
        self.agency_names = dict(
            session.execute(select(Agency.id, Agency.name).where(Agency.id.in_(sorted(agency_ids)))).all()
        ) if agency_ids else {}

    def status_before(self, dossier_id: int, event_id: int) -> int:
        """The dossier's portal status just before ``event_id`` (from the audit trail)."""
        if dossier_id not in self.status:
            rows = self.session.execute(
                select(AuditEvent.action, AuditEvent.to_state)
                .where(AuditEvent.dossier_id == dossier_id, AuditEvent.id < event_id, AuditEvent.action.like("dossier.%"))
                .order_by(AuditEvent.id.desc())
                .limit(50)
            ).all()
            found = next((s for s in (_status_event(a, t) for a, t in rows) if s is not None), None)
            self.status[dossier_id] = found or self.current_status.get(dossier_id, services.DossierStatus.RECEIVED)
        return self.status[dossier_id]

    def message(self, event: AuditEvent) -> dict[str, Any] | None:
        """The portal document for ``event``, or None when it is not pushed."""
        if event.action not in PUSHED_ACTIONS or event.dossier_id is None:
            return None
        ma_ho_so = self.ma_ho_so.get(event.dossier_id)
        if ma_ho_so is None:
            return None
        changed = _status_event(event.action, event.to_state)
        status = changed if changed is not None else self.status_before(event.dossier_id, event.id)
        self.status[event.dossier_id] = status
        task = self.tasks.get(event.task_id) if event.task_id is not None else None
        agency_id = (task.agency_id if task is not None else None) or self.actor_agency.get(event.actor) \
            or self.dossier_agency.get(event.dossier_id)
        if event.actor == PORTAL_ACTOR:
            person = PORTAL_NAME
        else:
            person = self.names.get(event.actor) or event.actor
        document: dict[str, Any] = {
            "MaHoSo": ma_ho_so,
            "MaHoSoDiaPhuong": self.codes.get(event.dossier_id),
            "MaSuKien": event.id,
            "NguoiXuLy": person,
            "PhongBanXuLy": self.agency_names.get(agency_id) if agency_id else None,
            "ThoiDiemXuLy": format_time(event.at),
            "NoiDungXuLy": _content(event, task.step_name if task is not None else None),
            "TrangThai": status,
        }
        if task is not None:
            document["BuocXuLy"] = task.step_name
        if event.action == "dossier.receive" and self.due_at.get(event.dossier_id):
            document["NgayHenTra"] = format_time(self.due_at[event.dossier_id])  # type: ignore[arg-type]
        return document


def _pg_snapshot(session: Session, which: str) -> int:
    return int(session.execute(text(f"SELECT pg_snapshot_{which}(pg_current_snapshot())::text::bigint")).scalar_one())


def feed(
    session_factory: Callable[[], Session],
    now: datetime,
    *,
    push_all: bool = False,
    batch: int = 500,
    name: str = CHANNEL,
) -> FeedReport:
    """One pass of the portal feeder: queue the changes recorded since the cursor.

    Events are read in id order; each relevant one becomes one ``portal``
    outbox message, written in the transaction that moves the cursor past it.
    Two feeders at once: one wins the cursor, the other's pass changes
    nothing (its transaction is rolled back).
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    report = FeedReport()
    with session_factory() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        query = select(PortalFeedCursor).where(PortalFeedCursor.name == name).execution_options(populate_existing=True)
        if postgres:
            query = query.with_for_update()
        cursor = session.scalar(query)
        if cursor is None:
            session.add(PortalFeedCursor(name=name, last_event_id=0, updated_at=now))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return report
            cursor = session.scalar(query)
            assert cursor is not None
        start = cursor.last_event_id
        report.cursor = start
        events = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > start).order_by(AuditEvent.id).limit(batch)
            )
        )
        accepted: list[AuditEvent] = []
        position = start
        waiting_below, waiting_horizon, waiting_since = cursor.waiting_below, cursor.waiting_horizon, cursor.waiting_since
        horizon_passed: bool | None = None
        for event in events:
            if event.id != position + 1 and postgres:
                # A hole: an id taken by a transaction that has not committed (or never will).
                if waiting_below is not None and event.id <= waiting_below:
                    if horizon_passed is None:
                        horizon_passed = _pg_snapshot(session, "xmin") >= (waiting_horizon or 0) or (
                            waiting_since is not None and now - waiting_since >= GAP_TIMEOUT
                        )
                    if not horizon_passed:
                        report.waiting = True
                        break
                    report.gaps_skipped += 1
                    log.info("portal feed: audit ids %s–%s were rolled back; stepping over", position + 1, event.id - 1)
                else:
                    waiting_below = events[-1].id
                    waiting_horizon = _pg_snapshot(session, "xmax")
                    waiting_since = now
                    report.waiting = True
                    break
            elif event.id != position + 1:
                report.gaps_skipped += 1  # SQLite commits in id order: a hole is a rollback
            accepted.append(event)
            position = event.id
        if waiting_below is not None and position >= waiting_below:
            waiting_below = waiting_horizon = waiting_since = None
        changed_wait = (waiting_below, waiting_horizon) != (cursor.waiting_below, cursor.waiting_horizon)
        if position == start and not changed_wait:
            session.rollback()
            return report
        moved = session.execute(
            update(PortalFeedCursor)
            .where(PortalFeedCursor.name == name, PortalFeedCursor.last_event_id == start)
            .values(last_event_id=position, waiting_below=waiting_below, waiting_horizon=waiting_horizon,
                    waiting_since=waiting_since, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # another feeder moved it first
            session.rollback()
            return FeedReport()
        context = _Context(session, accepted, push_all)
        for event in accepted:
            document = context.message(event)
            if document is None:
                continue
            notify.enqueue(
                session,
                channel=CHANNEL,
                recipient=document["MaHoSo"],
                subject=f"{document['MaHoSo']} · sự kiện {event.id} · trạng thái {document['TrangThai']}",
                body=json.dumps(document, ensure_ascii=False),
                event=f"portal:{event.action}",
                now=now,
                dossier_id=event.dossier_id,
            )
            report.queued += 1
        session.commit()
        report.read = len(accepted)
        report.cursor = position
    return report


# --------------------------------------------------------------------------- state


def _find(session: Session, ma_ho_so: str) -> tuple[int, str, str]:
    """(dossier id, MaHoSo, local code) of a portal dossier, or of a local code (pushed with push_all)."""
    if not isinstance(ma_ho_so, str) or not ma_ho_so or len(ma_ho_so) > 64:
        raise NotFound(f"Không có hồ sơ mã {_show(ma_ho_so)}.")
    row = session.execute(
        select(PortalDossier.dossier_id, PortalDossier.dossier_code).where(PortalDossier.ma_ho_so == ma_ho_so)
    ).first()
    if row is not None and row.dossier_id is not None:
        return row.dossier_id, ma_ho_so, row.dossier_code
    local = session.execute(select(Dossier.id, Dossier.code).where(Dossier.code == ma_ho_so)).first()
    if local is None:
        raise NotFound(f"Không có hồ sơ mã {ma_ho_so} từ Cổng Dịch vụ công quốc gia.")
    return local.id, ma_ho_so, local.code


@dataclass
class PushState:
    """Where the portal stands on one dossier."""

    ma_ho_so: str
    dossier_code: str
    status: int
    status_label: str
    pushed: int = 0
    pending: int = 0
    failed: int = 0
    last_pushed: dict[str, Any] | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ma_ho_so": self.ma_ho_so,
            "dossier_code": self.dossier_code,
            "status": self.status,
            "status_label": self.status_label,
            "pushed": self.pushed,
            "pending": self.pending,
            "failed": self.failed,
            "last_pushed": self.last_pushed,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


def push_state(session: Session, ma_ho_so: str) -> PushState:
    """Counts of the dossier's portal messages by outcome, the last one pushed and the last error."""
    dossier_id, key, code = _find(session, ma_ho_so)
    status = session.scalar(select(Dossier.status).where(Dossier.id == dossier_id))
    o = OutboxMessage
    mine = (o.channel == CHANNEL, o.dossier_id == dossier_id)
    counts = dict(session.execute(select(o.state, func.count()).where(*mine).group_by(o.state)).all())
    state = PushState(
        key, code, int(status or 0), services.DossierStatus.LABELS.get(int(status or 0), str(status)),
        pushed=counts.get("sent", 0), pending=counts.get("pending", 0) + counts.get("sending", 0),
        failed=counts.get("failed", 0), counts=counts,
    )
    last = session.execute(
        select(o.body, o.sent_at).where(*mine, o.state == "sent").order_by(o.id.desc()).limit(1)
    ).first()
    if last is not None:
        document = json.loads(last.body)
        state.last_pushed = {
            "MaSuKien": document.get("MaSuKien"),
            "NoiDungXuLy": document.get("NoiDungXuLy"),
            "ThoiDiemXuLy": document.get("ThoiDiemXuLy"),
            "TrangThai": document.get("TrangThai"),
            "sent_at": last.sent_at.isoformat() if last.sent_at else None,
        }
    head = session.execute(
        select(o.last_error, o.next_attempt_at, o.state)
        .where(*mine, o.state != "sent", o.last_error.is_not(None))
        .order_by(o.id)
        .limit(1)
    ).first()
    if head is not None:
        state.last_error = head.last_error
        state.next_attempt_at = head.next_attempt_at if head.state == "pending" else None
    return state


def retry_failed(session: Session, ma_ho_so: str, actor: str, now: datetime) -> int:
    """Queue the dossier's failed portal messages again (in their order); how many."""
    try:
        dossier_id, key, _code = _find(session, ma_ho_so)
        o = OutboxMessage
        result = session.execute(
            update(o)
            .where(o.channel == CHANNEL, o.dossier_id == dossier_id, o.state == "failed")
            .values(state="pending", attempts=0, next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            session.add(AuditEvent(at=now, actor=actor, action="portal.retry", dossier_id=dossier_id, subject=key,
                                   details={"messages": count}))
        session.commit()
        return count
    except BaseException:
        session.rollback()
        raise
