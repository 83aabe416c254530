"""Officers: the inbox (my steps, my roles' queue), claiming, completing a step with its
form, returning it to the previous step."""

from __future__ import annotations

from typing import Any, Mapping

from flask import abort, flash, redirect, render_template, request, url_for

from engine import lifecycle, services, worklist
from engine.errors import EngineError
from engine.persistence.models import Procedure, ProcedureVersion, Task

from . import bp
from .web import PER_PAGE, current_user, db, login_required, now, page_arg, say

WORK_ROLES = ("receptionist", "officer", "head_of_unit", "leader")


@bp.get("/cong-viec")
@login_required(*WORK_ROLES)
def inbox() -> Any:
    """My steps and my roles' queue, most urgent first, each paginated."""
    session = db()
    user = current_user()
    mine = worklist.inbox_page(session, user.username, "mine", page_arg("trang"), PER_PAGE, now())
    queue = worklist.inbox_page(session, user.username, "queue", page_arg("trang-cho"), PER_PAGE, now())
    return render_template("admin/inbox.html", mine=mine, queue=queue)


def _task(task_id: int) -> Task:
    if not 0 < task_id < 2**31:  # ids are 32-bit integers
        abort(404)
    session = db()
    task = session.get(Task, task_id, populate_existing=True)
    if task is None:
        abort(404)
    if not worklist.can_see(session, current_user().identity, task.dossier):
        abort(403)
    return task


def _step_form(task: Task) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, str]]]]:
    session = db()
    version = session.get(ProcedureVersion, task.dossier.procedure_version_id)
    fields = list(version.meta.get("steps", {}).get(task.step_id, {}).get("form", []))
    options: dict[str, list[tuple[str, str]]] = {}
    if any(f.get("type") == "enum" for f in fields):
        for file in version.files:
            options.update(worklist.enum_options(file.content, task.step_id))
    return fields, options


def _render_task(task: Task, values: Mapping[str, Any] | None = None, status: int = 200) -> Any:
    session = db()
    fields, options = _step_form(task)
    version = session.get(ProcedureVersion, task.dossier.procedure_version_id)
    procedure = session.get(Procedure, version.procedure_id)
    urgency = worklist.urgency(task.due_at, now(), services.load_calendar(session))
    user = current_user()
    can_claim = task.state == "ready" and (task.agency_id is None or task.agency_id in user.identity.agencies(task.role or "officer"))
    labels = {f["id"]: f["label"] for step in version.meta.get("steps", {}).values() for f in step.get("form", [])}
    mine = {f["id"] for f in fields}
    data = task.dossier.data
    recorded = [(label, data[key]) for key, label in labels.items() if key in data and key not in mine and data[key] not in (None, "")]
    colleagues = []
    if task.state in ("ready", "claimed") and task.agency_id in user.identity.agencies("leader", "head_of_unit"):
        colleagues = worklist.holders(session, task.role or "officer", task.agency_id)
    return render_template("admin/task.html", task=task, d=task.dossier, procedure=procedure, fields=fields, options=options,
                           values=values or task.dossier.data, urgency=urgency, can_claim=can_claim, colleagues=colleagues,
                           recorded=recorded), status


@bp.get("/cong-viec/<int:task_id>")
@login_required(*WORK_ROLES)
def task(task_id: int) -> Any:
    return _render_task(_task(task_id))


@bp.post("/cong-viec/<int:task_id>/nhan")
@login_required(*WORK_ROLES)
def claim(task_id: int) -> Any:
    _task(task_id)
    try:
        lifecycle.claim(db(), task_id, current_user().username, now())
    except EngineError as err:
        flash(say(err, "nhận xử lý bước"), "error")
        return redirect(url_for("admin.inbox"))
    flash("Đã nhận xử lý bước; bước đã chuyển vào danh sách việc của ông/bà.", "success")
    return redirect(url_for("admin.task", task_id=task_id))


@bp.post("/cong-viec/<int:task_id>/tra-ve-hang-cho")
@login_required(*WORK_ROLES)
def unclaim(task_id: int) -> Any:
    _task(task_id)
    try:
        lifecycle.unclaim(db(), task_id, current_user().username, now())
    except EngineError as err:
        flash(say(err, "trả bước về hàng chờ"), "error")
    else:
        flash("Đã trả bước về hàng chờ của vai trò.", "success")
    return redirect(url_for("admin.inbox"))


def _parse(fields: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Form values converted to the field types; the labels of values that could not be read."""
    data: dict[str, Any] = {}
    bad: list[str] = []
    for f in fields:
        name, kind = f["id"], f.get("type") or "string"
        raw = request.form.get(f"f_{name}", "")
        if kind == "boolean":
            data[name] = raw == "co"
            continue
        raw = raw.strip()[:2000]
        if raw == "":
            continue
        if kind in ("long", "integer"):
            try:
                data[name] = int(raw.replace(".", "").replace(" ", ""))
            except ValueError:
                bad.append(f["label"])
        else:
            data[name] = raw
    return data, bad


@bp.post("/cong-viec/<int:task_id>/hoan-thanh")
@login_required(*WORK_ROLES)
def complete(task_id: int) -> Any:
    """Complete a step with its form; the dossier moves to the next step."""
    found = _task(task_id)
    code = found.dossier.code
    fields, _ = _step_form(found)
    data, bad = _parse(fields)
    if bad:
        flash("Giá trị không phải là số: " + ", ".join(bad) + ".", "error")
        return _render_task(found, {**found.dossier.data, **data}, 400)
    try:
        services.complete_task(db(), task_id, data, actor=current_user().username, now=now())
    except EngineError as err:
        flash(say(err, "hoàn thành bước"), "error")
        db().rollback()
        return _render_task(_task(task_id), {**found.dossier.data, **data}, 400)
    flash(f"Đã hoàn thành bước “{found.step_name}” của hồ sơ {code}.", "success")
    return redirect(url_for("admin.inbox"))


@bp.post("/cong-viec/<int:task_id>/giao-lai")
@login_required("leader", "head_of_unit")
def reassign(task_id: int) -> Any:
    """A leader gives the step to another officer holding its role there."""
    _task(task_id)
    to = request.form.get("nguoi_nhan", "").strip()[:100]
    try:
        lifecycle.reassign(db(), task_id, to, current_user().username, now())
    except EngineError as err:
        flash(say(err, "giao lại bước"), "error")
    else:
        flash(f"Đã giao bước cho {to}.", "success")
    return redirect(url_for("admin.task", task_id=task_id))


@bp.post("/cong-viec/<int:task_id>/tra-lai")
@login_required(*WORK_ROLES)
def send_back(task_id: int) -> Any:
    """Return the dossier to the previous step, with a reason."""
    found = _task(task_id)
    reason = request.form.get("ly_do", "").strip()[:1000]
    if not reason:
        flash("Ghi rõ lý do trả lại.", "error")
        return redirect(url_for("admin.task", task_id=task_id))
    try:
        lifecycle.return_to_previous(db(), task_id, reason, current_user().username, now())
    except EngineError as err:
        flash(say(err, "trả lại bước trước"), "error")
        return redirect(url_for("admin.task", task_id=task_id))
    flash(f"Đã trả hồ sơ {found.dossier.code} về bước trước.", "success")
    return redirect(url_for("admin.inbox"))
