"""Sign in, sign out, and the home page."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import func, select
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from engine import auth as engine_auth
from engine import worklist
from engine.persistence.models import Dossier, Task, TaskState

from . import bp
from .web import PER_PAGE, PageForm, db, now, page_arg, safe_next


class LoginForm(PageForm):
    username = StringField("Tên đăng nhập", validators=[DataRequired("Nhập tên đăng nhập."), Length(max=100)])
    password = PasswordField("Mật khẩu", validators=[DataRequired("Nhập mật khẩu."), Length(max=200)])
    next = HiddenField()


@bp.get("/")
def index() -> Any:
    """Home: the catalog at a glance, and the way in for each audience."""
    session_ = db()
    dossiers = session_.scalar(select(func.count()).select_from(Dossier)) or 0
    open_tasks = session_.scalar(select(func.count()).select_from(Task).where(Task.state.in_(TaskState.OPEN))) or 0
    catalog = worklist.procedure_catalog(session_, "", page_arg(), PER_PAGE)
    return render_template("admin/index.html", page=catalog, dossiers=dossiers, open_tasks=open_tasks)


@bp.route("/dang-nhap", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with username and password; the token stays in the signed session cookie."""
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        try:
            token, _expires = engine_auth.login(db(), form.username.data.strip(), form.password.data, now())
        except engine_auth.TooManyAttempts as err:
            flash(f"Đăng nhập sai quá nhiều lần; vui lòng thử lại sau {err.retry_after} giây.", "error")
            return render_template("admin/login.html", form=form), 429
        except engine_auth.Unauthenticated:
            flash("Sai tên đăng nhập hoặc mật khẩu.", "error")
            return render_template("admin/login.html", form=form), 401
        session.clear()
        session["token"] = token
        session.permanent = True
        identity = engine_auth.authenticate(db(), token, now())
        flash(f"Xin chào {identity.full_name}, ông/bà đã đăng nhập.", "success")
        return redirect(safe_next(form.next.data) or url_for("admin.workspace"))
    return render_template("admin/login.html", form=form)


@bp.post("/dang-xuat")
def logout() -> Any:
    token = session.get("token")
    if token:
        engine_auth.logout(db(), token, now())
    session.clear()
    flash("Ông/bà đã đăng xuất.", "success")
    return redirect(url_for("admin.login"))


@bp.get("/lam-viec")
def workspace() -> Any:
    """Where a signed-in officer starts: the first page of their main role."""
    user = g.get("user")
    if user is None:
        return redirect(url_for("admin.login"))
    if user.has("receptionist"):
        return redirect(url_for("admin.receive"))
    if user.has("officer", "head_of_unit", "leader"):
        return redirect(url_for("admin.inbox"))
    if user.has("designer"):
        return redirect(url_for("admin.catalog"))
    if user.has("supervisor"):
        return redirect(url_for("admin.supervision"))
    return redirect(url_for("admin.dossiers"))
