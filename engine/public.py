"""What the public may do without signing in: look a dossier up, rate it, send feedback.

The applicant proves they hold a dossier with its code plus a *secret*: the last
:data:`SECRET_DIGITS` digits of the phone number given at receipt (digits only;
a dossier without a phone number cannot be looked up). The public view carries
no personal data: no applicant name, phone, e-mail, form fields or officers.

A wrong secret and an unknown code fail in the same way — the same
:class:`~engine.errors.NotFound` message, after the same single indexed query
and the same constant-time comparison — so an answer never tells whether a code
exists. Callers should count those failures with a :class:`FailureLimiter`.

Ratings follow the citizen-satisfaction criteria of Decision 766/QĐ-TTg
(23/6/2022) and the SIPAS index: see :data:`CRITERIA` and :func:`is_satisfied`.
"""

from __future__ import annotations

import hmac
import math
import re
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import results
from .auth import TooManyAttempts
from .errors import Conflict, InvalidRequest, NotFound
from .persistence.db import unit_of_work
from .persistence.models import (
    Agency,
    AuditEvent,
    Dossier,
    Feedback,
    Procedure,
    ProcedureVersion,
    Rating,
    Task,
    TaskState,
)
from .services import DossierStatus

__all__ = [
    "CRITERIA",
    "LOOKUP_FAILED",
    "SCALE",
    "SECRET_DIGITS",
    "FailureLimiter",
    "LookupFailed",
    "Verified",
    "is_satisfied",
    "lookup",
    "parse_score",
    "public_view",
    "rate",
    "secret_of",
    "send_feedback",
    "verify",
]

#: How many trailing digits of the applicant's phone number make the secret.
SECRET_DIGITS = 4

#: The one answer for an unknown code, a wrong secret or a dossier without a phone.
LOOKUP_FAILED = "Không tìm thấy hồ sơ với mã và mã bí mật này"

#: The criteria an applicant rates (key → what is rated), after the satisfaction
#: indicators of Decision 766/QĐ-TTg and the SIPAS index of the Ministry of Home Affairs.
CRITERIA: dict[str, str] = {
    "tiep_can": "Tiếp cận dịch vụ: dễ tìm thông tin, nộp hồ sơ thuận tiện, nơi tiếp nhận đầy đủ tiện nghi",
    "thu_tuc": "Thủ tục hành chính: được công khai, thành phần hồ sơ và yêu cầu đúng quy định",
    "thoi_gian": "Thời gian giải quyết: trả kết quả đúng hoặc trước ngày hẹn",
    "chi_phi": "Chi phí: chỉ nộp phí, lệ phí đúng quy định, không có chi phí ngoài quy định",
    "cong_chuc": "Công chức: thái độ lịch sự, hướng dẫn tận tình, không gây phiền hà, nhũng nhiễu",
    "ket_qua": "Kết quả giải quyết: đúng quy định, thông tin chính xác, đầy đủ",
}

#: The five-level scale: score → its Vietnamese name (either may be sent).
SCALE: dict[int, str] = {
    1: "Rất không hài lòng",
    2: "Không hài lòng",
    3: "Bình thường",
    4: "Hài lòng",
    5: "Rất hài lòng",
}

#: A rating is "satisfied" when no criterion scores below this ("Bình thường" or better).
SATISFIED_FROM = 3

_STEP_STATE = {TaskState.COMPLETED: "done", TaskState.READY: "current", TaskState.CLAIMED: "current", TaskState.CANCELLED: "cancelled"}
STEP_STATE_LABELS = {"done": "Đã xử lý", "current": "Đang xử lý", "cancelled": "Đã hủy"}
RESULT_LABELS = {"early": "Trước hạn", "on_time": "Đúng hạn", "late": "Trễ hạn"}
# Compared against when the code is unknown, so that both failures do the same work.
_NO_SECRET = "\x00" * SECRET_DIGITS


class LookupFailed(NotFound):
    """Unknown code, wrong secret or no phone on the dossier: always :data:`LOOKUP_FAILED`."""

    def __init__(self) -> None:
        super().__init__(LOOKUP_FAILED)


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


_SCALE_BY_NAME = {_normalise(name): score for score, name in SCALE.items()}


