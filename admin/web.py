"""What every page shares: the signed-in officer, role checks, paging, formats, error pages."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from engine import auth
from engine.core.calendar import VN_TZ
from engine.errors import Conflict, EngineError, Forbidden, InvalidRequest, NotFound
from engine.organisation import ROLE_LABELS
from engine.persistence.models import Agency
from engine.services import DossierStatus

from . import bp

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

PER_PAGE = 20
CHANNEL_LABELS = {"in_person": "Trực tiếp", "online": "Trực tuyến", "post": "Bưu chính công ích"}
RETURN_CHANNEL_LABELS = {"desk": "Tại Bộ phận Một cửa", "post": "Bưu chính công ích", "online": "Trực tuyến"}
TASK_STATE_LABELS = {"ready": "Chờ nhận", "claimed": "Đang xử lý", "completed": "Đã xử lý", "cancelled": "Đã hủy"}
RESULT_LABELS = {"early": "Trước hạn", "on_time": "Đúng hạn", "late": "Trễ hạn"}
URGENCY_LABELS = {"overdue": "Quá hạn", "soon": "Sắp đến hạn", "normal": "Trong hạn"}
LEVEL_LABELS = {"commune": "Cấp xã", "district": "Cấp huyện", "province": "Cấp tỉnh", "ministry": "Cấp bộ",
                "xã": "Cấp xã", "huyện": "Cấp huyện", "tỉnh": "Cấp tỉnh", "bộ": "Cấp bộ"}
ERROR_TITLES = {
    400: "Yêu cầu không hợp lệ",
    403: "Không có quyền truy cập",
    404: "Không tìm thấy trang",
    405: "Thao tác không được hỗ trợ",
    409: "Xung đột trạng thái",
    413: "Dữ liệu gửi lên quá lớn",
    429: "Vui lòng thử lại sau",
    500: "Lỗi hệ thống",
}
ERROR_TEXTS = {
    400: "Yêu cầu gửi lên không hợp lệ hoặc phiên làm việc đã hết hạn (mã chống giả mạo CSRF không đúng). Vui lòng tải lại trang và thử lại.",
    403: "Tài khoản của ông/bà không có quyền xem hoặc thực hiện thao tác này.",
    404: "Trang hoặc hồ sơ ông/bà tìm không tồn tại.",
    405: "Thao tác này không được hỗ trợ tại địa chỉ này.",
    409: "Dữ liệu vừa thay đổi; vui lòng tải lại trang.",
    413: "Tệp hoặc dữ liệu gửi lên vượt quá giới hạn cho phép (8 MB).",
    429: "Ông/bà đã thử quá nhiều lần; vui lòng chờ một lúc rồi thử lại.",
    500: "Đã có lỗi xảy ra; vui lòng thử lại sau.",
}


def db() -> Session:
    from api.app import db_session

    return db_session()


def now() -> datetime:
    """The request's clock (shared with the API layer)."""
    if "now" not in g:
        g.now = datetime.now(VN_TZ)
    return g.now


def wants_page() -> bool:
    """True when the request is for a page (not the JSON API or the health check)."""
    path = request.path
    return not (path.startswith("/api/") or path == "/healthz")


# --------------------------------------------------------------------------- identity


class WebUser:
    """The signed-in officer with names for the header."""

    def __init__(self, identity: auth.Identity, agencies: dict[int, tuple[str, str]]) -> None:
        self.identity = identity
        self.username = identity.username
        self.full_name = identity.full_name
        self.agencies = agencies  # id → (code, name)

    def has(self, *roles: str) -> bool:
        return bool(self.identity.agencies(*roles))

    def agencies_with(self, *roles: str) -> list[tuple[int, str, str]]:
        return sorted(((a, *self.agencies[a]) for a in self.identity.agencies(*roles) if a in self.agencies), key=lambda x: x[2])

    @property
    def role_lines(self) -> list[str]:
        return [f"{ROLE_LABELS.get(role, role)} — {self.agencies.get(a, ('', '?'))[1]}" for a, role in self.identity.grants]


@bp.before_request
def load_user() -> None:
    g.user = None
    token = session.get("token")
    if not token:
        return
    try:
        identity = auth.authenticate(db(), token, now())
    except auth.Unauthenticated:
        session.clear()
        flash("Phiên đăng nhập đã hết hạn; vui lòng đăng nhập lại.", "warning")
        return
    ids = {a for a, _ in identity.grants}
    names = {}
    if ids:
        names = {row.id: (row.code, row.name) for row in db().execute(select(Agency.id, Agency.code, Agency.name).where(Agency.id.in_(ids)))}
    g.user = WebUser(identity, names)


