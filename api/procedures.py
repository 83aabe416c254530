"""The procedure catalog: list, show, versions, deploy, diagrams."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from engine import auth, services
from engine.errors import InvalidRequest, NotFound
from engine.persistence.models import Procedure, ProcedureFile, ProcedureVersion

from . import schemas
from .app import db_session
from .security import current, login_required, now

PREFIX = "/procedures"
bp = Blueprint("procedures", __name__, description="Danh mục thủ tục hành chính (procedure catalog)")
SECURED = [{"bearer": []}]


def _procedure_out(p: Procedure) -> dict[str, Any]:
    return {"code": p.code, "name": p.name, "field": p.field, "level": p.level, "latest_version": p.latest_version}


def _version_out(code: str, v: ProcedureVersion) -> dict[str, Any]:
    return {
        "code": code,
        "version": v.version,
        "deployed_at": v.deployed_at,
        "deployed_by": v.deployed_by,
        "deadline": v.meta.get("deadline"),
        "files": [f.filename for f in v.files],
        "steps": list(v.meta.get("steps", {}).values()),
    }


@bp.route("")
class Procedures(MethodView):
    @bp.arguments(schemas.PageArgs, location="query")
    @bp.response(200, schemas.ProcedureOut(many=True))
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """List the procedures (public), by code."""
        session = db_session()
        rows = session.scalars(
            select(Procedure).order_by(Procedure.code).offset((args["page"] - 1) * args["page_size"]).limit(args["page_size"])
        )
        return [_procedure_out(p) for p in rows]

    @bp.response(201, schemas.DeployOut)
    @bp.alt_response(422, schema=schemas.ProblemSchema, description="Rejected: `problems` lists each with element id and line")
    @bp.doc(security=SECURED, requestBody={"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}})
    @login_required
    def post(self) -> tuple[dict[str, Any], int]:
        """Deploy a new version from one or more BPMN files (multipart field `files`). Designers only."""
        auth.require(current(), "designer")
        uploads = request.files.getlist("files")
        if not uploads:
            raise InvalidRequest("Send one or more BPMN files in the multipart field 'files'.")
        files = {(u.filename or f"file{i}.bpmn"): u.read() for i, u in enumerate(uploads)}
        result = services.deploy(db_session(), files, actor=current().username, now=now())
        body = {"code": result.code, "name": result.name, "version": result.version, "created": result.created,
                "warnings": [w.as_dict() for w in result.warnings]}
        return body, 201 if result.created else 200


@bp.route("/<code>")
class ProcedureItem(MethodView):
    @bp.response(200, schemas.VersionOut)
    def get(self, code: str) -> dict[str, Any]:
        """A procedure's latest version: deadline, steps with roles and allotments (public)."""
        version = services.get_version(db_session(), code)
        return _version_out(code, version)


@bp.route("/<code>/versions")
class Versions(MethodView):
    @bp.response(200, schemas.VersionOut(many=True))
    def get(self, code: str) -> list[dict[str, Any]]:
        """Every deployed version of a procedure (public)."""
        procedure = services.get_procedure(db_session(), code)
        return [_version_out(code, v) for v in procedure.versions]


@bp.route("/<code>/versions/<int:version>/files/<filename>")
class DiagramFile(MethodView):
    @bp.response(200, content_type="application/xml")
    def get(self, code: str, version: int, filename: str) -> Response:
        """A BPMN file of a version, as deployed (public)."""
        session = db_session()
        v = services.get_version(session, code, version)
        content = session.scalar(
            select(ProcedureFile.content).where(ProcedureFile.version_id == v.id, ProcedureFile.filename == filename)
        )
        if content is None:
            raise NotFound(f"Version {version} of {code} has no file '{filename}'.")
        return Response(content, mimetype="application/xml")
