"""Dossiers: receive, search, show, history, lifecycle actions, legal forms."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from engine import auth, documents, lifecycle, services
from engine.errors import Conflict, Forbidden, InvalidRequest
from engine.organisation import agency_by_code
from engine.persistence.dossiers import DossierRecord
from engine.persistence.models import (
    Dossier,
    IdempotencyKey,
    Procedure,
    ProcedureVersion,
    Task,
    TaskState,
)

from . import schemas
from .app import db_session
from .security import current, login_required, now

PREFIX = "/dossiers"
bp = Blueprint("dossiers", __name__, description="Hồ sơ (dossiers)")
SECURED = [{"bearer": []}]
HANDLING_ROLES = ("receptionist", "officer", "head_of_unit", "leader")


def _visible(session: Any, identity: auth.Identity) -> Any:
    """A filter on dossiers the identity may see."""
    agencies = auth.visible_agencies(session, identity)
    if not agencies:
        return Dossier.id.is_(None)
    in_steps = select(Task.dossier_id).where(Task.agency_id.in_(agencies))
    return or_(Dossier.home_agency_id.in_(agencies), Dossier.receiving_agency_id.in_(agencies), Dossier.id.in_(in_steps))


def _dossier(code: str, *roles: str) -> Dossier:
    """The dossier ``code`` if the caller may see it (and holds one of ``roles`` where it is handled)."""
    session = db_session()
    dossier = services.get_dossier(session, code)
    identity = current()
    visible = session.scalar(select(Dossier.id).where(Dossier.id == dossier.id, _visible(session, identity)))
    if visible is None:
        raise Forbidden(f"Dossier {code} is handled by agencies where you hold no role.")
    if roles:
        agencies = _dossier_agencies(session, dossier)
        if not any(a in agencies for a in identity.agencies(*roles)):
            raise Forbidden(f"This needs the role {' or '.join(roles)} at an agency handling dossier {code}.")
    return dossier


def _dossier_agencies(session: Any, dossier: Dossier) -> set[int]:
    ids = {dossier.home_agency_id, dossier.receiving_agency_id}
    ids |= set(session.scalars(select(Task.agency_id).where(Task.dossier_id == dossier.id)))
    return {i for i in ids if i is not None}


def dossier_out(dossier: Dossier | DossierRecord) -> dict[str, Any]:
    """A dossier as the API shows it, with its open steps (read fresh)."""
    session = db_session()
    procedure = services.version_summary(session, dossier.procedure_version_id)
    tasks = session.scalars(
        select(Task).where(Task.dossier_id == dossier.id, Task.state.in_(TaskState.OPEN)).order_by(Task.id).execution_options(populate_existing=True)
    ).all()
    return {
        **{k: getattr(dossier, k) for k in (
            "code", "status", "sub_status", "channel", "applicant_name", "applicant_phone", "applicant_email", "received_at",
            "due_at", "finished_at", "returned_at", "new_appointment_at", "supplement_requests", "data")},
        "procedure_code": procedure.code,
        "procedure_name": procedure.name,
        "version": procedure.version,
        "status_label": services.DossierStatus.LABELS.get(dossier.status, str(dossier.status)),
        "open_tasks": tasks,
    }


def _idempotent(key: str | None, body: dict[str, Any], run: Callable[[], tuple[dict[str, Any], int]]) -> tuple[dict[str, Any], int]:
    """Answer a retried request (same ``Idempotency-Key``) with its first result."""
    if not key:
        return run()
    session = db_session()
    actor = current().username
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    seen = session.scalar(select(IdempotencyKey).where(IdempotencyKey.actor == actor, IdempotencyKey.key == key))
    if seen is not None:
        if seen.request_hash != digest:
            raise Conflict("This Idempotency-Key was used for a different request.")
        return seen.response_body, seen.response_status
    result, status = run()
    session.add(IdempotencyKey(actor=actor, key=key[:200], request_hash=digest, response_status=status,
                               response_body=json.loads(json.dumps(result, default=str)), created_at=now()))
    try:
        session.commit()
    except IntegrityError:  # the same key raced in: answer with the winner's result
        session.rollback()
        seen = session.scalar(select(IdempotencyKey).where(IdempotencyKey.actor == actor, IdempotencyKey.key == key))
        return seen.response_body, seen.response_status
    return result, status


@bp.route("")
class Dossiers(MethodView):
    @bp.arguments(schemas.ReceiveIn)
    @bp.response(201, schemas.DossierOut)
    @bp.doc(security=SECURED, parameters=[{"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"}, "required": False}])
    @login_required
    def post(self, body: dict[str, Any]) -> Response:
        """Receive a dossier at a desk (receptionists of that agency). Retry safely with an Idempotency-Key."""
        session = db_session()
        agency = agency_by_code(session, body["agency_code"])
        auth.require(current(), "receptionist", agency_id=agency.id)

        def run() -> tuple[dict[str, Any], int]:
            record = services.start_dossier(
                session, body["procedure_code"], body["data"], actor=current().username, now=now(),
                agency_code=body["agency_code"], home_agency_code=body.get("home_agency_code"),
                applicant=body["applicant"], channel=body["channel"],
            )
            return schemas.DossierOut().dump(dossier_out(record)), 201  # JSON-ready

        result, status = _idempotent(request.headers.get("Idempotency-Key"), body, run)
        # Already serialized (a replay answers with the stored body): send as is.
        return Response(json.dumps(result, ensure_ascii=False), status=status, mimetype="application/json")

    @bp.arguments(schemas.SearchArgs, location="query")
    @bp.response(200, schemas.DossierPageOut)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Search the dossiers you may see: by code, applicant, procedure, agency, status, received dates, overdue."""
        session = db_session()
        query = select(Dossier, Procedure.code).join(ProcedureVersion, ProcedureVersion.id == Dossier.procedure_version_id).join(
            Procedure, Procedure.id == ProcedureVersion.procedure_id
        ).where(_visible(session, current()))
        if args.get("code"):
            query = query.where(Dossier.code == args["code"])
        if args.get("applicant"):  # the start of the name, so that an index serves it
            prefix = args["applicant"].lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(func.lower(Dossier.applicant_name).like(f"{prefix}%", escape="\\"))
        if args.get("procedure"):
            query = query.where(Procedure.code == args["procedure"])
        if args.get("agency"):
            query = query.where(Dossier.agency_code == args["agency"])
        if args.get("status"):
            query = query.where(Dossier.status == args["status"])
        if args.get("received_from"):
            query = query.where(Dossier.received_at >= args["received_from"])
        if args.get("received_to"):
            query = query.where(Dossier.received_at < args["received_to"])
        overdue = and_(Dossier.due_at.is_not(None), Dossier.due_at < now(), Dossier.status.in_((2, 4, 5, 6)))
        if args.get("overdue") is not None:
            query = query.where(overdue if args["overdue"] else ~overdue)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.execute(
            query.order_by(Dossier.received_at.desc(), Dossier.id.desc()).offset((args["page"] - 1) * args["page_size"]).limit(args["page_size"])
        ).all()
        items = [
            {"code": d.code, "procedure_code": pcode, "status": d.status, "applicant_name": d.applicant_name,
             "received_at": d.received_at, "due_at": d.due_at,
             "overdue": bool(d.due_at and d.due_at < now() and d.status in (2, 4, 5, 6))}
            for d, pcode in rows
        ]
        return {"items": items, "page": args["page"], "page_size": args["page_size"], "total": total}