@bp.before_request
def refuse_nul() -> None:
    if "\x00" in request.path or any("\x00" in v for v in request.values.values()):
        abort(400)


#: The pages run no script at all; styles are the stylesheet plus the inline ones of diagrams and forms.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@bp.after_request
def page_headers(response: Any) -> Any:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    if g.get("user") is not None or request.path.startswith("/tra-cuu"):
        response.headers["Cache-Control"] = "no-store"  # personal data: not kept by shared browsers or proxies
    return response


def current_user() -> WebUser:
    return g.user


def login_required(*roles: str) -> Callable[[F], F]:
    """Let the view run for a signed-in officer (holding one of ``roles`` when given); 403 otherwise."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = g.get("user")
            if user is None:
                flash("Vui lòng đăng nhập để tiếp tục.", "info")
                return redirect(url_for("admin.login", next=request.full_path if request.method == "GET" else None))
            if roles and not user.has(*roles):
                abort(403)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def safe_next(target: str | None) -> str | None:
    """A local path to go back to, never another site."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def page_arg(name: str = "trang") -> int:
    try:
        value = int(request.args.get(name, "1"))
    except ValueError:
        return 1
    return value if 0 < value < 1_000_000 else 1


# --------------------------------------------------------------------------- messages


def say(err: EngineError, what: str) -> str:
    """A Vietnamese message for an engine error while doing ``what`` (e.g. 'nhận bước')."""
    missing = err.details.get("missing") if isinstance(err.details, dict) else None
    if missing:
        return f"Không thể {what}: chưa điền các trường bắt buộc: {', '.join(missing)}."
    if isinstance(err, Forbidden):
        return f"Không thể {what}: tài khoản không giữ vai trò cần thiết tại cơ quan xử lý."
    if isinstance(err, NotFound):
        return f"Không thể {what}: không tìm thấy đối tượng cần xử lý."
    if isinstance(err, Conflict):
        text = err.message
        if any(ord(c) > 127 for c in text):  # already Vietnamese: the precise reason
            return f"Không thể {what}: {text}"
        if "first step" in text:
            return f"Không thể {what}: đây là bước đầu tiên, không có bước trước để trả lại."
        if "paused" in text:
            return f"Không thể {what}: hồ sơ đang tạm dừng (chờ bổ sung hoặc thực hiện nghĩa vụ tài chính)."
        if "new appointment" in text:
            return f"Không thể {what}: hồ sơ đã được hẹn lại một lần; mỗi hồ sơ chỉ được hẹn lại một lần."
        if "not ready" in text:
            return f"Không thể {what}: hồ sơ chưa giải quyết xong."
        if "already returned" in text:
            return f"Không thể {what}: hồ sơ đã trả kết quả."
        if "financial obligation" in text:
            return f"Không thể {what}: thủ tục không quy định nghĩa vụ tài chính."
        if "claimed" in text or "already" in text:
            return f"Không thể {what}: bước này đã được người khác nhận hoặc đã xử lý xong."
        return f"Không thể {what}: trạng thái hồ sơ không cho phép thao tác này."
    if isinstance(err, InvalidRequest):
        text = err.message
        if "later than" in text:
            return f"Không thể {what}: ngày hẹn mới phải sau ngày hẹn hiện tại."
        if "reason" in text.lower():
            return f"Không thể {what}: cần ghi rõ lý do."
        if any(ord(c) > 127 for c in text):  # already Vietnamese
            return f"Không thể {what}: {text}"
        return f"Không thể {what}: dữ liệu không hợp lệ."
    return f"Không thể {what}."


# --------------------------------------------------------------------------- formats


@bp.app_template_filter("ngay_gio")
def format_instant(value: datetime | None) -> str:
    return value.astimezone(VN_TZ).strftime("%H:%M %d/%m/%Y") if value else "—"


KIND_LABELS = {"ubnd": "UBND", "vpdk": "Văn phòng đăng ký đất đai", "thue": "cơ quan Thuế", "cong_an": "Công an",
               "bhxh": "Bảo hiểm xã hội", "so_xay_dung": "Sở Xây dựng", "so_tu_phap": "Sở Tư pháp"}
_PLACES = {"": "Nơi quản lý hồ sơ", "home": "Nơi quản lý hồ sơ", "dossier.commune": "Nơi quản lý hồ sơ",
           "parent": "Cơ quan cấp trên trực tiếp", "parent.parent": "Cơ quan cấp trên hai cấp",
           "dossier.district": "Cấp huyện của nơi quản lý hồ sơ", "dossier.province": "Cấp tỉnh của nơi quản lý hồ sơ"}


