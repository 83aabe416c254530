"""Public lookup, ratings and feedback (no login).

* ``GET  /public/dossiers/<code>?secret=XXXX`` — tra cứu hồ sơ.
* ``POST /public/dossiers/<code>/rating`` — đánh giá mức độ hài lòng (Decision 766/QĐ-TTg).
* ``POST /public/feedback`` — phản ánh, kiến nghị.

The secret is the last 4 digits of the phone number the applicant gave at
receipt (see :mod:`engine.public`). An unknown code and a wrong secret give the
same 404 body. Every such failure is counted per client address
(``request.remote_addr``) in a sliding window kept in this process: after
``PUBLIC_LOOKUP_LIMIT`` failures (default 10) within ``PUBLIC_LOOKUP_WINDOW``
seconds (default 600) every request that carries a secret is answered 429 with
``Retry-After`` until the oldest failure leaves the window. Each worker process
counts separately (with N workers a client gets up to N × the limit), and
behind a reverse proxy ``remote_addr`` must be the client's address (e.g.
werkzeug's ``ProxyFix``), or all clients share one count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from engine import public
from engine.public import CRITERIA, SCALE, SECRET_DIGITS, FailureLimiter

from .app import db_session
from .schemas import ProblemSchema
from .security import now

PREFIX = "/public"
bp = Blueprint("public", __name__, description="Tra cứu, đánh giá, phản ánh (public)")

T = TypeVar("T")

#: Defaults of the failed-lookup limit (override with app.config keys of the same name).
PUBLIC_LOOKUP_LIMIT = 10
PUBLIC_LOOKUP_WINDOW = 600.0
_LIMITER_KEY = "motcua.public_limiter"
_limiter_lock = threading.Lock()


# --------------------------------------------------------------------------- schemas

_REQUIRED = "Trường này là bắt buộc."
_NULL = "Trường này không được để trống."


class _Text(fields.String):
    """A string, trimmed, without control characters (PostgreSQL refuses NUL)."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "required": _REQUIRED,
        "null": _NULL,
        "invalid": "Phải là một chuỗi ký tự.",
        "invalid_utf8": "Chuỗi ký tự không hợp lệ.",
        "control": "Không được chứa ký tự điều khiển.",
    }

    def __init__(self, *, multiline: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiline = multiline

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        allowed = "\n\r\t" if self.multiline else ""
        if any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in text):
            raise self.make_error("control")
        return text.strip()


def _length(low: int, high: int) -> validate.Length:
    return validate.Length(min=low, max=high, error=f"Độ dài phải từ {low} đến {high} ký tự.")


_SECRET = validate.Regexp(
    rf"^[0-9]{{{SECRET_DIGITS}}}$", error=f"Mã bí mật là {SECRET_DIGITS} chữ số cuối của số điện thoại đã đăng ký."
)
_SECRET_DOC = f"{SECRET_DIGITS} chữ số cuối của số điện thoại người nộp hồ sơ (the last {SECRET_DIGITS} digits of the applicant's phone)"


class _Nested(fields.Nested):
    default_error_messages: ClassVar[dict[str, str]] = {"required": _REQUIRED, "null": _NULL, "type": "Phải là một đối tượng JSON."}


class _In(Schema):
    """Request bodies: unknown fields are refused, messages are in Vietnamese."""

    error_messages: ClassVar[dict[str, str]] = {"unknown": "Trường không được chấp nhận.", "type": "Dữ liệu gửi lên phải là một đối tượng JSON."}


