"""Server-rendered pages for designers, officers and supervisors."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import func, select

from engine.persistence.models import Dossier, Procedure, Task, TaskState

bp = Blueprint("admin", __name__, template_folder="templates")


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    """Home: the procedure catalog and the open work at a glance."""
    from api.app import db_session

    session = db_session()
    procedures = session.scalars(select(Procedure).order_by(Procedure.code)).all()
    dossiers = session.scalar(select(func.count()).select_from(Dossier)) or 0
    open_tasks = session.scalar(select(func.count()).select_from(Task).where(Task.state.in_(TaskState.OPEN))) or 0
    return render_template("admin/index.html", procedures=procedures, dossiers=dossiers, open_tasks=open_tasks)
