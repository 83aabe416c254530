"""Designers: the procedure catalog, a procedure's diagram and metadata, uploading
diagrams and completing the metadata a file leaves open."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Mapping

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from engine import designer as engine_designer
from engine import services, worklist
from engine.core import bpmn
from engine.errors import Conflict, DeploymentRejected, InvalidRequest
from engine.organisation import ROLES
from engine.persistence.models import ProcedureFile

from . import bp, diagram
from .web import PER_PAGE, current_user, db, login_required, now, page_arg

#: Engine problem messages (English) → Vietnamese, by pattern.
_PROBLEMS = [
    (r"Lane '(.+)' has no role", "Làn “{0}” chưa có vai trò: thêm thuộc tính mở rộng 'role' (ví dụ officer, leader, receptionist)."),
    (r"Step '(.+)' has no allotment", "Bước “{0}” chưa có thời gian phân bổ: thêm thuộc tính 'allotment' (ví dụ '3 ngày làm việc')."),
    (r"Step '(.+)' is in no lane", "Bước “{0}” không nằm trong làn nào: đặt bước vào làn của vai trò thực hiện."),
    (r"No legal deadline", "Chưa có thời hạn giải quyết: thêm thuộc tính 'deadline' cho quy trình (ví dụ '15 ngày làm việc' hoặc 'trong ngày')."),
    (r"No procedure code", "Chưa có mã thủ tục: thêm thuộc tính 'code' (mã TTHC, ví dụ 1.001193) cho quy trình chính."),
    (r"The procedure has no name", "Thủ tục chưa có tên: đặt tên cho quy trình hoặc thêm thuộc tính 'name'."),
    (r"is not marked executable", "Quy trình chưa được đánh dấu thực thi được (isExecutable=\"true\"): chọn 'Executable' trong công cụ vẽ."),
    (r"not well-formed XML", "Tệp không phải XML hợp lệ."),
    (r"has no start event", "Quy trình thiếu sự kiện bắt đầu."),
    (r"has no end event", "Quy trình thiếu sự kiện kết thúc."),
    (r"start events; the engine needs exactly one", "Quy trình có nhiều sự kiện bắt đầu; chỉ được có một."),
    (r"Not valid BPMN 2.0", "Tệp không đúng lược đồ BPMN 2.0."),
    (r"without a condition and is not the gateway's default", "Nhánh ra khỏi cổng quyết định chưa có điều kiện và không phải nhánh mặc định."),
    (r"DOCTYPE", "Tệp không được chứa khai báo DOCTYPE (DTD, thực thể XML)."),
    (r"allotments .* add up|exceeds|longer than the", "Tổng thời gian phân bổ các bước vượt quá thời hạn giải quyết."),
    (r"not supported", "Phần tử này không được công cụ xử lý hỗ trợ và sẽ không chạy; hãy bỏ hoặc thay thế."),
    (r"Allotment of step '(.+)':", "Thời gian phân bổ của bước “{0}” không đúng định dạng (ví dụ '3 ngày làm việc')."),
    (r"Deadline:", "Thời hạn giải quyết không đúng định dạng (ví dụ '15 ngày làm việc')."),
    (r"not among the uploaded files", "Quy trình được gọi chưa có trong các tệp tải lên; tải lên cùng lúc."),
    (r"is not allowed", "Biểu thức điều kiện hoặc kịch bản không được phép (chỉ dùng ngôn ngữ biểu thức an toàn)."),
    (r"Message flows between pools", "Luồng thông điệp giữa các bể không được xử lý; mô hình hóa việc chuyển giao bằng làn và luồng tuần tự."),
]
_KEY_LABELS = {"code": "Mã thủ tục (code)", "deadline": "Thời hạn giải quyết (deadline)", "role": "Vai trò (role)",
               "allotment": "Thời gian phân bổ (allotment)"}
_KIND_LABELS = {"process": "Quy trình", "lane": "Làn", "step": "Bước"}


def problem_text(message: str) -> str:
    """The Vietnamese wording of an engine problem (the original stays in the title attribute)."""
    for pattern, text in _PROBLEMS:
        match = re.search(pattern, message)
        if match:
            return text.format(*match.groups())
    return f"Sơ đồ có lỗi cần sửa (chi tiết kỹ thuật: {message})"


@bp.get("/thu-tuc")
def catalog() -> Any:
    """Procedures with their versions, searchable by code or name (public, as in the API)."""
    query = request.args.get("q", "")
    page = worklist.procedure_catalog(db(), query, page_arg(), PER_PAGE)
    return render_template("admin/catalog.html", page=page, q=query)


@bp.get("/thu-tuc/<code>")
def procedure(code: str) -> Any:
    """A version of a procedure: its diagram and metadata (public, as in the API)."""
    session = db()
    try:
        number = int(request.args.get("phien-ban", "0")) or None
    except ValueError:
        number = None
    version = services.get_version(session, code, number)
    procedure_row = version.procedure
    main = worklist.main_file(session, version)
    allotments = {k: v["allotment"] for k, v in version.meta.get("steps", {}).items() if v.get("allotment")}
    svg = diagram.render(main[1], process_id=version.process_id, badges=allotments) if main else None
    files = session.scalars(select(ProcedureFile.filename).where(ProcedureFile.version_id == version.id)).all()
    steps = list(version.meta.get("steps", {}).values())
    lanes: dict[str, dict[str, Any]] = {}
    for step in steps:
        key = step.get("lane_id") or step.get("lane_name") or "—"
        lanes.setdefault(key, {"name": step.get("lane_name") or "—", "role": step.get("role"), "agency": step.get("agency"), "steps": []})
        lanes[key]["steps"].append(step["name"])
    return render_template("admin/procedure.html", procedure=procedure_row, version=version, meta=version.meta, steps=steps,
                           lanes=list(lanes.values()), svg=svg, files=files,
                           documents=worklist.procedure_documents(session, version))


# --------------------------------------------------------------------------- upload


def _uploaded() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i, upload in enumerate(request.files.getlist("files")):
        if not upload or not upload.filename:
            continue
        name = re.sub(r"[^\w.\-]+", "_", upload.filename.rsplit("/", 1)[-1])[:200] or f"tep-{i}.bpmn"
        files[name] = upload.read()
    return files


def _carried() -> dict[str, bytes]:
    """The files carried in the problem page's hidden fields."""
    names = request.form.getlist("ten_tep")
    contents = request.form.getlist("noi_dung")
    if not names or len(names) != len(contents):
        raise InvalidRequest("Không có tệp nào; vui lòng tải lên lại.")
    try:
        return {name[:200]: base64.b64decode(content, validate=True) for name, content in zip(names, contents)}
    except (binascii.Error, ValueError) as err:
        raise InvalidRequest("Dữ liệu tệp không hợp lệ; vui lòng tải lên lại.") from err


