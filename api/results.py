"""Result documents of steps: upload a signed PDF, list a dossier's results with their verification.

* ``POST /tasks/<id>/result`` — multipart field ``file``: the step's result document (PDF),
  by the officer holding the step; answers the stored document with its signature check.
* ``GET /dossiers/<code>/results`` — the dossier's result documents, oldest first.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from engine import results
from engine.signatures import MAX_PDF_BYTES

from .app import db_session
from .dossiers import _dossier
from .problems import problem
from .schemas import ProblemSchema
from .security import current, login_required, now

PREFIX = ""
bp = Blueprint("results", __name__, description="Văn bản kết quả có chữ ký số (signed result documents)")
SECURED = [{"bearer": []}]

#: HTTP status of each kind of refused upload.
_REFUSED_STATUS = {"too_large": 413, "not_pdf": 415, "empty": 400, "malformed": 400}


class VerificationOut(Schema):
    valid = fields.Boolean(required=True, metadata={"description": "Chữ ký số hợp lệ (signature checks)"})
    signer = fields.String(allow_none=True, metadata={"description": "Người ký: tên (tổ chức)"})
    signed_at = fields.AwareDateTime(allow_none=True, metadata={"description": "Thời điểm ký (as the signer reports it)"})
    reasons = fields.List(fields.String(), required=True, metadata={"description": "Lý do không hợp lệ (Vietnamese)"})
    verified_at = fields.AwareDateTime(required=True)


class ResultDocumentOut(Schema):
    id = fields.Integer(required=True)
    task_id = fields.Integer(required=True)
    step_id = fields.String(required=True)
    step_name = fields.String(allow_none=True)
    filename = fields.String(required=True)
    size = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    uploaded_by = fields.String(required=True)
    uploaded_at = fields.AwareDateTime(required=True)
    verification = fields.Nested(VerificationOut, required=True)


_UPLOAD_DOC = {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": f"PDF, at most {MAX_PDF_BYTES // (1024 * 1024)} MB"}},
}}}}


@bp.route("/tasks/<int:task_id>/result")
class TaskResult(MethodView):
    @bp.response(201, ResultDocumentOut)
    @bp.alt_response(413, schema=ProblemSchema, description="The file is too large")
    @bp.alt_response(415, schema=ProblemSchema, description="The file is not a PDF")
    @bp.doc(security=SECURED, requestBody=_UPLOAD_DOC)
    @login_required
    def post(self, task_id: int) -> Any:
        """Attach the step's result document (multipart field `file`, a PDF); its digital signature is checked."""
        upload = request.files.get("file")  # missing: refused as empty, after the step and the caller are checked
        content = upload.stream.read(MAX_PDF_BYTES + 1) if upload is not None else b""
        trust = results.trust_store(current_app.config["MOTCUA"])
        try:
            document = results.attach_result(db_session(), task_id, upload.filename if upload else None, content,
                                              current().username, now(), trust=trust)
        except results.DocumentRejected as err:
            return problem(_REFUSED_STATUS.get(err.kind, 400), err.message, f"result_{err.kind}")
        return results.result_out(document, _step_name(document.task_id)), 201


def _step_name(task_id: int) -> str | None:
    from engine.persistence.models import Task

    task = db_session().get(Task, task_id)
    return task.step_name if task else None


@bp.route("/dossiers/<code>/results")
class DossierResults(MethodView):
    @bp.response(200, ResultDocumentOut(many=True))
    @bp.doc(security=SECURED)
    @login_required
    def get(self, code: str) -> Any:
        """The dossier's result documents, oldest first, each with its signature check."""
        _dossier(code)  # 403 unless the caller may see the dossier
        return results.list_results(db_session(), code)