@bp.route("/<code>")
class DossierItem(MethodView):
    @bp.response(200, schemas.DossierOut)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, code: str) -> dict[str, Any]:
        """A dossier with its open steps."""
        return dossier_out(_dossier(code))


@bp.route("/<code>/history")
class History(MethodView):
    @bp.response(200, schemas.EventOut(many=True))
    @bp.doc(security=SECURED)
    @login_required
    def get(self, code: str) -> list[Any]:
        """The audit trail of a dossier: who did what, when."""
        _dossier(code)
        return list(services.dossier_history(db_session(), code))


@bp.route("/<code>/forms/<form>")
class Form(MethodView):
    @bp.response(200, content_type="application/pdf")
    @bp.doc(security=SECURED, parameters=[{"in": "query", "name": "format", "schema": {"type": "string", "enum": ["pdf", "html"]}}])
    @login_required
    def get(self, code: str, form: str) -> Response:
        """Form 01–05 (receipt, supplement, refusal, apology, control slip) as PDF, or HTML with ?format=html."""
        _dossier(code)
        if form not in ("01", "02", "03", "04", "05"):
            raise InvalidRequest("Form must be 01, 02, 03, 04 or 05.")
        public = current_app.config["MOTCUA"].public_url
        as_pdf = request.args.get("format", "pdf") != "html"
        content = documents.render(db_session(), code, form, public, pdf=as_pdf)
        return Response(content, mimetype="application/pdf" if as_pdf else "text/html")


