"""Supervisors: on-time figures and their trend, load per agency, bottlenecks of a
procedure on its diagram, drill-down to the dossiers behind a number, the
periodic reports, satisfaction, and the what-if replay.

Every page is scoped to the agencies the signed-in supervisor may see (their
agency and those under it); ``co-quan`` narrows it to one of those.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from time import monotonic as time_now
from typing import Any
from urllib.parse import urlencode

from flask import Response, abort, render_template, request, url_for
from sqlalchemy import select

from engine import auth, exports, reports, services, whatif
from engine.core.calendar import VN_TZ
from engine.errors import EngineError, InvalidRequest
from engine.organisation import ROLE_LABELS, ROLES
from engine.persistence.models import Agency, Procedure, ProcedureFile

from . import bp, charts, diagram
from .web import current_user, db, login_required, now

SUPERVISOR = "supervisor"

#: Table names in download links → (title, on-time grouping or "satisfaction").
TABLES = {
    "co-quan": ("Kết quả giải quyết theo cơ quan", "agency"),
    "can-bo": ("Kết quả xử lý theo cán bộ", "officer"),
    "thu-tuc": ("Kết quả giải quyết theo thủ tục", "procedure"),
    "hai-long": ("Mức độ hài lòng theo cơ quan", "satisfaction"),
}
RANK_LABELS = {
    "late_share": "Tỷ lệ trễ hạn",
    "queue": "Hồ sơ đang chờ",
    "waiting": "Thời gian chờ nhận",
    "working": "Thời gian xử lý",
    "returns": "Số lần trả lại",
}
METRIC_LABELS = {
    "received": "Tiếp nhận", "carried_over": "Kỳ trước chuyển sang", "finished": "Đã giải quyết", "early": "Trước hạn",
    "on_time": "Đúng hạn", "late": "Trễ hạn", "in_progress": "Đang giải quyết", "in_time": "Trong hạn", "overdue": "Quá hạn",
    "withdrawn": "Rút hồ sơ", "cancelled": "Đã hủy", "queue": "Đang chờ", "queue_overdue": "Đang chờ, quá hạn",
    "returns_sent": "Trả lại bước trước", "returns_received": "Bị trả lại",
}


# --------------------------------------------------------------------------- period and scope


def _day(name: str) -> date | None:
    text = (request.values.get(name) or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"Ngày '{text[:20]}' không hợp lệ; nhập theo dạng năm-tháng-ngày, ví dụ 2026-07-01.") from None


def _period() -> tuple[datetime, datetime, date, date]:
    """[from, to) of the request: ``tu``/``den`` (to inclusive), by default the last six months."""
    today = now().astimezone(VN_TZ).date()
    first = _day("tu") or (today.replace(day=1) - timedelta(days=150)).replace(day=1)
    last = _day("den") or today
    if last < first:
        raise InvalidRequest("Ngày kết thúc phải sau ngày bắt đầu.")
    start = datetime.combine(first, time(0), VN_TZ)
    end = min(datetime.combine(last + timedelta(days=1), time(0), VN_TZ), max(now(), start + timedelta(seconds=1)))
    return start, end, first, last


def _scope() -> tuple[frozenset[int], str | None, list[tuple[str, str]]]:
    """The agencies in view, the chosen agency code, and the choices (code, name)."""
    session = db()
    visible = auth.visible_agencies(session, current_user().identity)
    code = (request.values.get("co-quan") or "").strip() or None
    scope = reports.scope_of(session, code, visible)
    assert scope is not None
    choices = [(row.code, row.name) for row in session.execute(
        select(Agency.code, Agency.name).where(Agency.id.in_(visible)).order_by(Agency.code))]
    return scope, code, choices


def _query(**changes: Any) -> str:
    """The current page's query string with ``changes``."""
    values = {k: v for k, v in request.values.items() if k != "csrf_token"}
    values.update({k: v for k, v in changes.items() if v is not None})
    return urlencode(values)


