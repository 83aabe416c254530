"""Receptionists and every officer's view of a dossier: receive, list, show, print
forms, return the result, withdrawal, supplements and the apology."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select
import wtforms
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from engine import auth, documents, lifecycle, services, worklist
from engine.core.calendar import VN_TZ
from engine.errors import EngineError
from engine.persistence.models import Agency, Dossier, Officer, Procedure, ProcedureVersion

from . import bp, diagram
from .web import CHANNEL_LABELS, PER_PAGE, PageForm, current_user, db, login_required, now, page_arg, say

HANDLING_ROLES = ("receptionist", "officer", "head_of_unit", "leader")
HISTORY_PAGE = 50
ACTION_LABELS = {
    "dossier.receive": "Tiếp nhận hồ sơ",
    "dossier.refuse": "Từ chối tiếp nhận",
    "dossier.status": "Chuyển trạng thái",
    "dossier.pause": "Tạm dừng (yêu cầu bổ sung / nghĩa vụ tài chính)",
    "dossier.resume": "Tiếp tục xử lý",
    "dossier.apology": "Xin lỗi và hẹn lại ngày trả kết quả",
    "dossier.rating": "Công dân đánh giá",
    "dossier.feedback": "Công dân phản ánh, kiến nghị",
    "task.ready": "Bước sẵn sàng xử lý",
    "task.claim": "Nhận xử lý bước",
    "task.unclaim": "Trả bước về hàng chờ",
    "task.complete": "Hoàn thành bước",
    "task.return": "Trả lại bước trước",
    "task.cancel": "Hủy bước",
    "task.reassign": "Giao lại bước",
    "task.escalate": "Nhắc việc, báo cáo cấp trên",
}


class ReceiveForm(PageForm):
    desk = SelectField("Bộ phận tiếp nhận", validators=[DataRequired()])
    home = SelectField("Cơ quan có thẩm quyền giải quyết", validators=[DataRequired()])
    name = StringField("Họ và tên người nộp", validators=[DataRequired("Nhập họ và tên người nộp."), Length(max=200)])
    id_number = StringField("Số định danh cá nhân / CCCD", validators=[Optional(), Regexp(r"^\d{9,12}$", message="Số CCCD gồm 9 đến 12 chữ số.")])
    phone = StringField("Số điện thoại", validators=[DataRequired("Nhập số điện thoại (dùng để tra cứu hồ sơ)."), Regexp(r"^\+?[\d .]{8,20}$", message="Số điện thoại không hợp lệ.")])
    email = StringField("Thư điện tử", validators=[Optional(), Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Địa chỉ thư điện tử không hợp lệ."), Length(max=200)])
    address = StringField("Địa chỉ", validators=[Optional(), Length(max=300)])
    channel = RadioField("Hình thức nộp", default="in_person")
    other_documents = TextAreaField("Giấy tờ khác (mỗi dòng một loại)", validators=[Optional(), Length(max=3000)])
    refusal_reasons = TextAreaField("Lý do từ chối (mỗi dòng một lý do)", validators=[Optional(), Length(max=3000)])


def _choices(pairs: Any) -> list[Any]:
    """Select options (WTForms 3.3 prefers SelectChoice objects to tuples)."""
    make = getattr(wtforms, "SelectChoice", None)
    return [make(value, label) if make else (value, label) for value, label in pairs]


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()][:50]


@bp.route("/tiep-nhan", methods=["GET", "POST"])
@login_required("receptionist")
def receive() -> Any:
    """Pick a procedure (server-side search), fill in the applicant and the documents, receive or refuse."""
    session = db()
    user = current_user()
    code = request.values.get("thu-tuc", "").strip()
    query = request.args.get("q", "")
    if not code:
        return render_template("admin/receive_pick.html", q=query, page=worklist.procedure_catalog(session, query, page_arg(), PER_PAGE))
    try:
        version = services.get_version(session, code)
    except EngineError:
        abort(404)
    checklist = worklist.procedure_documents(session, version)
    form = ReceiveForm()
    desks = user.agencies_with("receptionist")
    form.desk.choices = _choices((c, n) for _, c, n in desks)
    form.channel.choices = _choices(CHANNEL_LABELS.items())
    agencies = session.execute(select(Agency.code, Agency.name).where(Agency.active.is_(True)).order_by(Agency.name)).all()
    form.home.choices = _choices(agencies)
    if request.method == "GET":
        form.desk.data = desks[0][1] if desks else None
        form.home.data = form.desk.data
    if request.method == "POST" and form.validate_on_submit():
        desk = session.scalar(select(Agency).where(Agency.code == form.desk.data))
        auth.require(user.identity, "receptionist", agency_id=desk.id if desk else -1)
        applicant = {"name": form.name.data.strip(), "phone": form.phone.data.strip(), "email": (form.email.data or "").strip() or None}
        if request.form.get("hanh_dong") == "tu_choi":
            reasons = _lines(form.refusal_reasons.data)
            if not reasons:
                flash("Ghi ít nhất một lý do từ chối tiếp nhận.", "error")
                return render_template("admin/receive.html", form=form, version=version, checklist=checklist), 400
            try:
                record = lifecycle.refuse(session, code, reasons, user.username, now(), agency_code=form.desk.data, applicant=applicant)
            except EngineError as err:
                flash(say(err, "từ chối tiếp nhận"), "error")
                return render_template("admin/receive.html", form=form, version=version, checklist=checklist), 400
            flash(f"Đã từ chối tiếp nhận hồ sơ {record.code}. In Phiếu từ chối (mẫu 03) giao cho người nộp.", "success")
            return redirect(url_for("admin.dossier", code=record.code))
        chosen = [d for i, d in enumerate(checklist) if request.form.get(f"giay_to_{i}")]
        docs = [{"name": d, "copies": 1} for d in chosen + _lines(form.other_documents.data)]
        data = {
            "nguoi_nop": {"ho_ten": applicant["name"], "so_dinh_danh": form.id_number.data or None, "dia_chi": form.address.data or None},
            "documents": docs,
        }
        try:
            record = services.start_dossier(
                session, code, data, actor=user.username, now=now(), agency_code=form.desk.data,
                home_agency_code=form.home.data, applicant=applicant, channel=form.channel.data,
            )
        except EngineError as err:
            flash(say(err, "tiếp nhận hồ sơ"), "error")
            return render_template("admin/receive.html", form=form, version=version, checklist=checklist), 400
        flash(f"Đã tiếp nhận hồ sơ {record.code}. In Giấy tiếp nhận và hẹn trả kết quả (mẫu 01) giao cho người nộp.", "success")
        return redirect(url_for("admin.dossier", code=record.code))
    status = 400 if request.method == "POST" else 200
    return render_template("admin/receive.html", form=form, version=version, checklist=checklist), status


@bp.get("/ho-so")
@login_required()
def dossiers() -> Any:
    """Dossiers the officer may see, newest first; search by code or applicant."""
    query = request.args.get("q", "")
    try:
        status = int(request.args.get("trang-thai", "0")) or None
    except ValueError:
        status = None
    page = worklist.dossier_list(db(), current_user().identity, query, page_arg(), PER_PAGE, now(), status=status)
    return render_template("admin/dossiers.html", page=page, q=query, status=status)


def _dossier(code: str, *roles: str) -> Dossier:
    """The dossier if the officer may see it (and holds one of ``roles`` at an agency handling it)."""
    session = db()
    dossier = services.get_dossier(session, code)
    identity = current_user().identity
    if not worklist.can_see(session, identity, dossier):
        abort(403)
    if roles and not worklist.dossier_agencies(session, dossier) & identity.agencies(*roles):
        abort(403)
    return dossier


@bp.get("/ho-so/<code>")
@login_required()
def dossier(code: str) -> Any:
    """A dossier: status, due date, diagram with its progress, steps, forms, history and actions."""
    session = db()
    found = _dossier(code)
    version = session.get(ProcedureVersion, found.procedure_version_id)
    procedure = session.get(Procedure, version.procedure_id)
    steps = worklist.dossier_steps(session, found.id)
    states, titles = diagram.step_overlay(steps, now())
    main = worklist.main_file(session, version)
    links = {s.step_id: url_for("admin.task", task_id=s.id) for s in steps if s.state in ("ready", "claimed")}
    svg = diagram.render(main[1], process_id=version.process_id, states=states, titles=titles, links=links) if main else None
    events = services.dossier_history(session, code)
    history = worklist.Paged(events[(page_arg() - 1) * HISTORY_PAGE:page_arg() * HISTORY_PAGE], page_arg(), HISTORY_PAGE, len(events))
    actors = {e.actor for e in history.items}
    people = dict(session.execute(select(Officer.username, Officer.full_name).where(Officer.username.in_(actors))).all()) if actors else {}
    people.setdefault("applicant", "Người nộp hồ sơ")
    step_names = {s.step_id: s.step_name for s in steps}
    codes = dict(session.execute(select(Agency.id, Agency.code)).all())
    identity = current_user().identity
    handling = worklist.dossier_agencies(session, found)
    can = {
        "desk": bool(handling & identity.agencies("receptionist")),
        "handle": bool(handling & identity.agencies(*HANDLING_ROLES)),
        "lead": bool(handling & identity.agencies("leader", "head_of_unit")),
        "pay": bool(version.meta.get("financial_obligation")),
    }
    actions = {e.action for e in events}
    forms = [("01", "Giấy tiếp nhận và hẹn trả kết quả")] if found.status != 3 else [("03", "Phiếu từ chối tiếp nhận")]
    if "dossier.pause" in actions:
        forms.append(("02", "Phiếu yêu cầu bổ sung, hoàn thiện hồ sơ"))
    if "dossier.apology" in actions:
        forms.append(("04", "Phiếu xin lỗi và hẹn lại ngày trả kết quả"))
    forms.append(("05", "Phiếu kiểm soát quá trình giải quyết hồ sơ"))
    signer_rows = worklist.signers(session, handling)
    return render_template(
        "admin/dossier.html", d=found, version=version, procedure=procedure, steps=steps, svg=svg, history=history,
        action_labels=ACTION_LABELS, can=can, forms=forms, signers=signer_rows,
        agency_codes=codes, now=now(), people=people, step_names=step_names,
    )


@bp.get("/ho-so/<code>/mau/<form>")
@login_required()
def dossier_form(code: str, form: str) -> Any:
    """Form 01–05 of a dossier, as the printable HTML page (PDF with ?dinh-dang=pdf)."""
    _dossier(code)
    if form not in ("01", "02", "03", "04", "05"):
        abort(404)
    public = current_app.config["MOTCUA"].public_url
    as_pdf = request.args.get("dinh-dang") == "pdf"
    try:
        content = documents.render(db(), code, form, public, pdf=as_pdf)
    except EngineError:
        abort(404)
    except (ImportError, OSError):
        flash("Máy chủ chưa cài đặt thư viện in PDF; dùng bản HTML để in.", "error")
        return redirect(url_for("admin.dossier_form", code=code, form=form))
    return Response(content, mimetype="application/pdf" if as_pdf else "text/html")


def _act(code: str, what: str, run: Any) -> Any:
    try:
        run()
    except EngineError as err:
        flash(say(err, what), "error")
    else:
        flash(f"Đã {what}.", "success")
    return redirect(url_for("admin.dossier", code=code))


@bp.post("/ho-so/<code>/tra-ket-qua")
@login_required("receptionist")
def return_result(code: str) -> Any:
    _dossier(code, "receptionist")
    channel = request.form.get("kenh", "desk")
    return _act(code, "trả kết quả", lambda: lifecycle.return_result(db(), code, channel, current_user().username, now()))


@bp.post("/ho-so/<code>/rut-ho-so")
@login_required("receptionist")
def withdraw(code: str) -> Any:
    _dossier(code, "receptionist")
    reason = request.form.get("ly_do", "")[:1000]
    return _act(code, "ghi nhận việc rút hồ sơ", lambda: lifecycle.withdraw(db(), code, reason, current_user().username, now()))


@bp.post("/ho-so/<code>/yeu-cau-bo-sung")
@login_required(*HANDLING_ROLES)
def request_supplement(code: str) -> Any:
    _dossier(code, *HANDLING_ROLES)
    items = _lines(request.form.get("noi_dung"))
    if not items:
        flash("Ghi rõ nội dung cần bổ sung (mỗi dòng một nội dung).", "error")
        return redirect(url_for("admin.dossier", code=code))
    return _act(code, "yêu cầu bổ sung hồ sơ", lambda: lifecycle.request_supplement(db(), code, items, current_user().username, now()))


@bp.post("/ho-so/<code>/yeu-cau-nghia-vu-tai-chinh")
@login_required(*HANDLING_ROLES)
def request_payment(code: str) -> Any:
    _dossier(code, *HANDLING_ROLES)
    items = _lines(request.form.get("noi_dung"))
    if not items:
        flash("Ghi rõ các khoản phí, lệ phí, thuế phải nộp (mỗi dòng một khoản).", "error")
        return redirect(url_for("admin.dossier", code=code))
    return _act(code, "yêu cầu thực hiện nghĩa vụ tài chính", lambda: lifecycle.request_payment(db(), code, items, current_user().username, now()))


@bp.post("/ho-so/<code>/dung-xu-ly")
@login_required("leader", "head_of_unit")
def stop(code: str) -> Any:
    _dossier(code, "leader", "head_of_unit")
    reason = request.form.get("ly_do", "")[:1000]
    return _act(code, "dừng xử lý hồ sơ", lambda: lifecycle.stop(db(), code, reason, current_user().username, now()))


@bp.post("/ho-so/<code>/da-bo-sung")
@login_required(*HANDLING_ROLES)
def resume(code: str) -> Any:
    _dossier(code, *HANDLING_ROLES)
    return _act(code, "tiếp tục xử lý hồ sơ", lambda: lifecycle.resume(db(), code, current_user().username, now()))


@bp.post("/ho-so/<code>/xin-loi")
@login_required(*HANDLING_ROLES)
def apology(code: str) -> Any:
    """The late agency's apology with a new appointment (form 04), signed by its leader."""
    _dossier(code, *HANDLING_ROLES)
    try:
        day = datetime.strptime(request.form.get("ngay_hen", ""), "%Y-%m-%d").date()
        at = datetime.strptime(request.form.get("gio_hen", "") or "16:00", "%H:%M").time()
    except ValueError:
        flash("Ngày hẹn mới không hợp lệ (chọn ngày và giờ).", "error")
        return redirect(url_for("admin.dossier", code=code))
    signer = request.form.get("nguoi_ky", "")
    username, _, agency_code = signer.partition("|")
    reason = request.form.get("ly_do", "")[:1000]
    new_due = datetime.combine(day, time(at.hour, at.minute), tzinfo=VN_TZ)
    return _act(code, "lập phiếu xin lỗi và hẹn lại ngày trả kết quả",
                lambda: lifecycle.issue_apology(db(), code, new_due, reason, agency_code, username, current_user().username, now()))
