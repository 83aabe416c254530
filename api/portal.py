"""The national public service portal (Cổng Dịch vụ công quốc gia).

* ``POST /portal/dossiers`` — the portal files a dossier (JSON format of
  ``docs/portal.md``); ``201`` new, ``200`` the same ``MaHoSo`` again.
* ``GET  /portal/dossiers/<MaHoSo>`` — what has been pushed back to the portal
  for that dossier: counts of pushed, pending and failed changes, the last one
  pushed, the last error.
* ``POST /portal/dossiers/<MaHoSo>/retry`` — queue its failed changes again.

The portal authenticates with ``Authorization: Bearer <MOTCUA_PORTAL_TOKEN>``
(compared in constant time). The two reading/repair routes also accept a
signed-in officer's token.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Response, current_app, jsonify, request
from flask_smorest import Blueprint

from engine import auth, portal

from .app import db_session
from .problems import problem
from .security import bearer_token, now

PREFIX = "/portal"
bp = Blueprint("portal", __name__, description="Cổng Dịch vụ công quốc gia (national public service portal)")
SECURED = [{"bearer": []}]


def _portal_token() -> str:
    return str(getattr(current_app.config["MOTCUA"], "portal_token", "") or "")


def _is_portal(token: str | None) -> bool:
    expected = _portal_token()
    return bool(expected) and token is not None and hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))


def _refused() -> Response | None:
    """A problem response unless the request carries the portal's token."""
    if not _portal_token():
        return problem(403, "Chưa cấu hình kết nối với Cổng Dịch vụ công quốc gia (MOTCUA_PORTAL_TOKEN): không nhận hồ sơ.", "portal-disabled")
    if not _is_portal(bearer_token()):
        return problem(401, "Thiếu hoặc sai mã xác thực của Cổng Dịch vụ công quốc gia (Authorization: Bearer …).", "portal-token")
    return None


def _portal_or_officer() -> Response | None:
    token = bearer_token()
    if _is_portal(token):
        return None
    if token is None:
        return problem(401, "Cần mã xác thực của Cổng Dịch vụ công quốc gia hoặc của cán bộ (Authorization: Bearer …).", "portal-token")
    auth.authenticate(db_session(), token, now())  # raises Unauthenticated (401)
    return None


@bp.route("/dossiers", methods=["POST"])
@bp.doc(
    security=SECURED,
    summary="Tiếp nhận hồ sơ từ Cổng DVC quốc gia",
    requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
    responses={
        "201": {"description": "Đã tiếp nhận, hồ sơ mới"},
        "200": {"description": "MaHoSo đã được tiếp nhận trước đó: cùng hồ sơ"},
        "400": {"description": "Sai định dạng"},
        "401": {"description": "Sai mã xác thực"},
        "403": {"description": "Chưa cấu hình MOTCUA_PORTAL_TOKEN"},
        "409": {"description": "MaHoSo đã gửi với nội dung khác"},
        "422": {"description": "Thủ tục hoặc cơ quan không có trong tỉnh"},
    },
)
def receive() -> Any:
    """The portal files a dossier; idempotent on MaHoSo."""
    refused = _refused()
    if refused is not None:
        return refused
    payload = request.get_json(silent=True)
    if payload is None:
        return problem(400, "Nội dung gửi lên phải là JSON (Content-Type: application/json) theo định dạng hồ sơ của Cổng DVC quốc gia.",
                       "portal-payload")
    try:
        result = portal.receive(db_session(), payload, now())
    except portal.PortalPayloadError as err:
        return problem(422 if err.unprocessable else 400, err.message, "portal-payload", errors=err.errors)
    return jsonify(result.as_portal()), 201 if result.created else 200


@bp.route("/dossiers/<string:ma_ho_so>", methods=["GET"])
@bp.doc(security=SECURED, summary="Tình trạng đồng bộ một hồ sơ với Cổng DVC quốc gia")
def state(ma_ho_so: str) -> Any:
    """Pushed / pending / failed changes of a dossier, the last pushed, the last error."""
    refused = _portal_or_officer()
    if refused is not None:
        return refused
    return jsonify(portal.push_state(db_session(), ma_ho_so).as_dict())


@bp.route("/dossiers/<string:ma_ho_so>/retry", methods=["POST"])
@bp.doc(security=SECURED, summary="Gửi lại các thay đổi đã thất bại")
def retry(ma_ho_so: str) -> Any:
    """Queue the dossier's failed changes again, in order."""
    refused = _portal_or_officer()
    if refused is not None:
        return refused
    token = bearer_token()
    actor = portal.PORTAL_ACTOR if _is_portal(token) else auth.authenticate(db_session(), token or "", now()).username
    count = portal.retry_failed(db_session(), ma_ho_so, actor, now())
    return jsonify({"ma_ho_so": ma_ho_so, "requeued": count})
