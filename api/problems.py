"""Errors as RFC 9457 problem details (``application/problem+json``), in one place."""

from __future__ import annotations

from typing import Any

from flask import Response, json

from engine.errors import DeploymentRejected, EngineError

__all__ = ["ENGINE_STATUS", "problem", "from_engine_error"]

#: HTTP status for each kind of engine error.
ENGINE_STATUS = {
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "invalid": 400,
    "rejected": 422,
    "unauthenticated": 401,
    "too_many_attempts": 429,
    "error": 400,
}
TITLES = {
    400: "Yêu cầu không hợp lệ (bad request)",
    401: "Cần đăng nhập (authentication required)",
    403: "Không có quyền (forbidden)",
    404: "Không tìm thấy (not found)",
    405: "Phương thức không được hỗ trợ (method not allowed)",
    409: "Xung đột trạng thái (conflict)",
    413: "Dữ liệu gửi lên quá lớn (payload too large)",
    415: "Định dạng không được hỗ trợ (unsupported media type)",
    422: "Dữ liệu không hợp lệ (unprocessable content)",
    429: "Thử lại sau (too many requests)",
    500: "Lỗi hệ thống (internal error)",
}


def problem(status: int, detail: str, kind: str | None = None, **extra: Any) -> Response:
    """A problem-details response."""
    body = {
        "type": f"https://motcua.vn/problems/{kind or status}",
        "title": TITLES.get(status, "Lỗi (error)"),
        "status": status,
        "detail": detail,
        **{k: v for k, v in extra.items() if v is not None},
    }
    response = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if "retry_after" in extra:
        response.headers["Retry-After"] = str(extra["retry_after"])
    return response


def from_engine_error(err: EngineError) -> Response:
    status = ENGINE_STATUS.get(err.status, 400)
    extra: dict[str, Any] = dict(err.details)
    if isinstance(err, DeploymentRejected):
        extra["problems"] = [p.as_dict() for p in err.problems]
    return problem(status, err.message, err.status, **extra)