def parse_score(value: Any) -> int:
    """A score 1–5 from an integer or a name of :data:`SCALE` (any case); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value in SCALE:
        return value
    if isinstance(value, str):
        text = _normalise(value)
        if text in _SCALE_BY_NAME:
            return _SCALE_BY_NAME[text]
        if text.isdigit() and int(text) in SCALE:
            return int(text)
    raise ValueError("not a score")


def is_satisfied(scores: Mapping[str, int]) -> bool:
    """Satisfied when every criterion scores at least :data:`SATISFIED_FROM` (3, "Bình thường")."""
    return bool(scores) and all(score >= SATISFIED_FROM for score in scores.values())


def secret_of(phone: str | None) -> str | None:
    """The secret of a phone number: its last :data:`SECRET_DIGITS` digits (None without enough digits)."""
    digits = re.sub(r"\D", "", phone or "")
    return digits[-SECRET_DIGITS:] if len(digits) >= SECRET_DIGITS else None


@dataclass(frozen=True)
class Verified:
    """A dossier whose holder proved the secret."""

    id: int
    code: str


def verify(session: Session, code: str, secret: str) -> Verified:
    """The dossier ``code`` if ``secret`` matches; :class:`LookupFailed` (a 404) otherwise.

    Whether the code is unknown, the secret wrong or the dossier has no phone,
    the same query runs, one constant-time comparison is made, and the same
    error is raised.
    """
    wanted = code[:64] if isinstance(code, str) and code.isprintable() else ""  # no NUL into PostgreSQL
    row = session.execute(select(Dossier.id, Dossier.applicant_phone).where(Dossier.code == wanted)).first()
    expected = secret_of(row.applicant_phone) if row is not None else None
    given = secret if isinstance(secret, str) and secret.isascii() else ""
    matches = hmac.compare_digest((expected or _NO_SECRET).encode(), given.encode())
    if row is None or expected is None or not matches:
        raise LookupFailed()
    return Verified(row.id, code)


def public_view(session: Session, dossier_id: int) -> dict[str, Any]:
    """What anyone holding the code and secret may see of a dossier: no personal data."""
    dossier = session.get(Dossier, dossier_id, populate_existing=True)
    if dossier is None:
        raise LookupFailed()
    procedure = session.execute(
        select(Procedure.code, Procedure.name)
        .join(ProcedureVersion, ProcedureVersion.procedure_id == Procedure.id)
        .where(ProcedureVersion.id == dossier.procedure_version_id)
    ).one()
    rows = session.execute(
        select(Task.step_name, Task.state, Agency.name, Task.started_at, Task.completed_at, Task.result)
        .outerjoin(Agency, Agency.id == Task.agency_id)
        .where(Task.dossier_id == dossier.id)
        .order_by(Task.started_at, Task.id)
    ).all()
    steps = []
    for name, state, agency, started, completed, result in rows:
        shown = _STEP_STATE.get(state, "current")
        steps.append({
            "name": name,
            "state": shown,
            "state_label": STEP_STATE_LABELS[shown],
            "agency": agency,
            "started_at": started,
            "completed_at": completed if shown != "current" else None,
            "result": result if shown == "done" else None,
            "result_label": RESULT_LABELS.get(result or "") if shown == "done" else None,
        })
    rated = session.scalar(select(Rating.id).where(Rating.dossier_id == dossier.id)) is not None
    return {
        "code": dossier.code,
        "procedure_code": procedure.code,
        "procedure_name": procedure.name,
        "status": dossier.status,
        "status_label": DossierStatus.LABELS.get(dossier.status, str(dossier.status)),
        "received_at": dossier.received_at,
        "due_at": dossier.due_at,
        "new_appointment_at": dossier.new_appointment_at,
        "finished_at": dossier.finished_at,
        "returned_at": dossier.returned_at,
        "steps": steps,
        "rated": rated,
        "can_rate": dossier.status == DossierStatus.RETURNED and not rated,
        "result_signature": _result_signature(session, dossier) if dossier.status == DossierStatus.RETURNED else None,
    }


SIGNATURE_LABELS = {True: "Chữ ký số hợp lệ", False: "Chữ ký số không hợp lệ"}


def _result_signature(session: Session, dossier: Dossier) -> dict[str, Any] | None:
    """Whether the returned result document's digital signature checks (as verified on upload)."""
    document = results.latest_result(session, dossier.id)
    if document is None:
        return None
    return {
        "valid": document.signature_valid,
        "label": SIGNATURE_LABELS[bool(document.signature_valid)],
        "signer": document.signer,
        "signed_at": document.signed_at,
        "reasons": list(document.reasons or []),
        "verified_at": document.verified_at,
    }


def lookup(session: Session, code: str, secret: str) -> dict[str, Any]:
    """:func:`verify` then :func:`public_view`."""
    return public_view(session, verify(session, code, secret).id)