def _problems_page(files: Mapping[str, bytes], problems: list[bpmn.Problem], highlight: str | None = None,
                   highlight_file: str | None = None, values: Mapping[str, str] | None = None, status: int = 422) -> Any:
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    diagrams = []
    for index, (name, content) in enumerate(files.items()):
        if highlight and (highlight_file in (None, name)):
            marked = [highlight]
        else:
            marked = sorted({p.element_id for p in errors if p.element_id and p.file == name})
        diagrams.append({"index": index, "name": name, "svg": diagram.render(content, highlight=marked)})
    gaps = engine_designer.find_gaps(files)
    file_index = {name: i for i, name in enumerate(files)}
    return render_template(
        "admin/upload_problems.html",
        errors=[(i, p, problem_text(p.message), file_index.get(p.file or "", 0)) for i, p in enumerate(errors, 1)],
        warnings=warnings, diagrams=diagrams,
        carried=[(name, base64.b64encode(content).decode()) for name, content in files.items()],
        gaps=[(g, file_index[g.file]) for g in gaps], key_labels=_KEY_LABELS, kind_labels=_KIND_LABELS, roles=ROLES,
        values=values or {}, highlight=highlight, problem_text=problem_text,
    ), status


def _deploy(files: Mapping[str, bytes]) -> Any:
    try:
        result = services.deploy(db(), files, actor=current_user().username, now=now())
    except DeploymentRejected as err:
        flash(f"Sơ đồ chưa triển khai được: có {sum(p.severity == 'error' for p in err.problems)} lỗi cần sửa.", "error")
        return _problems_page(files, err.problems)
    except Conflict:
        flash("Thủ tục vừa được người khác triển khai cùng lúc; vui lòng thử lại.", "error")
        return redirect(url_for("admin.upload"))
    if result.created:
        flash(f"Đã triển khai thủ tục {result.code} — {result.name}, phiên bản {result.version}.", "success")
    else:
        flash(f"Nội dung không đổi: thủ tục {result.code} vẫn ở phiên bản {result.version}.", "info")
    return redirect(url_for("admin.procedure", code=result.code, **{"phien-ban": result.version}))


@bp.route("/thu-tuc/tai-len", methods=["GET", "POST"])
@login_required("designer")
def upload() -> Any:
    """Upload one or more BPMN files: a new version, or the problems to fix."""
    if request.method == "GET":
        return render_template("admin/upload.html")
    files = _uploaded()
    if not files:
        flash("Chọn ít nhất một tệp BPMN để tải lên.", "error")
        return render_template("admin/upload.html"), 400
    return _deploy(files)


@bp.post("/thu-tuc/tai-len/xem")
@login_required("designer")
def upload_show() -> Any:
    """The problem page again, with one element highlighted on its diagram."""
    files = _carried()
    problems = services.validate(files)
    element = request.form.get("phan_tu", "")[:255] or None
    return _problems_page(files, problems, highlight=element, highlight_file=request.form.get("tep") or None)


@bp.post("/thu-tuc/tai-len/bo-sung")
@login_required("designer")
def upload_fill() -> Any:
    """Write the values typed in for open metadata into the files, then deploy them."""
    files = _carried()
    names = list(files)
    values: dict[str, dict[str, dict[str, str]]] = {}
    typed: dict[str, str] = {}
    for field, raw in request.form.items():
        match = re.fullmatch(r"gt-(\d+)-(.+)-(code|deadline|role|allotment)", field)
        if not match or not raw.strip():
            continue
        typed[field] = raw
        index, element_id, key = int(match.group(1)), match.group(2), match.group(3)
        if index >= len(names):
            continue
        values.setdefault(names[index], {}).setdefault(element_id, {})[key] = raw
    if not values:
        flash("Chưa nhập giá trị nào để bổ sung.", "error")
        return _problems_page(files, services.validate(files), values=typed, status=400)
    try:
        filled = engine_designer.fill_files(files, values)
    except InvalidRequest as err:
        flash(f"Không bổ sung được: {err.message}", "error")
        return _problems_page(files, services.validate(files), values=typed, status=400)
    return _deploy(filled)
