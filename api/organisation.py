"""Organisation: agencies, officers, calendar overrides (administrators)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from engine import auth, organisation, services
from engine.persistence.models import Agency, CalendarOverride, Officer, OfficerRole

from .app import db_session
from .schemas import PageArgs
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
    @bp.arguments(PageArgs, location="query")
    @bp.response(200, AgencyOut(many=True))
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The agencies of the province, by code (public: receiving desks are chosen from it)."""
        session = db_session()
        rows = session.scalars(
            select(Agency).order_by(Agency.code).offset((args["page"] - 1) * args["page_size"]).limit(args["page_size"])
        ).all()
        codes = dict(session.execute(select(Agency.id, Agency.code)).all())
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


class GrantOut(Schema):
    agency = fields.String(required=True)
    role = fields.String(required=True)


class OfficerOut(Schema):
    username = fields.String(required=True)
    full_name = fields.String(required=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    active = fields.Boolean(required=True)
    roles = fields.List(fields.Nested(GrantOut), required=True)


class OrganisationIn(Schema):
    agencies = fields.List(fields.Dict(), load_default=list, validate=validate.Length(max=5000))
    officers = fields.List(fields.Dict(), load_default=list, validate=validate.Length(max=20000))


class LoadOut(Schema):
    agencies = fields.Integer(required=True)
    officers = fields.Integer(required=True)


@bp.route("/officers")
class Officers(MethodView):
    @bp.arguments(PageArgs, location="query")
    @bp.response(200, OfficerOut(many=True))
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Officers and the roles they hold (administrators and supervisors)."""
        auth.require(current(), "administrator", "supervisor")
        session = db_session()
        officers = session.scalars(
            select(Officer).order_by(Officer.username).offset((args["page"] - 1) * args["page_size"]).limit(args["page_size"])
        ).all()
        grants = session.execute(
            select(OfficerRole.officer_id, Agency.code, OfficerRole.role)
            .join(Agency, Agency.id == OfficerRole.agency_id)
            .where(OfficerRole.officer_id.in_([o.id for o in officers]))
            .order_by(Agency.code, OfficerRole.role)
        ).all()
        return [
            {"username": o.username, "full_name": o.full_name, "email": o.email, "phone": o.phone, "active": o.active,
             "roles": [{"agency": code, "role": role} for oid, code, role in grants if oid == o.id]}
            for o in officers
        ]


@bp.route("/organisation")
class OrganisationLoad(MethodView):
    @bp.arguments(OrganisationIn)
    @bp.response(200, LoadOut)
    @bp.doc(security=SECURED)
    @login_required
    def post(self, body: dict[str, Any]) -> dict[str, int]:
        """Create or update agencies and officers (administrators); same shape as the YAML file."""
        auth.require(current(), "administrator")
        return organisation.load_organisation(db_session(), body, current().username, now())