def _months(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    out = []
    cursor = start.replace(day=1)
    while cursor < end:
        following = (cursor + timedelta(days=32)).replace(day=1)
        out.append((f"{cursor:%m/%Y}", max(cursor, start), min(following, end)))
        cursor = following
    return out


def _sum(rows: list[dict[str, Any]], *keys: str) -> dict[str, int]:
    return {key: sum(int(row.get(key) or 0) for row in rows) for key in keys}


def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


# --------------------------------------------------------------------------- dashboard


@bp.get("/giam-sat")
@login_required(SUPERVISOR)
def supervision() -> str:
    """The dashboard: figures of the period, trend of the on-time rate, load per agency."""
    session = db()
    start, end, first, last = _period()
    scope, code, choices = _scope()
    clock = now()
    by_agency = reports.on_time(session, start, end, "agency", clock, agencies=scope)
    by_procedure = reports.on_time(session, start, end, "procedure", clock, agencies=scope)
    by_officer = reports.on_time(session, start, end, "officer", clock, agencies=scope)
    satisfaction = reports.satisfaction(session, start, end, clock, agencies=scope, reasons=5)
    totals = _sum(by_agency, "received", "finished", "early", "on_time", "late", "in_time", "overdue", "in_progress")
    totals["rate"] = _rate(totals["early"] + totals["on_time"], totals["finished"])
    trend_labels, trend_values = [], []
    for label, month_start, month_end in _months(start, end):
        trend_labels.append(label)
        trend_values.append(_month_rate(session, scope, month_start, month_end, clock))
    busy = sorted(by_agency, key=lambda r: -(r["in_time"] + r["overdue"]))[:12]
    return render_template(
        "admin/supervision.html",
        first=first, last=last, code=code, choices=choices, totals=totals,
        by_agency=by_agency, by_procedure=by_procedure,
        late_officers=[r for r in by_officer if r.get("flagged")],
        satisfaction=satisfaction,
        trend=charts.line("Tỷ lệ giải quyết đúng hạn theo tháng (%)", trend_labels, {"Đúng hạn và trước hạn": trend_values}, percent=True),
        load=charts.bars("Hồ sơ đang giải quyết theo cơ quan", [r["agency_name"] for r in busy],
                         {"Trong hạn": [r["in_time"] for r in busy], "Quá hạn": [r["overdue"] for r in busy]}),
        query=_query, TABLES=TABLES, LATE_FLAG=reports.LATE_FLAG,
    )


#: On-time rates of whole past months: (database, scope, month start, month end) → (rate, computed at).
_PAST_MONTHS: dict[tuple[str, frozenset[int], datetime, datetime], tuple[float | None, float]] = {}
_PAST_MONTH_TTL = 600.0


def _month_rate(session: Any, scope: frozenset[int], start: datetime, end: datetime, clock: datetime) -> float | None:
    """The on-time rate of dossiers finished in [start, end); a month already over is kept for ten minutes."""
    key = (str(session.get_bind().url), scope, start, end)
    cached = _PAST_MONTHS.get(key)
    if end <= clock and cached is not None and time_now() - cached[1] < _PAST_MONTH_TTL:
        return cached[0]
    month = _sum(reports.on_time(session, start, end, "agency", clock, agencies=scope), "finished", "early", "on_time")
    rate = _rate(month["early"] + month["on_time"], month["finished"])
    if end <= clock:
        if len(_PAST_MONTHS) > 1000:
            _PAST_MONTHS.clear()
        _PAST_MONTHS[key] = (rate, time_now())
    return rate


@bp.get("/giam-sat/tai-ve")
@login_required(SUPERVISOR)
def supervision_download() -> Response:
    """A dashboard table as CSV or Excel."""
    table, kind = request.args.get("bang", ""), request.args.get("dinh-dang", "csv")
    if table not in TABLES or kind not in ("csv", "xlsx"):
        abort(404)
    session = db()
    start, end, first, last = _period()
    scope, _code, _choices = _scope()
    title, group = TABLES[table]
    if group == "satisfaction":
        rows = [{k: v for k, v in r.items() if k != "reasons"} for r in reports.satisfaction(session, start, end, now(), agencies=scope)]
    else:
        rows = reports.on_time(session, start, end, group, now(), agencies=scope)
    content = exports.rows_csv(rows) if kind == "csv" else exports.rows_xlsx(title, rows)
    mimetype = "text/csv; charset=utf-8" if kind == "csv" else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    response = Response(content, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{table}-{first:%Y%m%d}-{last:%Y%m%d}.{kind}"'
    return response


# --------------------------------------------------------------------------- bottlenecks


def _procedures() -> list[tuple[str, str]]:
    return [(row.code, row.name) for row in db().execute(select(Procedure.code, Procedure.name).order_by(Procedure.code))]


@bp.get("/giam-sat/diem-nghen")
@login_required(SUPERVISOR)
def bottlenecks() -> str:
    """Where a procedure's dossiers pile up: a heat map on its diagram and a ranked list."""
    session = db()
    procedures = _procedures()
    chosen = request.args.get("thu-tuc") or (procedures[0][0] if procedures else None)
    rank_by = request.args.get("xep-theo", "late_share")
    if rank_by not in reports.RANK_BY:
        rank_by = "late_share"
    start, end, first, last = _period()
    scope, code, choices = _scope()
    result, diagrams = None, []
    if chosen:
        result = reports.bottlenecks(session, chosen, start, end, now(), agencies=scope, rank_by=rank_by)
        version = services.get_version(session, chosen)
        by_step: dict[str, dict[str, Any]] = {}
        for row in result["steps"]:  # a step at several agencies: add its numbers up
            seen = by_step.setdefault(row["step_id"], {"late": 0, "finished": 0, "queue": 0, "name": row["step_name"]})
            seen["late"] += row["late"]
            seen["finished"] += row["finished"]
            seen["queue"] += row["queue"]
        heat = {sid: (s["late"] / s["finished"]) if s["finished"] else 0.0 for sid, s in by_step.items()}
        badges = {sid: f"{round(100 * heat[sid])} % trễ · {s['queue']} chờ" for sid, s in by_step.items()}
        titles = {sid: f"{s['name']}: {s['late']}/{s['finished']} trễ hạn, {s['queue']} hồ sơ đang chờ" for sid, s in by_step.items()}
        links = {sid: url_for("admin.supervision_dossiers", **_drill_args("late", chosen, step=sid)) for sid in by_step}
        for file in session.scalars(select(ProcedureFile).where(ProcedureFile.version_id == version.id).order_by(ProcedureFile.id)):
            svg = diagram.render(file.content, heat=heat, badges=badges, titles=titles, links=links)
            if svg is not None:
                diagrams.append((file.filename, svg))
    return render_template(
        "admin/bottlenecks.html", procedures=procedures, chosen=chosen, result=result, diagrams=diagrams,
        rank_by=rank_by, RANK_LABELS=RANK_LABELS, first=first, last=last, code=code, choices=choices,
        drill=_drill_args, METRIC_LABELS=METRIC_LABELS,
    )


def _drill_args(metric: str, procedure: str | None = None, step: str | None = None, agency: str | None = None,
                group: str | None = None, key: str | None = None) -> dict[str, str]:
    args = {k: v for k, v in request.args.items() if k in ("tu", "den", "co-quan")}
    args["chi-tieu"] = metric
    for name, value in (("thu-tuc", procedure), ("buoc", step), ("co-quan-dong", agency), ("nhom", group), ("khoa", key)):
        if value:
            args[name] = value
    return args


@bp.get("/giam-sat/ho-so")
@login_required(SUPERVISOR)
def supervision_dossiers() -> str:
    """The dossiers behind one number of a report."""
    session = db()
    start, end, first, last = _period()
    scope, code, choices = _scope()
    metric = request.args.get("chi-tieu", "")
    procedure = request.args.get("thu-tuc") or None
    step = request.args.get("buoc") or None
    group = request.args.get("nhom") or None
    if group:
        if group not in reports.GROUPS or metric not in reports.ON_TIME_METRICS:
            abort(404)
        codes = reports.drill_down(session, start, end, group, request.args.get("khoa") or None, metric, now(),
                                   agencies=scope, procedure=procedure, step=step, limit=500)
    else:
        if not procedure or metric not in reports.BOTTLENECK_METRICS:
            abort(404)
        codes = reports.bottleneck_drill_down(session, procedure, start, end, metric, now(), step=step,
                                              agency=request.args.get("co-quan-dong") or None, agencies=scope, limit=500)
    return render_template("admin/supervision_dossiers.html", codes=codes, metric=METRIC_LABELS.get(metric, metric),
                           procedure=procedure, step=step, first=first, last=last)


# --------------------------------------------------------------------------- periodic reports


def _default_period() -> str:
    today = now().astimezone(VN_TZ).date()
    quarter = (today.month - 1) // 3
    return f"Q{quarter}-{today.year}" if quarter else f"Q4-{today.year - 1}"


@bp.get("/giam-sat/bao-cao")
@login_required(SUPERVISOR)
def periodic_report() -> Any:
    """The quarterly, 6-month, 9-month or yearly report, on screen or as Excel, PDF or CSV."""
    session = db()
    visible = auth.visible_agencies(session, current_user().identity)
    choices = [(row.code, row.name) for row in session.execute(
        select(Agency.code, Agency.name).where(Agency.id.in_(visible)).order_by(Agency.code))]
    code = request.args.get("co-quan") or next((c for c, _ in choices if c in _roots(session, visible)), choices[0][0] if choices else None)
    period = request.args.get("ky") or _default_period()
    if code is None:
        abort(403)
    report = reports.periodic_report(session, code, period, now(), visible=visible)
    kind = request.args.get("dinh-dang")
    if kind in ("xlsx", "pdf", "csv"):
        content = {"xlsx": exports.report_xlsx, "pdf": exports.report_pdf, "csv": exports.report_csv}[kind](report)
        mimetype = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "pdf": "application/pdf",
                    "csv": "text/csv; charset=utf-8"}[kind]
        response = Response(content, mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="bao-cao-{code}-{period}.{kind}"'
        return response
    year = now().astimezone(VN_TZ).year
    periods = [f"Q{q}-{y}" for y in (year, year - 1) for q in (1, 2, 3, 4)] + [f"H1-{year}", f"9M-{year}", str(year), str(year - 1)]
    return render_template("admin/periodic_report.html", report=report, code=code, period=period, choices=choices,
                           periods=periods, query=_query)


def _roots(session: Any, visible: frozenset[int] | set[int]) -> set[str]:
    """Codes of the visible agencies whose parent is not visible (the top of one's jurisdiction)."""
    rows = session.execute(select(Agency.code, Agency.parent_id).where(Agency.id.in_(visible))).all()
    return {c for c, parent in rows if parent not in visible}


# --------------------------------------------------------------------------- what-if


@bp.route("/giam-sat/mo-phong", methods=["GET", "POST"])
@login_required(SUPERVISOR)
def what_if() -> str:
    """Replay a period's real arrivals with other allotments or staff, next to what happened."""
    session = db()
    procedures = _procedures()
    chosen = request.values.get("thu-tuc") or (procedures[0][0] if procedures else None)
    start, end, first, last = _period()
    steps, result, error = [], None, None
    agencies = [(a.code, a.name) for a in session.scalars(select(Agency).where(Agency.active.is_(True)).order_by(Agency.code))]
    if chosen:
        version = services.get_version(session, chosen)
        steps = [(sid, s["name"], s.get("allotment")) for sid, s in version.meta.get("steps", {}).items()]
    if request.method == "POST" and chosen:
        allotments = {sid: request.form[f"phan-bo-{sid}"].strip() for sid, _n, _a in steps
                      if request.form.get(f"phan-bo-{sid}", "").strip()}
        staff: dict[tuple[str, str], int] = {}
        agency, role, count = request.form.get("nhan-su-co-quan"), request.form.get("nhan-su-vai-tro"), request.form.get("nhan-su-so")
        if agency and role and count:
            if role not in ROLES or not count.isdigit():
                raise InvalidRequest("Chọn vai trò và nhập số cán bộ là số nguyên.")
            staff[(agency, role)] = int(count)
        change = whatif.Change(allotments=allotments, deadline=request.form.get("thoi-han") or None, staff=staff)
        try:
            result = whatif.replay(session, chosen, start, end, change, now())
        except EngineError as err:
            error = _reason(err)
    return render_template("admin/what_if.html", procedures=procedures, chosen=chosen, steps=steps, result=result,
                           error=error, first=first, last=last, agencies=agencies, roles=ROLES, ROLE_LABELS=ROLE_LABELS)


def _reason(err: EngineError) -> str:
    problems = getattr(err, "problems", None)
    if problems:
        return "Quy trình sau khi thay đổi không hợp lệ: " + "; ".join(p.message for p in problems[:5])
    return str(err)
