"""Organisation: agencies, officers, calendar overrides (administrators)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from engine import auth, services
from engine.persistence.models import Agency, CalendarOverride

from .app import db_session
from .security import current, login_required, now

PREFIX = ""
bp = Blueprint("organisation", __name__, description="Tổ chức, lịch làm việc (organisation, calendar)")
SECURED = [{"bearer": []}]


class AgencyOut(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    level = fields.String(required=True)
    kind = fields.String(required=True)
    parent = fields.String(allow_none=True)
    active = fields.Boolean(required=True)


class OverrideIn(Schema):
    day = fields.Date(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("day_off", "working_day")))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class OverrideOut(Schema):
    day = fields.Date(required=True)
    kind = fields.String(required=True)
    note = fields.String(allow_none=True)


@bp.route("/agencies")
class Agencies(MethodView):
    @bp.response(200, AgencyOut(many=True))
    def get(self) -> list[dict[str, Any]]:
        """Every agency of the province (public: receiving desks are chosen from it)."""
        rows = db_session().scalars(select(Agency).order_by(Agency.code)).all()
        codes = {a.id: a.code for a in rows}
        return [{"code": a.code, "name": a.name, "level": a.level, "kind": a.kind, "parent": codes.get(a.parent_id), "active": a.active} for a in rows]


@bp.route("/calendar/overrides")
class Overrides(MethodView):
    @bp.response(200, OverrideOut(many=True))
    def get(self) -> list[Any]:
        """Extra days off and make-up working days set by administrators (public)."""
        return list(db_session().scalars(select(CalendarOverride).order_by(CalendarOverride.day)))

    @bp.arguments(OverrideIn)
    @bp.response(201, OverrideOut)
    @bp.doc(security=SECURED)
    @login_required
    def post(self, body: dict[str, Any]) -> Any:
        """Add or change an override (administrators)."""
        auth.require(current(), "administrator")
        services.add_calendar_override(db_session(), body["day"], body["kind"], body.get("note"), current().username, now())
        return body