class _Score(fields.Field):
    """A score 1–5, or its name on the Vietnamese scale."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "required": _REQUIRED,
        "null": _NULL,
        "invalid": "Điểm phải là số nguyên từ 1 đến 5 hoặc một mức: " + ", ".join(f"“{n}”" for n in SCALE.values()) + ".",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        try:
            return public.parse_score(value)
        except ValueError as err:
            raise self.make_error("invalid") from err


def _score(key: str) -> _Score:
    return _Score(required=True, metadata={
        "description": f"{CRITERIA[key]}. 1–5 or the name of the level.",
        "oneOf": [{"type": "integer", "minimum": 1, "maximum": 5}, {"type": "string", "enum": list(SCALE.values())}],
    })


class ScoresIn(_In):
    """The criteria of Decision 766/QĐ-TTg, each 1 (Rất không hài lòng) … 5 (Rất hài lòng); all are required."""

    tiep_can = _score("tiep_can")
    thu_tuc = _score("thu_tuc")
    thoi_gian = _score("thoi_gian")
    chi_phi = _score("chi_phi")
    cong_chuc = _score("cong_chuc")
    ket_qua = _score("ket_qua")


assert set(ScoresIn._declared_fields) == set(CRITERIA), "ScoresIn must list exactly engine.public.CRITERIA"


class LookupArgs(Schema):
    secret = _Text(required=True, validate=_SECRET, metadata={"description": _SECRET_DOC})


class RatingIn(_In):
    secret = _Text(required=True, validate=_SECRET, metadata={"description": _SECRET_DOC})
    scores = _Nested(ScoresIn, required=True)
    comment = _Text(load_default=None, allow_none=True, multiline=True, validate=_length(0, 2000),
                    metadata={"description": "Góp ý thêm (optional)"})


class FeedbackIn(_In):
    subject = _Text(required=True, validate=_length(1, 300), metadata={"description": "Tiêu đề phản ánh, kiến nghị"})
    content = _Text(required=True, multiline=True, validate=_length(1, 5000), metadata={"description": "Nội dung"})
    name = _Text(load_default=None, allow_none=True, validate=_length(0, 200), metadata={"description": "Họ tên (optional)"})
    contact = _Text(load_default=None, allow_none=True, validate=_length(0, 200),
                    metadata={"description": "Điện thoại hoặc thư điện tử để cơ quan trả lời (optional)"})
    dossier_code = _Text(load_default=None, allow_none=True, validate=_length(0, 64),
                         metadata={"description": "Mã hồ sơ, khi phản ánh về một hồ sơ (cần kèm secret)"})
    secret = _Text(load_default=None, allow_none=True, validate=_SECRET, metadata={"description": _SECRET_DOC})

    @validates_schema
    def _secret_goes_with_code(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("dossier_code") and not data.get("secret"):
            raise ValidationError("Cần mã bí mật khi phản ánh về một hồ sơ.", "secret")
        if data.get("secret") and not data.get("dossier_code"):
            raise ValidationError("Mã bí mật chỉ dùng kèm mã hồ sơ.", "secret")


class PublicStepOut(Schema):
    name = fields.String(required=True)
    state = fields.String(required=True, metadata={"enum": ["done", "current", "cancelled"]})
    state_label = fields.String(required=True, metadata={"description": "Đã xử lý / Đang xử lý / Đã hủy"})
    agency = fields.String(allow_none=True, metadata={"description": "Tên cơ quan xử lý bước này"})
    started_at = fields.AwareDateTime(required=True)
    completed_at = fields.AwareDateTime(allow_none=True)
    result = fields.String(allow_none=True, metadata={"enum": ["early", "on_time", "late", None]})
    result_label = fields.String(allow_none=True, metadata={"description": "Trước hạn / Đúng hạn / Trễ hạn"})


class ResultSignatureOut(Schema):
    """Whether the returned result's digital signature checks."""

    valid = fields.Boolean(required=True)
    label = fields.String(required=True)
    signer = fields.String(allow_none=True)
    signed_at = fields.AwareDateTime(allow_none=True)
    reasons = fields.List(fields.String(), required=True)
    verified_at = fields.AwareDateTime(allow_none=True)


class PublicDossierOut(Schema):
    """A dossier as the public sees it: progress only, no personal data."""

    code = fields.String(required=True)
    procedure_code = fields.String(required=True)
    procedure_name = fields.String(required=True)
    status = fields.Integer(required=True, metadata={"description": "TrangThaiHoSo 1–10"})
    status_label = fields.String(required=True)
    received_at = fields.AwareDateTime(required=True)
    due_at = fields.AwareDateTime(allow_none=True)
    new_appointment_at = fields.AwareDateTime(allow_none=True)
    finished_at = fields.AwareDateTime(allow_none=True)
    returned_at = fields.AwareDateTime(allow_none=True)
    steps = fields.List(fields.Nested(PublicStepOut), required=True)
    rated = fields.Boolean(required=True)
    can_rate = fields.Boolean(required=True)
    result_signature = fields.Nested(ResultSignatureOut, allow_none=True)


class RatingOut(Schema):
    code = fields.String(required=True)
    scores = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    satisfied = fields.Boolean(required=True, metadata={"description": "True when every criterion scores 3 (Bình thường) or more"})
    created_at = fields.AwareDateTime(required=True)
    message = fields.String(required=True)


