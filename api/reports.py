"""Supervisors' reports: on-time figures, bottlenecks, drill-down, satisfaction, periodic reports.

Only supervisors (role ``supervisor``, "Giám sát") may call these, and only about
the agencies they supervise (their agency and those under it); ``agency``
narrows a report to one of those and the agencies under it.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any, Mapping

from flask import Response, json
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from engine import auth, exports, reports
from engine.core.calendar import VN_TZ
from engine.errors import InvalidRequest

from .app import db_session
from .security import current, login_required, now

PREFIX = "/reports"
bp = Blueprint("reports", __name__, description="Báo cáo, thống kê cho giám sát (supervisors' reports)")
SECURED = [{"bearer": []}]
SUPERVISOR = "supervisor"
FORMATS = ("json", "csv", "xlsx")
MIMETYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}


class _PeriodArgs(Schema):
    # "from" is a Python keyword: the field is named from_ and read from "from".
    from_ = fields.String(data_key="from", load_default=None, metadata={"description": "Đầu kỳ (ISO 8601 ngày hoặc thời điểm); mặc định đầu năm nay"})
    to = fields.String(load_default=None, metadata={"description": "Cuối kỳ, không tính (ISO 8601); mặc định bây giờ"})
    agency = fields.String(load_default=None, validate=validate.Length(min=1, max=64), metadata={"description": "Mã cơ quan: chỉ cơ quan này và các cơ quan trực thuộc"})
    format = fields.String(load_default="json", validate=validate.OneOf(FORMATS))


class OnTimeArgs(_PeriodArgs):
    group_by = fields.String(load_default="agency", validate=validate.OneOf(tuple(reports.GROUPS)))
    level = fields.String(load_default=None, validate=validate.OneOf(("dossier", "step")))
    procedure = fields.String(load_default=None, validate=validate.Length(min=1, max=64))


class BottleneckArgs(_PeriodArgs):
    procedure = fields.String(required=True, validate=validate.Length(min=1, max=64))
    rank_by = fields.String(load_default="late_share", validate=validate.OneOf(reports.RANK_BY))
    table = fields.String(load_default="steps", validate=validate.OneOf(("steps", "agencies")), metadata={"description": "Bảng xuất ra CSV/Excel"})


class DrillDownArgs(_PeriodArgs):
    report = fields.String(load_default="on-time", validate=validate.OneOf(("on-time", "bottlenecks")))
    metric = fields.String(required=True, validate=validate.Length(min=1, max=40))
    group_by = fields.String(load_default="agency", validate=validate.OneOf(tuple(reports.GROUPS)))
    level = fields.String(load_default=None, validate=validate.OneOf(("dossier", "step")))
    key = fields.String(load_default=None, validate=validate.Length(min=1, max=200), metadata={"description": "Mã cơ quan, tài khoản cán bộ hoặc mã thủ tục của dòng"})
    procedure = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    step = fields.String(load_default=None, validate=validate.Length(min=1, max=255))
    row_agency = fields.String(load_default=None, validate=validate.Length(min=1, max=64), metadata={"description": "Cơ quan của dòng (điểm nghẽn)"})
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10_000))


class SatisfactionArgs(_PeriodArgs):
    group_by = fields.String(load_default="agency", validate=validate.OneOf(("agency", "procedure")))
    procedure = fields.String(load_default=None, validate=validate.Length(min=1, max=64))


class PeriodicArgs(Schema):
    period = fields.String(required=True, validate=validate.Length(min=4, max=12), metadata={"description": "Q1-2026 … Q4-2026, H1-2026, H2-2026, 9M-2026 hoặc 2026"})
    agency = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv", "xlsx", "pdf")))


def _instant(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 date (midnight in Hà Nội) or aware instant; a naive time is Hà Nội time."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), VN_TZ)
        value = datetime.fromisoformat(text)
    except ValueError as err:
        raise InvalidRequest(f"'{name}' phải là ngày hoặc thời điểm ISO 8601 (ví dụ 2026-01-01), không phải {text[:40]!r}.") from err
    return value if value.tzinfo is not None else value.replace(tzinfo=VN_TZ)


def _period(args: Mapping[str, Any]) -> tuple[datetime, datetime]:
    clock = now()
    start = _instant(args.get("from_"), "from") or datetime(clock.astimezone(VN_TZ).year, 1, 1, tzinfo=VN_TZ)
    end = _instant(args.get("to"), "to") or clock
    reports.period_between(start, end)
    return start, end


def _scope(agency: str | None) -> frozenset[int]:
    """The agencies the calling supervisor may report on (narrowed to ``agency``)."""
    identity = current()
    auth.require(identity, SUPERVISOR)
    session = db_session()
    scope = reports.scope_of(session, agency, auth.visible_agencies(session, identity))
    assert scope is not None
    return scope


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(VN_TZ).isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _json(body: Any) -> Response:
    return Response(json.dumps(_jsonable(body), ensure_ascii=False), mimetype="application/json")


def _file(content: bytes, kind: str, name: str) -> Response:
    response = Response(content, mimetype=MIMETYPES[kind])
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
    return response


def _table(rows: list[dict[str, Any]], kind: str, title: str, name: str) -> Response:
    if kind == "csv":
        return _file(exports.rows_csv(rows), "csv", name)
    return _file(exports.rows_xlsx(title, rows), "xlsx", name)


@bp.route("/on-time")
class OnTime(MethodView):
    @bp.arguments(OnTimeArgs, location="query")
    @bp.response(200)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> Response:
        """On-time figures per agency, officer, procedure or step for [from, to): received, early / on time / late,
        in progress in time / overdue (judged at the end of the period), rates, working days, flags. CSV or Excel with `format`."""
        scope = _scope(args["agency"])
        start, end = _period(args)
        rows = reports.on_time(db_session(), start, end, args["group_by"], now=now(), level=args["level"], agencies=scope, procedure=args["procedure"])
        if args["format"] != "json":
            return _table(rows, args["format"], "Kết quả giải quyết đúng hạn", f"dung-han-{args['group_by']}")
        return _json({"from": start, "to": end, "group_by": args["group_by"], "level": args["level"] or reports.GROUPS[args["group_by"]], "rows": rows})


@bp.route("/bottlenecks")
class Bottlenecks(MethodView):
    @bp.arguments(BottleneckArgs, location="query")
    @bp.response(200)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> Response:
        """Where dossiers of a procedure pile up, per step and per agency, ranked: queue now, waiting before claim,
        working time, late share, returns for rework."""
        scope = _scope(args["agency"])
        start, end = _period(args)
        result = reports.bottlenecks(db_session(), args["procedure"], start, end, now=now(), agencies=scope, rank_by=args["rank_by"])
        if args["format"] != "json":
            return _table(result[args["table"]], args["format"], f"Điểm nghẽn – {result['procedure_name']}", f"diem-nghen-{args['procedure']}")
        return _json({"from": start, "to": end, "rank_by": args["rank_by"], **result})


@bp.route("/drill-down")
class DrillDown(MethodView):
    @bp.arguments(DrillDownArgs, location="query")
    @bp.response(200)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> Response:
        """The dossier codes behind one number of the on-time or bottleneck report (`metric`, and the row:
        `key` and `step` for on-time; `procedure`, `step`, `row_agency` for bottlenecks)."""
        scope = _scope(args["agency"])
        start, end = _period(args)
        session = db_session()
        if args["report"] == "bottlenecks":
            if not args["procedure"]:
                raise InvalidRequest("Cần mã thủ tục (procedure).")
            codes = reports.bottleneck_drill_down(
                session, args["procedure"], start, end, args["metric"], now=now(), step=args["step"],
                agency=args["row_agency"], agencies=scope, limit=args["limit"],
            )
        else:
            codes = reports.drill_down(
                session, start, end, args["group_by"], args["key"], args["metric"], now=now(), level=args["level"],
                agencies=scope, procedure=args["procedure"], step=args["step"], limit=args["limit"],
            )
        return _json({"metric": args["metric"], "count": len(codes), "codes": codes})


@bp.route("/satisfaction")
class Satisfaction(MethodView):
    @bp.arguments(SatisfactionArgs, location="query")
    @bp.response(200)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> Response:
        """Ratings and feedback per agency or procedure, the satisfaction score of Decision 766
        (100 % − late rate − share with complaints or dissatisfaction) and the reasons given."""
        scope = _scope(args["agency"])
        start, end = _period(args)
        rows = reports.satisfaction(db_session(), start, end, now=now(), group_by=args["group_by"], agencies=scope, procedure=args["procedure"])
        if args["format"] != "json":
            return _table(rows, args["format"], "Mức độ hài lòng", f"hai-long-{args['group_by']}")
        return _json({"from": start, "to": end, "group_by": args["group_by"], "rows": rows})


@bp.route("/periodic")
class Periodic(MethodView):
    @bp.arguments(PeriodicArgs, location="query")
    @bp.response(200)
    @bp.doc(security=SECURED)
    @login_required
    def get(self, args: dict[str, Any]) -> Response:
        """Quarterly, 6-month, 9-month or yearly on-time report of an agency and those under it
        (default: the supervisor's own agency), as JSON, Excel, PDF or CSV."""
        identity = current()
        auth.require(identity, SUPERVISOR)
        session = db_session()
        code = args["agency"]
        if code is None:
            own = sorted(identity.agencies(SUPERVISOR))
            if len(own) != 1:
                raise InvalidRequest("Ông/bà giám sát nhiều cơ quan: chọn một cơ quan (agency).")
            from engine.persistence.models import Agency

            code = session.get(Agency, own[0]).code
        report = reports.periodic_report(session, code, args["period"], now=now(), visible=auth.visible_agencies(session, identity))
        name = f"bao-cao-{report.period.code}-{code}"
        kind = args["format"]
        if kind == "xlsx":
            return _file(exports.report_xlsx(report), "xlsx", name)
        if kind == "pdf":
            return _file(exports.report_pdf(report), "pdf", name)
        if kind == "csv":
            return _file(exports.report_csv(report), "csv", name)
        return _json({
            "period": {"code": report.period.code, "label": report.period.label, "from": report.period.start, "to": report.period.end},
            "agency_code": report.agency_code,
            "agency_name": report.agency_name,
            "by_agency": report.by_agency,
            "by_procedure": report.by_procedure,
            "totals": report.totals,
        })