@unit_of_work
def rate(session: Session, code: str, secret: str, scores: Mapping[str, Any], comment: str | None, now: datetime) -> Rating:
    """Record the applicant's rating of a returned dossier, once.

    ``scores`` names every key of :data:`CRITERIA` with 1–5 or a name of
    :data:`SCALE`; ``satisfied`` follows :func:`is_satisfied`.
    """
    found = verify(session, code, secret)
    try:
        parsed = {key: parse_score(scores[key]) for key in CRITERIA}
    except (KeyError, ValueError) as err:
        raise InvalidRequest("Cần chấm điểm đủ các tiêu chí, mỗi tiêu chí từ 1 đến 5.") from err
    if set(scores) - set(CRITERIA):
        raise InvalidRequest("Có tiêu chí đánh giá không hợp lệ: " + ", ".join(sorted(set(scores) - set(CRITERIA))) + ".")
    status = session.scalar(select(Dossier.status).where(Dossier.id == found.id))
    if status != DossierStatus.RETURNED:
        raise Conflict("Hồ sơ chưa trả kết quả; chỉ đánh giá được sau khi ông/bà đã nhận kết quả.")
    if session.scalar(select(Rating.id).where(Rating.dossier_id == found.id)) is not None:
        raise Conflict("Hồ sơ này đã được đánh giá; mỗi hồ sơ chỉ đánh giá một lần.")
    rating = Rating(dossier_id=found.id, scores=parsed, satisfied=is_satisfied(parsed), comment=comment or None, created_at=now)
    session.add(rating)
    session.add(AuditEvent(at=now, actor="applicant", action="dossier.rating", dossier_id=found.id, subject=found.code,
                           to_state="satisfied" if rating.satisfied else "not_satisfied", details={"scores": parsed}))
    try:
        session.commit()
    except IntegrityError as err:  # a second rating raced in
        session.rollback()
        raise Conflict("Hồ sơ này đã được đánh giá; mỗi hồ sơ chỉ đánh giá một lần.") from err
    return rating


@unit_of_work
def send_feedback(
    session: Session,
    subject: str,
    content: str,
    now: datetime,
    name: str | None = None,
    contact: str | None = None,
    dossier_code: str | None = None,
    secret: str | None = None,
) -> Feedback:
    """Record a phản ánh, kiến nghị; with ``dossier_code`` (and its secret) it is linked
    to the dossier and to the agency the dossier belongs to."""
    dossier_id = agency_id = None
    if dossier_code:
        found = verify(session, dossier_code, secret or "")
        dossier_id = found.id
        home, receiving = session.execute(
            select(Dossier.home_agency_id, Dossier.receiving_agency_id).where(Dossier.id == found.id)
        ).one()
        agency_id = home or receiving
    feedback = Feedback(dossier_id=dossier_id, agency_id=agency_id, name=name or None, contact=contact or None,
                        subject=subject, content=content, state="new", created_at=now)
    session.add(feedback)
    session.flush()
    if dossier_id is not None:
        session.add(AuditEvent(at=now, actor="applicant", action="dossier.feedback", dossier_id=dossier_id,
                               subject=dossier_code, to_state="new", details={"feedback_id": feedback.id}))
    session.commit()
    return feedback


class FailureLimiter:
    """Failed attempts per key (a client address) in a sliding window, in this process.

    After ``limit`` failures within ``window`` seconds, :meth:`check` raises
    :class:`~engine.auth.TooManyAttempts` (HTTP 429) with the seconds until the
    oldest failure leaves the window. Each worker process keeps its own count,
    so with N processes a client gets up to N × ``limit`` tries per window.
    At most ``max_keys`` addresses are remembered (the stalest are forgotten).
    """

    def __init__(self, limit: int = 10, window: float = 600.0, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be ≥ 1 and window > 0")
        self.limit, self.window, self.max_keys, self.clock = limit, float(window), max_keys, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, at: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= at - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again (0: now)."""
        with self._lock:
            at = self.clock()
            failures = self._recent(key, at)
            if failures is None or len(failures) < self.limit:
                return 0
            return max(1, math.ceil(failures[-self.limit] + self.window - at))

    def _refuse(self, wait: int) -> TooManyAttempts:
        return TooManyAttempts(
            f"Ông/bà đã nhập sai mã hồ sơ hoặc mã bí mật quá nhiều lần; vui lòng thử lại sau {wait} giây.", wait
        )

    def check(self, key: str) -> None:
        """Raise :class:`TooManyAttempts` while ``key`` has used up its failures."""
        wait = self.retry_after(key)
        if wait:
            raise self._refuse(wait)

    def begin(self, key: str) -> float:
        """Start an attempt: refuse like :meth:`check`, else count it as a failure at once
        (so that concurrent attempts cannot all pass the check) and return its token for
        :meth:`forgive` should it succeed."""
        with self._lock:
            at = self.clock()
            failures = self._recent(key, at)
            if failures is not None and len(failures) >= self.limit:
                raise self._refuse(max(1, math.ceil(failures[-self.limit] + self.window - at)))
            self._add(key, failures, at)
            return at

    def forgive(self, key: str, token: float) -> None:
        """Take back the failure :meth:`begin` counted: the attempt succeeded."""
        with self._lock:
            failures = self._failures.get(key)
            if failures is not None:
                try:
                    failures.remove(token)
                except ValueError:
                    pass
                if not failures:
                    del self._failures[key]

    def fail(self, key: str) -> None:
        """Count one failure of ``key``."""
        with self._lock:
            at = self.clock()
            self._add(key, self._recent(key, at), at)

    def _add(self, key: str, failures: deque[float] | None, at: float) -> None:
        if failures is None:
            failures = self._failures[key] = deque(maxlen=self.limit)
        failures.append(at)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