class FeedbackOut(Schema):
    id = fields.Integer(required=True)
    dossier_code = fields.String(allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    message = fields.String(required=True)


# --------------------------------------------------------------------------- rate limit


def limiter() -> FailureLimiter:
    """This app's (and this process's) count of failed secrets per client address."""
    extensions = current_app.extensions
    found = extensions.get(_LIMITER_KEY)
    if found is None:
        with _limiter_lock:
            found = extensions.get(_LIMITER_KEY)
            if found is None:
                found = extensions[_LIMITER_KEY] = FailureLimiter(
                    int(current_app.config.get("PUBLIC_LOOKUP_LIMIT", PUBLIC_LOOKUP_LIMIT)),
                    float(current_app.config.get("PUBLIC_LOOKUP_WINDOW", PUBLIC_LOOKUP_WINDOW)),
                )
    return found


def guarded(run: Callable[[], T]) -> T:
    """Run a use case that checks a secret: refuse while the client is blocked, count failures.

    The attempt counts as a failure from the start and is forgiven unless the
    secret turns out wrong, so parallel requests cannot slip past the limit.
    """
    key = request.remote_addr or "unknown"
    counter = limiter()
    token = counter.begin(key)
    try:
        result = run()
    except public.LookupFailed:
        raise
    except BaseException:
        counter.forgive(key, token)
        raise
    counter.forgive(key, token)
    return result


@bp.after_request
def _no_store(response: Any) -> Any:
    response.headers["Cache-Control"] = "no-store"
    return response


_NOT_FOUND = "Không tìm thấy hồ sơ với mã và mã bí mật này (also for an unknown code)"
_TOO_MANY = "Quá nhiều lần nhập sai; thử lại sau số giây trong Retry-After"


# --------------------------------------------------------------------------- routes


@bp.route("/dossiers/<code>")
class Lookup(MethodView):
    @bp.arguments(LookupArgs, location="query")
    @bp.response(200, PublicDossierOut)
    @bp.alt_response(404, schema=ProblemSchema, description=_NOT_FOUND)
    @bp.alt_response(429, schema=ProblemSchema, description=_TOO_MANY)
    def get(self, args: dict[str, Any], code: str) -> dict[str, Any]:
        """Tra cứu hồ sơ: status, appointment and steps of a dossier, by its code and secret (no personal data)."""
        return guarded(lambda: public.lookup(db_session(), code, args["secret"]))


@bp.route("/dossiers/<code>/rating")
class RatingView(MethodView):
    @bp.arguments(RatingIn)
    @bp.response(201, RatingOut)
    @bp.alt_response(404, schema=ProblemSchema, description=_NOT_FOUND)
    @bp.alt_response(409, schema=ProblemSchema, description="Hồ sơ chưa trả kết quả, hoặc đã được đánh giá")
    @bp.alt_response(429, schema=ProblemSchema, description=_TOO_MANY)
    def post(self, body: dict[str, Any], code: str) -> tuple[dict[str, Any], int]:
        """Đánh giá mức độ hài lòng of a returned dossier (status 10), once.

        Criteria (Decision 766/QĐ-TTg): tiep_can, thu_tuc, thoi_gian, chi_phi,
        cong_chuc, ket_qua — each 1–5 or "Rất không hài lòng", "Không hài lòng",
        "Bình thường", "Hài lòng", "Rất hài lòng". ``satisfied`` is true when no
        criterion scores below 3 (Bình thường).
        """
        rating = guarded(lambda: public.rate(db_session(), code, body["secret"], body["scores"], body["comment"], now()))
        message = "Cảm ơn ông/bà đã đánh giá mức độ hài lòng về việc giải quyết hồ sơ."
        return {"code": code, "scores": rating.scores, "satisfied": rating.satisfied,
                "created_at": rating.created_at, "message": message}, 201


@bp.route("/feedback")
class FeedbackView(MethodView):
    @bp.arguments(FeedbackIn)
    @bp.response(201, FeedbackOut)
    @bp.alt_response(404, schema=ProblemSchema, description=_NOT_FOUND)
    @bp.alt_response(429, schema=ProblemSchema, description=_TOO_MANY)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Gửi phản ánh, kiến nghị; with dossier_code and secret it goes to the agency handling that dossier."""

        def run() -> Any:
            return public.send_feedback(
                db_session(), body["subject"], body["content"], now(), name=body["name"], contact=body["contact"],
                dossier_code=body["dossier_code"], secret=body["secret"],
            )

        feedback = guarded(run) if body["dossier_code"] else run()
        message = (f"Đã tiếp nhận phản ánh, kiến nghị của ông/bà (số {feedback.id}). "
                   "Cơ quan có thẩm quyền sẽ xem xét, xử lý và trả lời theo quy định.")
        return {"id": feedback.id, "dossier_code": body["dossier_code"], "created_at": feedback.created_at, "message": message}, 201