def _action(name: str, schema: Any, roles: tuple[str, ...], run: Callable[[str, dict[str, Any]], Any], doc: str) -> None:
    """Register POST /<code>/<name> calling a lifecycle use case."""

    class Action(MethodView):
        @bp.arguments(schema)
        @bp.response(200, schemas.DossierOut)
        @bp.doc(security=SECURED, summary=doc)
        @login_required
        def post(self, body: dict[str, Any], code: str) -> dict[str, Any]:
            _dossier(code, *roles)
            run(code, body)
            return dossier_out(services.get_dossier(db_session(), code))

    Action.__name__ = f"Action_{name.replace('-', '_')}"
    bp.route(f"/<code>/{name}")(Action)


class _Empty(schemas.Schema):
    pass


def _s() -> Any:
    return db_session()


_action("supplement-request", schemas.ItemsIn, HANDLING_ROLES,
        lambda code, b: lifecycle.request_supplement(_s(), code, b["items"], current().username, now()),
        "Ask the applicant to supplement (form 02); the clock stops.")
_action("supplement-received", _Empty, HANDLING_ROLES,
        lambda code, b: lifecycle.resume(_s(), code, current().username, now()),
        "The supplement arrived; the clock restarts and due dates move.")
_action("payment-request", schemas.ItemsIn, HANDLING_ROLES,
        lambda code, b: lifecycle.request_payment(_s(), code, b["items"], current().username, now()),
        "Pause for the financial obligation, where the procedure declares one.")
_action("payment-received", _Empty, HANDLING_ROLES,
        lambda code, b: lifecycle.resume(_s(), code, current().username, now()),
        "The payment was made; the clock restarts.")
_action("withdraw", schemas.ReasonIn, ("receptionist",),
        lambda code, b: lifecycle.withdraw(_s(), code, b["reason"], current().username, now()),
        "The applicant withdraws the dossier.")
_action("stop", schemas.ReasonIn, ("leader", "head_of_unit"),
        lambda code, b: lifecycle.stop(_s(), code, b["reason"], current().username, now()),
        "Stop processing, with the legal reason.")
_action("apology", schemas.ApologyIn, HANDLING_ROLES,
        lambda code, b: lifecycle.issue_apology(_s(), code, b["new_due_at"], b["reason"], b["agency_code"], b["approved_by"], current().username, now()),
        "The late agency apologises with a new appointment (form 04), signed by its leader; once per dossier.")
_action("recall", schemas.ReasonIn, HANDLING_ROLES,
        lambda code, b: lifecycle.recall(_s(), code, b["reason"], current().username, now()),
        "Thu hồi: take back a dossier one forwarded by mistake, while its next step is unclaimed.")
_action("reset", schemas.ResetIn, ("leader", "head_of_unit"),
        lambda code, b: lifecycle.reset_to_step(_s(), code, b["step_id"], b["reason"], current().username, now()),
        "A leader sends the dossier back to an earlier step, with a reason; open steps are cancelled.")
_action("return-result", schemas.ReturnResultIn, ("receptionist",),
        lambda code, b: lifecycle.return_result(_s(), code, b["channel"], current().username, now()),
        "Hand the result to the applicant: desk, post or online.")
