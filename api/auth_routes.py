"""Sign in and out."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from engine import auth
from engine.organisation import agency_tree

from . import schemas
from .app import db_session
from .security import bearer_token, current, login_required, now

PREFIX = "/auth"
bp = Blueprint("auth", __name__, description="Đăng nhập, đăng xuất (sign in and out)")


def _me(identity: auth.Identity) -> dict[str, Any]:
    tree = agency_tree(db_session())
    return {
        "username": identity.username,
        "full_name": identity.full_name,
        "roles": [{"agency": tree.nodes[a].code if a in tree.nodes else None, "role": r} for a, r in identity.grants],
    }


@bp.route("/login")
class Login(MethodView):
    @bp.arguments(schemas.LoginIn)
    @bp.response(200, schemas.TokenOut)
    @bp.alt_response(401, schema=schemas.ProblemSchema, description="Wrong username or password")
    @bp.alt_response(429, schema=schemas.ProblemSchema, description="Too many failed logins; see Retry-After")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign in with username and password; get a bearer token."""
        session = db_session()
        token, expires = auth.login(session, body["username"], body["password"], now())
        return {"token": token, "expires_at": expires, **_me(auth.authenticate(session, token, now()))}


@bp.route("/logout")
class Logout(MethodView):
    @bp.response(204)
    @bp.doc(security=[{"bearer": []}])
    @login_required
    def post(self) -> None:
        """Revoke the token used for this request."""
        auth.logout(db_session(), bearer_token() or "", now())


@bp.route("/me")
class Me(MethodView):
    @bp.response(200, schemas.MeOut)
    @bp.doc(security=[{"bearer": []}])
    @login_required
    def get(self) -> dict[str, Any]:
        """Who am I, and which roles do I hold where."""
        return _me(current())