@bp.app_template_filter("noi_xu_ly")
def format_place(expression: str | None) -> str:
    """A lane's ``agency`` expression in words."""
    text = (expression or "").strip()
    if text in _PLACES:
        return _PLACES[text]
    kind, _, rest = text.partition(":")
    if kind == "named":
        return f"{KIND_LABELS.get(rest.lower(), rest)} phụ trách nơi quản lý hồ sơ"
    if kind == "code":
        return f"Cơ quan mã {rest}"
    return text


@bp.app_template_filter("ngay")
def format_day(value: datetime | None) -> str:
    return value.astimezone(VN_TZ).strftime("%d/%m/%Y") if value else "—"


@bp.app_context_processor
def signed_in() -> dict[str, Any]:
    return {"user": g.get("user")}


def labels() -> dict[str, Any]:
    """Label tables every template (and macro) may use."""
    return {
        "STATUS_LABELS": DossierStatus.LABELS,
        "ROLE_LABELS": ROLE_LABELS,
        "CHANNEL_LABELS": CHANNEL_LABELS,
        "RETURN_CHANNEL_LABELS": RETURN_CHANNEL_LABELS,
        "TASK_STATE_LABELS": TASK_STATE_LABELS,
        "RESULT_LABELS": RESULT_LABELS,
        "URGENCY_LABELS": URGENCY_LABELS,
        "LEVEL_LABELS": LEVEL_LABELS,
    }


def page_url(page: int, name: str = "trang") -> str:
    """The current URL with the page argument ``name`` set to ``page`` (other query arguments kept)."""
    args = request.args.to_dict()
    args[name] = str(page)
    return url_for(request.endpoint or "admin.index", **(request.view_args or {}), **args)


bp.add_app_template_global(page_url, "page_url")


# --------------------------------------------------------------------------- error pages


def error_page(status: int, detail: str | None = None) -> Any:
    """The Vietnamese page for an HTTP error ``status``."""
    if status not in ERROR_TITLES:
        status = 500 if status >= 500 else 400
    body = render_template("admin/error.html", status=status, title=ERROR_TITLES[status], detail=detail or ERROR_TEXTS[status])
    return body, status


def page_error(err: BaseException) -> Any:
    """A page for any error raised while serving a page (the API keeps its JSON problems)."""
    if isinstance(err, HTTPException):
        return error_page(err.code or 500)
    if isinstance(err, auth.TooManyAttempts):
        return error_page(429)
    if isinstance(err, auth.Unauthenticated):
        return redirect(url_for("admin.login"))
    if isinstance(err, NotFound):
        return error_page(404)
    if isinstance(err, Forbidden):
        return error_page(403)
    if isinstance(err, EngineError):
        return error_page(409 if isinstance(err, Conflict) else 400, say(err, "thực hiện thao tác"))
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=err)
    return error_page(500)


def install_globals(app: Flask) -> None:
    """Label tables as template globals (the app's error handlers call :func:`page_error` for pages)."""
    app.jinja_env.globals.update(labels())


# --------------------------------------------------------------------------- forms in Vietnamese

_WTFORMS_VI = {
    "Not a valid choice.": "Lựa chọn không hợp lệ.",
    "Not a valid choice": "Lựa chọn không hợp lệ.",
    "This field is required.": "Trường này là bắt buộc.",
    "Invalid input.": "Giá trị không hợp lệ.",
    "Invalid value.": "Giá trị không hợp lệ.",
    "Not a valid integer value.": "Giá trị không phải là số nguyên.",
    "Not a valid date value.": "Ngày không hợp lệ.",
    "Field cannot be longer than %(max)d character.": "Tối đa %(max)d ký tự.",
    "Field cannot be longer than %(max)d characters.": "Tối đa %(max)d ký tự.",
    "Field must be at least %(min)d character long.": "Tối thiểu %(min)d ký tự.",
    "Field must be at least %(min)d characters long.": "Tối thiểu %(min)d ký tự.",
    "Field must be between %(min)d and %(max)d characters long.": "Độ dài từ %(min)d đến %(max)d ký tự.",
    "Choices cannot be None.": "Chưa có lựa chọn nào.",
}


class VietnameseMessages:
    """WTForms' built-in messages in Vietnamese (WTForms ships no Vietnamese catalogue)."""

    def gettext(self, string: str) -> str:
        return _WTFORMS_VI.get(string, string)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.gettext(singular if n == 1 else plural)


class PageForm(FlaskForm):
    """Base of the pages' forms: CSRF from Flask-WTF, messages in Vietnamese."""

    class Meta:
        def get_translations(self, form: Any) -> VietnameseMessages:
            return VietnameseMessages()
