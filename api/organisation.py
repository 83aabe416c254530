"""Organisation: agencies, officers, calendar overrides (administrators)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select
from sqlalchemy.orm import aliased

from engine import auth, organisation, services
from engine.persistence.models import Agency, CalendarOverride, Officer, OfficerRole

from .app import db_session
from .schemas import (
    AgencyOut,
    LoadOut,
    OfficerOut,
    OrganisationIn,
    OverrideIn,
    OverrideOut,
    PageArgs,
)
from .security import current, login_required, now

PREFIX = ""
bp = Blueprint("organisation", __name__, description="Tổ chức, lịch làm việc (organisation, calendar)")
SECURED = [{"bearer": []}]


@bp.route("/agencies")
class Agencies(MethodView):
    @bp.arguments(PageArgs, location="query")
    @bp.response(200, AgencyOut(many=True))
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The agencies of the province, by code (public: receiving desks are chosen from it)."""
        parent = aliased(Agency)
        rows = db_session().execute(
            select(Agency, parent.code)
            .outerjoin(parent, parent.id == Agency.parent_id)
            .order_by(Agency.code)
            .offset((args["page"] - 1) * args["page_size"])
            .limit(args["page_size"])
        ).all()
        return [{"code": a.code, "name": a.name, "level": a.level, "kind": a.kind, "parent": up, "active": a.active} for a, up in rows]


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
