"""Citizens, without signing in: look a dossier up by code and secret (also from the
QR code of form 01: ``/tra-cuu?ma=CODE``), see its progress, rate it, send feedback."""

from __future__ import annotations

from typing import Any

from flask import flash, render_template, request
from sqlalchemy import select
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from engine import public, worklist
from engine.auth import TooManyAttempts
from engine.errors import EngineError
from engine.persistence.models import Dossier, ProcedureVersion

from api.public import guarded

from . import bp, diagram
from .web import PageForm, db, error_page, now, say


class LookupForm(PageForm):
    ma = StringField("Mã hồ sơ", validators=[DataRequired("Nhập mã hồ sơ."), Length(max=64)])
    ma_bi_mat = StringField("Mã bí mật (4 số cuối điện thoại đã đăng ký)", validators=[DataRequired("Nhập mã bí mật."), Length(max=10)])


class FeedbackForm(PageForm):
    subject = StringField("Tiêu đề", validators=[DataRequired("Nhập tiêu đề."), Length(max=200)])
    content = TextAreaField("Nội dung phản ánh, kiến nghị", validators=[DataRequired("Nhập nội dung."), Length(max=5000)])
    name = StringField("Họ và tên (không bắt buộc)", validators=[Optional(), Length(max=200)])
    contact = StringField("Điện thoại hoặc thư điện tử để trả lời (không bắt buộc)", validators=[Optional(), Length(max=200)])
    ma = StringField("Mã hồ sơ liên quan (không bắt buộc)", validators=[Optional(), Length(max=64)])
    ma_bi_mat = StringField("Mã bí mật của hồ sơ", validators=[Optional(), Length(max=10)])


def _result(code: str, secret: str, status: int = 200) -> Any:
    """The public view of a verified dossier: progress on the diagram, due date, rating form."""
    session = db()
    found = guarded(lambda: public.verify(session, code, secret))
    view = public.public_view(session, found.id)
    steps = worklist.dossier_steps(session, found.id)
    states, titles = diagram.step_overlay(steps, now())
    version_id = session.scalar(select(Dossier.procedure_version_id).where(Dossier.id == found.id))
    version = session.get(ProcedureVersion, version_id)
    main = worklist.main_file(session, version)
    svg = diagram.render(main[1], process_id=version.process_id, states=states, titles=titles) if main else None
    return render_template("admin/lookup_result.html", v=view, svg=svg, code=code, secret=secret,
                           criteria=public.CRITERIA, scale=public.SCALE), status


@bp.route("/tra-cuu", methods=["GET", "POST"])
def lookup() -> Any:
    """Look a dossier up by its code and secret; the same answer for an unknown code and a wrong secret."""
    form = LookupForm(ma=request.args.get("ma", ""))
    if request.method == "POST" and form.validate_on_submit():
        try:
            return _result(form.ma.data.strip(), form.ma_bi_mat.data.strip())
        except TooManyAttempts as err:
            form.ma_bi_mat.data = ""
            flash(f"Ông/bà đã nhập sai quá nhiều lần; vui lòng thử lại sau {err.retry_after} giây.", "error")
            return render_template("admin/lookup.html", form=form), 429
        except public.LookupFailed:
            form.ma_bi_mat.data = ""  # never echoed back
            flash(public.LOOKUP_FAILED + ".", "error")
            return render_template("admin/lookup.html", form=form), 404
    return render_template("admin/lookup.html", form=form), 400 if request.method == "POST" else 200


@bp.post("/tra-cuu/danh-gia")
def rate() -> Any:
    """Rate a returned dossier once (criteria of Decision 766/QĐ-TTg)."""
    code = request.form.get("ma", "")[:64]
    secret = request.form.get("ma_bi_mat", "")[:10]
    scores = {key: request.form.get(f"diem_{key}", "") for key in public.CRITERIA}
    comment = request.form.get("y_kien", "").strip()[:2000] or None
    try:
        guarded(lambda: public.rate(db(), code, secret, scores, comment, now()))
    except TooManyAttempts:
        return error_page(429)
    except public.LookupFailed:
        flash(public.LOOKUP_FAILED + ".", "error")
        return render_template("admin/lookup.html", form=LookupForm(ma=code)), 404
    except EngineError as err:
        db().rollback()
        flash(say(err, "ghi nhận đánh giá"), "error")
        return _result(code, secret, 400)
    flash("Cảm ơn ông/bà đã đánh giá mức độ hài lòng.", "success")
    return _result(code, secret)


@bp.route("/phan-anh", methods=["GET", "POST"])
def feedback() -> Any:
    """Send a phản ánh, kiến nghị, optionally about one's dossier."""
    form = FeedbackForm(ma=request.args.get("ma", ""))
    if request.method == "POST" and form.validate_on_submit():
        code = (form.ma.data or "").strip() or None
        try:
            guarded(lambda: public.send_feedback(
                db(), form.subject.data.strip(), form.content.data.strip(), now(), name=form.name.data or None,
                contact=form.contact.data or None, dossier_code=code, secret=(form.ma_bi_mat.data or "").strip() or None))
        except TooManyAttempts:
            return error_page(429)
        except public.LookupFailed:
            flash(public.LOOKUP_FAILED + ".", "error")
            return render_template("admin/feedback.html", form=form), 404
        flash("Đã gửi phản ánh, kiến nghị. Cơ quan có thẩm quyền sẽ xem xét và trả lời.", "success")
        return render_template("admin/feedback.html", form=FeedbackForm(formdata=None), sent=True)
    return render_template("admin/feedback.html", form=form), 400 if request.method == "POST" else 200
