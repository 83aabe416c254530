"""Tasks: my inbox and my roles' queue; claim, release, complete, return, transfer, reassign."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from engine import lifecycle, services
from engine.errors import NotFound
from engine.persistence.models import Task

from . import schemas
from .app import db_session
from .dossiers import dossier_out
from .security import current, login_required, now

PREFIX = "/tasks"
bp = Blueprint("tasks", __name__, description="Công việc (tasks)")
SECURED = [{"bearer": []}]


def _code_of(task_id: int) -> str:
    services._checked_id(task_id, "task")
    task = db_session().get(Task, task_id)
    if task is None:
        raise NotFound(f"No task {task_id}.")
    return task.dossier.code


@bp.route("/inbox")
class Inbox(MethodView):
    @bp.arguments(schemas.PageArgs, location="query")
    @bp.response(200, schemas.InboxOut)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> Any:
        """My claimed steps, and the steps offered to my roles at my agencies — most urgent first, a page of each."""
        page = services.inbox(db_session(), current().username, limit=args["page_size"], offset=(args["page"] - 1) * args["page_size"])
        return current_app.json.response({"mine": [schemas.task_out(t) for t in page.mine], "queue": [schemas.task_out(t) for t in page.queue]})


@bp.route("/<int:task_id>/claim")
class Claim(MethodView):
    @bp.response(200, schemas.TaskOut)
    @bp.alt_response(409, schema=schemas.ProblemSchema, description="Someone else has it")
    @bp.doc(security=SECURED)
    @login_required
    def post(self, task_id: int) -> Any:
        """Take an offered step (only one officer wins)."""
        return lifecycle.claim(db_session(), task_id, current().username, now())


@bp.route("/<int:task_id>/unclaim")
class Unclaim(MethodView):
    @bp.response(200, schemas.TaskOut)
    @bp.doc(security=SECURED)
    @login_required
    def post(self, task_id: int) -> Any:
        """Put a step back in its role's queue."""
        return lifecycle.unclaim(db_session(), task_id, current().username, now())


@bp.route("/<int:task_id>/complete")
class Complete(MethodView):
    @bp.arguments(schemas.CompleteIn)
    @bp.response(200, schemas.DossierOut)
    @bp.alt_response(409, schema=schemas.ProblemSchema, description="Already completed, or held by someone else")
    @bp.doc(security=SECURED)
    @login_required
    def post(self, body: dict[str, Any], task_id: int) -> Any:
        """Complete a step with its form data; the dossier moves on."""
        record = services.complete_task(db_session(), task_id, body["data"], actor=current().username, now=now())
        return dossier_out(record)


@bp.route("/<int:task_id>/return")
class Return(MethodView):
    @bp.arguments(schemas.ReasonIn)
    @bp.response(200, schemas.DossierOut)
    @bp.doc(security=SECURED)
    @login_required
    def post(self, body: dict[str, Any], task_id: int) -> Any:
        """Send the dossier back to the previous step, with a reason."""
        code = _code_of(task_id)
        lifecycle.return_to_previous(db_session(), task_id, body["reason"], current().username, now())
        return dossier_out(services.get_dossier(db_session(), code))


@bp.route("/<int:task_id>/reassign")
class Reassign(MethodView):
    @bp.arguments(schemas.ReassignIn)
    @bp.response(200, schemas.TaskOut)
    @bp.doc(security=SECURED)
    @login_required
    def post(self, body: dict[str, Any], task_id: int) -> Any:
        """A leader gives the step to another officer holding its role there."""
        return lifecycle.reassign(db_session(), task_id, body["to"], current().username, now())


@bp.route("/<int:task_id>/transfer")
class Transfer(MethodView):
    @bp.arguments(schemas.TransferIn)
    @bp.response(200, schemas.TaskOut)
    @bp.doc(security=SECURED)
    @login_required
    def post(self, body: dict[str, Any], task_id: int) -> Any:
        """Chuyển xử lý: hand a step one holds to a colleague with the same role at that agency."""
        return lifecycle.transfer(db_session(), task_id, body["to"], body.get("reason"), current().username, now())
