"""Supervisors' figures: on-time rates, bottlenecks, satisfaction, periodic reports.

Everything here is aggregation in SQL over SQLAlchemy Core — no workflow is
ever deserialized — and runs the same on SQLite and PostgreSQL.

Rules (Decision 766/QĐ-TTg, seed document 002):

* A *finished* dossier is judged against its due date, which pauses (waiting
  for a supplement or a payment) have already moved: ``early`` when it finished
  on a day before the due day, ``on_time`` when it finished on the due day by the
  due instant, ``late`` after it. A dossier with more than one supplement request,
  or that needed an apology with a new appointment, is ``late`` whatever its dates.
* A dossier still open at the end of the period is judged there (or now, for a
  period not over yet): ``overdue`` when its due date has passed — a dossier
  paused at that moment is judged at the moment it paused — else ``in_time``.
* Steps are judged the same way against their own allotment (the ``result``
  written when the step was completed); a step cancelled (returned for rework,
  or cut by a withdrawal) is ``cancelled`` and counts in no rate.
* Handling time is working time (sessions of the working calendar, holidays
  and administrators' overrides excluded) from receipt — or a step's start — to
  the finish, less the working time the dossier spent paused, in working days.
* The on-time rate is (early + on time) / finished; agencies and officers whose
  late share of finished work exceeds :data:`LATE_FLAG` are flagged.

Working time is SQL arithmetic compiled from the working calendar (see
:class:`_WorkingTime`). It is computed once per finished step and dossier and
stored (``report_steps`` — with the step's grouping keys and judgement, so that
a period's finished steps are one index range — and ``report_dossier_times``;
returns for rework likewise in ``report_returns``):
every report first runs :func:`refresh_times`, which adds what finished since
the last refresh and recomputes everything when the calendar changed; the
worker runs it periodically too. Only the steps still open at a period's end
are judged from the live rows.

Periods are half-open, ``[start, end)``. Example::

    rows = on_time(session, vn(2026, 1, 1), vn(2026, 4, 1), "agency", now=now, agencies={3, 4})
    codes = drill_down(session, vn(2026, 1, 1), vn(2026, 4, 1), "agency", key="000.17.22.H19",
                       metric="late", now=now)
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Collection, Iterable, Mapping, Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from . import organisation
from .core.calendar import VN_TZ, WorkingCalendar
from .errors import InvalidRequest, NotFound
from .persistence.models import (
    UTCDateTime,
    Agency,
    AuditEvent,
    Dossier,
    Feedback,
    Officer,
    Procedure,
    ProcedureVersion,
    Rating,
    Task,
    TaskState,
)
from .public import CRITERIA, SATISFIED_FROM
from .services import DossierStatus, load_calendar

__all__ = [
    "BOTTLENECK_METRICS",
    "RANK_BY",
    "ROW_LEVEL",
    "REPORT_COLUMNS",
    "bottleneck_drill_down",
    "refresh_times",
    "GROUPS",
    "LATE_FLAG",
    "ON_TIME_METRICS",
    "Period",
    "PeriodicReport",
    "bottlenecks",
    "drill_down",
    "on_time",
    "parse_period",
    "period_between",
    "periodic_report",
    "satisfaction",
    "scope_of",
]

#: Share of late work above which an agency or officer is flagged (seed document 002).
LATE_FLAG = 0.10
#: What on-time figures can be grouped by, and at which level each is counted by default.
GROUPS = {"agency": "dossier", "procedure": "dossier", "officer": "step", "step": "step"}
#: Categories of an on-time row that a drill-down can list.
ON_TIME_METRICS = (
    "received", "carried_over", "finished", "early", "on_time", "late",
    "in_progress", "in_time", "overdue", "withdrawn", "cancelled",
)
#: Numbers of a bottleneck row that a drill-down can list.
BOTTLENECK_METRICS = ("queue", "queue_overdue", "received", "finished", "late", "returns_sent", "returns_received")
RANK_BY = ("late_share", "queue", "waiting", "working", "returns")

_VN_OFFSET = 7 * 3600  # Hà Nội is UTC+7 all year (no daylight saving since 1975)
_DAY = 86400
#: How far back the working-time table reaches before a period (older starts are clamped to it).
_LOOKBACK_DAYS = 731
_OPEN_STATUSES = (DossierStatus.RECEIVED, DossierStatus.PROCESSING, DossierStatus.SUPPLEMENT_REQUESTED, DossierStatus.FINANCIAL_OBLIGATION)
_ENDED = (DossierStatus.WITHDRAWN, DossierStatus.STOPPED)
_NOT_RECEIVED = (DossierStatus.REGISTERED, DossierStatus.REFUSED)


# --------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    """A reporting period ``[start, end)`` in Hà Nội time, with its Vietnamese label."""

    start: datetime
    end: datetime
    label: str
    code: str = ""


_PERIOD_RE = re.compile(r"^(?:(Q[1-4]|H[12]|9M)-)?(\d{4})$", re.IGNORECASE)


def parse_period(text: str) -> Period:
    """``Q1-2026`` … ``Q4-2026``, ``H1-2026`` / ``H2-2026`` (6 months), ``9M-2026``, ``2026``."""
    match = _PERIOD_RE.match((text or "").strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidRequest(
            f"Kỳ báo cáo không hợp lệ: {str(text)[:40]!r}; dùng Q1-2026 … Q4-2026, H1-2026, H2-2026, 9M-2026 hoặc 2026."
        )
    kind, year = (match.group(1) or "").upper(), int(match.group(2))
    if not 2000 <= year <= 2099:
        raise InvalidRequest(f"Năm báo cáo {year} nằm ngoài khoảng 2000–2099.")
    first, months, label = {
        "": (1, 12, f"Năm {year}"),
        "H1": (1, 6, f"6 tháng đầu năm {year}"),
        "H2": (7, 6, f"6 tháng cuối năm {year}"),
        "9M": (1, 9, f"9 tháng năm {year}"),
    }.get(kind) or (3 * int(kind[1]) - 2, 3, f"Quý {'I II III IV'.split()[int(kind[1]) - 1]} năm {year}")
    start = datetime(year, first, 1, tzinfo=VN_TZ)
    last = first + months
    end = datetime(year + (last - 1) // 12, (last - 1) % 12 + 1, 1, tzinfo=VN_TZ)
    return Period(start, end, label, f"{kind}-{year}" if kind else str(year))


def period_between(start: datetime, end: datetime) -> Period:
    """A free period; refuses naive or reversed bounds."""
    for value in (start, end):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise InvalidRequest("Thời điểm đầu và cuối kỳ phải có múi giờ (ví dụ 2026-01-01T00:00:00+07:00).")
    if end <= start:
        raise InvalidRequest("Thời điểm cuối kỳ phải sau thời điểm đầu kỳ.")
    if end - start > timedelta(days=3 * 366):
        raise InvalidRequest("Một kỳ báo cáo dài tối đa 3 năm.")
    a, b = start.astimezone(VN_TZ), (end - timedelta(microseconds=1)).astimezone(VN_TZ)
    return Period(start, end, f"Từ {a:%d/%m/%Y} đến {b:%d/%m/%Y}")


def scope_of(session: Session, agency_code: str | None, visible: Collection[int] | None) -> frozenset[int] | None:
    """The agencies a report covers: ``agency_code`` and those under it, within ``visible``
    (None: everything). An agency outside ``visible`` is refused."""
    from .errors import Forbidden

    if agency_code is None:
        return None if visible is None else frozenset(visible)
    tree = organisation.agency_tree(session)
    node = tree.by_code.get(agency_code)
    if node is None:
        raise NotFound(f"Không có cơ quan mã {agency_code[:64]}.")
    if visible is not None and node.id not in visible:
        raise Forbidden(f"Cơ quan {agency_code} nằm ngoài phạm vi giám sát của ông/bà.")
    found, todo = {node.id}, [node.id]
    while todo:
        for child in tree.children.get(todo.pop(), []):
            if child.id not in found:
                found.add(child.id)
                todo.append(child.id)
    return frozenset(found if visible is None else found & set(visible))


# --------------------------------------------------------------------------- SQL helpers


class _epoch(FunctionElement[int]):
    """Whole seconds since 1970 (UTC) of a timestamp column."""

    type = BigInteger()
    inherit_cache = True


@compiles(_epoch, "postgresql")
def _epoch_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR(date_part('epoch', {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(_epoch)
def _epoch_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


class _epoch_text(FunctionElement[int]):
    """Whole seconds since 1970 of an ISO 8601 text with its offset (as audit details hold)."""

    type = BigInteger()
    inherit_cache = True


@compiles(_epoch_text, "postgresql")
def _epoch_text_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR(date_part('epoch', CAST({compiler.process(element.clauses, **kw)} AS TIMESTAMPTZ))) AS BIGINT)"


@compiles(_epoch_text)
def _epoch_text_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


class _least(FunctionElement[Any]):
    inherit_cache = True


class _greatest(FunctionElement[Any]):
    inherit_cache = True


@compiles(_least)
def _least_any(element: Any, compiler: Any, **kw: Any) -> str:
    return f"LEAST({compiler.process(element.clauses, **kw)})"


@compiles(_least, "sqlite")
def _least_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"MIN({compiler.process(element.clauses, **kw)})"


@compiles(_greatest)
def _greatest_any(element: Any, compiler: Any, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(_greatest, "sqlite")
def _greatest_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"MAX({compiler.process(element.clauses, **kw)})"


def _idiv(a: Any, b: int) -> Any:
    """Integer division of non-negative integers (``/`` on integers on both backends)."""
    return a.op("/", precedence=8)(literal_column(str(int(b))))


class _WorkingTime:
    """Working time as SQL arithmetic, with no table and no join.

    ``cum(t)`` — working seconds from a Monday before the period to instant
    ``t`` — is the weekly pattern of sessions counted with integer arithmetic,
    corrected by the days that differ from it (holidays, make-up working days,
    administrators' overrides) through a binary search compiled into nested
    ``CASE`` expressions, plus the sessions elapsed on ``t``'s own day. The
    working time between two instants is then ``cum(b) - cum(a)``, on any number
    of rows. Instants are first turned into *local seconds* (seconds since 1970
    in Hà Nội time, clamped to the calendar's range) once per row.
    """

    def __init__(self, calendar: WorkingCalendar, first: date, last: date, postgres: bool = False) -> None:
        self.postgres = postgres
        low, high = calendar._first_year, calendar._last_year  # the calendar's supported years
        first = max(first, date(low, 1, 8))
        last = min(last, date(high, 12, 31))
        self.standard_day = int(calendar.standard_day.total_seconds())

        def seconds(spans: Iterable[tuple[Any, Any]]) -> tuple[tuple[int, int], ...]:
            return tuple((s.hour * 3600 + s.minute * 60 + s.second, e.hour * 3600 + e.minute * 60 + e.second) for s, e in spans)

        self.weekly = [seconds(calendar.sessions[w]) for w in range(7)]
        totals = [sum(e - s for s, e in pattern) for pattern in self.weekly]
        self.week_total = sum(totals)
        self.prefix = [sum(totals[:j]) for j in range(7)]
        epoch0 = date(1970, 1, 1).toordinal()
        self.anchor = first.toordinal() - epoch0 - first.weekday()  # day number of the Monday on or before ``first``
        self.specials: list[tuple[int, int, tuple[tuple[int, int], ...]]] = []  # (day number, change, actual sessions)
        current = first
        while current <= last:
            actual = seconds(calendar.sessions_on(current))
            base = self.weekly[current.weekday()]
            if actual != base:
                change = sum(e - s for s, e in actual) - totals[current.weekday()]
                self.specials.append((current.toordinal() - epoch0, change, actual))
            current += timedelta(days=1)
        self.lo = (first.toordinal() - epoch0) * _DAY
        self.hi = (last.toordinal() - epoch0 + 1) * _DAY - 1
        fingerprint = repr((self.weekly, self.specials, self.lo, self.hi, self.anchor, postgres))
        self.key = hashlib.sha256(fingerprint.encode()).hexdigest()

    def local(self, epoch: Any) -> Any:
        """Local seconds of a UTC epoch expression, clamped to the calendar's range."""
        shifted = epoch + _int(_VN_OFFSET)
        return _least(_greatest(shifted, _int(self.lo)), _int(self.hi))

    @staticmethod
    def _within(tod: Any, pattern: Sequence[tuple[int, int]]) -> Any:
        parts = [_least(_greatest(tod - _int(s), _int(0)), _int(e - s)) for s, e in pattern]
        if not parts:
            return _int(0)
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def _corrections(self, day: Any, lo: int, hi: int, running: list[int]) -> Any:
        """Sum of the changes of the special days before ``day``: ``running[k]`` when k of them are."""
        if lo == hi:
            return _int(running[lo])
        mid = (lo + hi + 1) // 2
        return case(
            (day <= _int(self.specials[mid - 1][0]), self._corrections(day, lo, mid - 1, running)),
            else_=self._corrections(day, mid, hi, running),
        )

    @staticmethod
    def split(local: Any) -> tuple[Any, Any]:
        """Local seconds as (day number, seconds into the day)."""
        return _idiv(local, _DAY), local.op("%", precedence=8)(_int(_DAY))

    def at(self, source: Any, name: str) -> Any:
        """``cum`` of the position ``name`` that :func:`_positioned` put on ``source``."""
        return _Cum(self, source.c[name], source.c[f"{name}_tod"])

    def cum(self, day: Any, tod: Any) -> Any:
        """Working seconds from the anchor Monday to second ``tod`` of day number ``day``."""
        if self.postgres:
            return self._cum_arrays(day, tod)
        n = day - _int(self.anchor)
        weekday = n.op("%", precedence=8)(_int(7))
        days = [sum(e - s for s, e in pattern) for pattern in self.weekly]
        working = [w for w in range(7) if days[w]]
        if working == list(range(len(working))) and len({days[w] for w in working}) == 1:
            # The usual week (equal working days from Monday on, then days off): no CASE needed.
            within_week = _least(weekday, _int(len(working))) * _int(days[0])
        else:
            within_week = case(*((weekday == _int(j), _int(self.prefix[j])) for j in range(1, 7)), else_=_int(0))
        base = _idiv(n, 7) * _int(self.week_total) + within_week
        running = [0]
        for _day, change, _actual in self.specials:
            running.append(running[-1] + change)
        corrections = self._corrections(day, 0, len(self.specials), running) if self.specials else _int(0)
        # Sessions elapsed today: a special day's own sessions, else its weekday's.
        by_pattern: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for number, _change, actual in self.specials:
            by_pattern.setdefault(actual, []).append(number)
        weekdays: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for w, pattern in enumerate(self.weekly):
            weekdays.setdefault(pattern, []).append(w)
        usual = case(
            *((weekday.in_([_int(w) for w in ws]), self._within(tod, pattern)) for pattern, ws in weekdays.items() if pattern),
            else_=_int(0),
        )
        today = case(
            *((day.in_([_int(x) for x in numbers]), self._within(tod, pattern)) for pattern, numbers in by_pattern.items()),
            else_=usual,
        ) if by_pattern else usual
        return base + corrections + today

    def _cum_arrays(self, day: Any, tod: Any) -> Any:
        """PostgreSQL: the same from two constant arrays indexed by day (working seconds
        before each day, and which sessions the day has)."""
        from sqlalchemy.dialects.postgresql import ARRAY

        if not hasattr(self, "_arrays"):
            first = self.lo // _DAY
            last = self.hi // _DAY
            special = {number: actual for number, _change, actual in self.specials}
            patterns: dict[tuple[tuple[int, int], ...], int] = {(): 0}
            before, kinds, total = [], [], 0
            for number in range(first, last + 1):
                pattern = special.get(number, self.weekly[(number - self.anchor) % 7])
                kinds.append(patterns.setdefault(pattern, len(patterns)))
                before.append(total)
                total += sum(e - s for s, e in pattern)
            self._arrays = (first, before, kinds, patterns)
        first, before, kinds, patterns = self._arrays
        index = day - _int(first - 1)
        cums = literal_column("('{" + ",".join(map(str, before)) + "}'::bigint[])", ARRAY(BigInteger))
        kind = literal_column("('{" + ",".join(map(str, kinds)) + "}'::smallint[])", ARRAY(BigInteger))
        today = case(
            *((kind[index] == _int(number), self._within(tod, pattern)) for pattern, number in patterns.items() if pattern),
            else_=_int(0),
        )
        return cums[index] + today


def _int(value: int) -> Any:
    """An integer written into the SQL (no bind parameter)."""
    return literal_column(str(int(value)), BigInteger)


#: Working-time tables by key, for compiling :class:`_Cum` (the last few are kept).
_WORK_BY_KEY: "OrderedDict[str, _WorkingTime]" = OrderedDict()


class _Cum(FunctionElement[int]):
    """``_WorkingTime.cum(day, tod)`` as one element: it compiles to the full
    arithmetic, while SQLAlchemy's statement cache keys it by the calendar's
    fingerprint instead of walking the whole expression at every call."""

    type = BigInteger()
    inherit_cache = True
    _traverse_internals = [("clauses", InternalTraversal.dp_clauseelement), ("work_key", InternalTraversal.dp_string)]

    def __init__(self, work: "_WorkingTime", day: Any, tod: Any) -> None:
        self.work_key = work.key
        _WORK_BY_KEY[work.key] = work
        _WORK_BY_KEY.move_to_end(work.key)
        while len(_WORK_BY_KEY) > 32:
            _WORK_BY_KEY.popitem(last=False)
        super().__init__(day, tod)


@compiles(_Cum)
def _compile_cum(element: _Cum, compiler: Any, **kw: Any) -> str:
    day, tod = element.clauses.clauses
    return "(" + compiler.process(_WORK_BY_KEY[element.work_key].cum(day, tod), **kw) + ")"


def _paused_overlap(start_cum: Any, end_cum: Any, pauses: Any) -> Any:
    """Working seconds of the pause row ``pauses`` inside ``[start, end]``."""
    return _greatest(
        literal_column("0"), _least(end_cum, pauses.c.c1) - _greatest(start_cum, pauses.c.c0)
    )


def _pauses(work: _WorkingTime, since: datetime) -> Any:
    """Ended pauses (supplement, payment) as working-time positions: ``dossier_id, c0, c1``."""
    ae = AuditEvent.__table__
    inner = _positioned(
        select(ae.c.dossier_id).where(ae.c.action == "dossier.resume", ae.c.at >= since),
        {"l0": work.local(_epoch_text(ae.c.details["paused_at"].as_string())), "l1": work.local(_epoch(ae.c.at))},
        "pause_times",
    )
    return select(inner.c.dossier_id, work.at(inner, "l0").label("c0"), work.at(inner, "l1").label("c1")).cte("pauses")


def _positioned(query: Any, positions: Mapping[str, Any], name: str) -> Any:
    """``query`` with the local seconds ``positions`` added as columns, computed once per row.

    The working-time arithmetic refers to each position several times; merged
    into the outer query, the timestamp conversion would run at each place.
    An inner query the database cannot merge (``OFFSET 0``) computes each once.
    """
    split = {}
    for key, local in positions.items():
        split[key], split[f"{key}_tod"] = _WorkingTime.split(local)
    return query.add_columns(*(expr.label(k) for k, expr in split.items())).offset(0).subquery(name)


# --------------------------------------------------------------------------- facts


@dataclass
class _Context:
    start: datetime
    end: datetime
    at: datetime  # the instant unfinished work is judged at
    agencies: frozenset[int] | None
    procedure_id: int | None
    work: _WorkingTime
    postgres: bool
    stored_times: bool = False


def _context(
    session: Session, start: datetime, end: datetime, now: datetime, agencies: Collection[int] | None, procedure: str | None
) -> _Context:
    period_between(start, end)  # validates
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidRequest("now must be an aware datetime.")
    procedure_id = None
    if procedure is not None:
        procedure_id = session.scalar(select(Procedure.id).where(Procedure.code == str(procedure)[:64]))
        if procedure_id is None:
            raise NotFound(f"Không có thủ tục mã {str(procedure)[:64]}.")
    first = (start.astimezone(VN_TZ) - timedelta(days=_LOOKBACK_DAYS)).date()
    last = (max(end, now).astimezone(VN_TZ) + timedelta(days=1)).date()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # These statements are long but cheap per row: compiling them (JIT) costs more than it
        # saves; and aggregating a year of rows wants more than the default 4 MB to hash in memory.
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))
    calendar = load_calendar(session)
    work = _WorkingTime(calendar, first, last, dialect == "postgresql")
    scope = None if agencies is None else frozenset(agencies)
    stored = not session.info.get(ROW_LEVEL)
    if stored:
        refresh_times(session.get_bind(), calendar)
    return _Context(start, end, min(end, now), scope, procedure_id, work, dialect == "postgresql", stored)


def _judged_at(dossier: Any, at: datetime) -> Any:
    """The instant open work is judged at: ``at``, or when the dossier paused if it is paused then."""
    return case((and_(dossier.c.paused_at.is_not(None), dossier.c.paused_at < at), dossier.c.paused_at), else_=literal(at, Dossier.__table__.c.due_at.type))


def _dossier_times(work: _WorkingTime, since: datetime, where: Sequence[Any]) -> Any:
    """Handling time (working seconds less paused time) of the finished dossiers ``where`` selects."""
    d = Dossier.__table__
    where = [d.c.finished_at.is_not(None), d.c.status.in_((DossierStatus.PROCESSED, DossierStatus.RETURNED)), *where]
    positions = {"l_start": work.local(_epoch(d.c.received_at)), "l_end": work.local(_epoch(d.c.finished_at))}
    pauses = _pauses(work, since)
    spans = _positioned(
        select(d.c.id.label("dossier_id"), pauses.c.c0, pauses.c.c1).select_from(pauses.join(d, d.c.id == pauses.c.dossier_id)).where(*where),
        positions,
        "dossier_pause_spans",
    )
    paused = (
        select(spans.c.dossier_id, func.sum(_paused_overlap(work.at(spans, "l_start"), work.at(spans, "l_end"), spans)).label("paused"))
        .group_by(spans.c.dossier_id)
        .subquery("dossier_paused")
    )
    src = _positioned(select(d.c.id.label("dossier_id"), d.c.finished_at).where(*where), positions, "dossier_span")
    duration = work.at(src, "l_end") - work.at(src, "l_start") - func.coalesce(paused.c.paused, 0)
    return select(src.c.dossier_id, src.c.finished_at, duration.label("duration")).select_from(
        src.outerjoin(paused, paused.c.dossier_id == src.c.dossier_id)
    )


def _task_times(work: _WorkingTime, since: datetime, where: Sequence[Any]) -> Any:
    """Time in step, waiting before the claim and working after it (working seconds less
    paused time) of the completed steps ``where`` selects."""
    t = Task.__table__
    where = [t.c.state == TaskState.COMPLETED, t.c.completed_at.is_not(None), *where]
    positions = {
        "l_start": work.local(_epoch(t.c.started_at)),
        "l_end": work.local(_epoch(t.c.completed_at)),
        "l_claim": work.local(_epoch(func.coalesce(t.c.claimed_at, t.c.completed_at))),
    }
    pauses = _pauses(work, since)
    spans = _positioned(
        select(t.c.id.label("task_id"), pauses.c.c0, pauses.c.c1).select_from(pauses.join(t, t.c.dossier_id == pauses.c.dossier_id)).where(*where),
        positions,
        "step_pause_spans",
    )
    p_start, p_end, p_claim = work.at(spans, "l_start"), work.at(spans, "l_end"), work.at(spans, "l_claim")
    paused = (
        select(
            spans.c.task_id,
            func.sum(_paused_overlap(p_start, p_end, spans)).label("paused"),
            func.sum(_paused_overlap(p_start, p_claim, spans)).label("paused_wait"),
        )
        .group_by(spans.c.task_id)
        .subquery("step_paused")
    )
    src = _positioned(
        select(t.c.id.label("task_id"), t.c.completed_at, case((t.c.claimed_at.is_not(None), 1), else_=0).label("claimed")).where(*where),
        positions,
        "step_span",
    )
    c_start, c_end, c_claim = work.at(src, "l_start"), work.at(src, "l_end"), work.at(src, "l_claim")
    total, wait = func.coalesce(paused.c.paused, 0), func.coalesce(paused.c.paused_wait, 0)
    claimed = src.c.claimed == 1
    return select(
        src.c.task_id,
        src.c.completed_at,
        (c_end - c_start - total).label("duration"),
        case((claimed, c_claim - c_start - wait), else_=None).label("waiting"),
        case((claimed, c_end - c_claim - (total - wait)), else_=None).label("working"),
    ).select_from(src.outerjoin(paused, paused.c.task_id == src.c.task_id))


def _of_procedure(column: Any, procedure_id: int) -> Any:
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    return column.in_(select(d.c.id).join(pv, pv.c.id == d.c.procedure_version_id).where(pv.c.procedure_id == procedure_id))


def _dossier_facts(ctx: _Context) -> Any:
    """One row per dossier handled in the period: its agency, procedure, category, handling time."""
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    agency = func.coalesce(d.c.home_agency_id, d.c.receiving_agency_id)
    finished = and_(d.c.finished_at.is_not(None), d.c.finished_at < ctx.end)
    late_anyway = or_(d.c.supplement_requests > 1, d.c.new_appointment_at.is_not(None))
    due_day = _idiv(_epoch(d.c.due_at) + literal_column(str(_VN_OFFSET)), _DAY)
    finish_day = _idiv(_epoch(d.c.finished_at) + literal_column(str(_VN_OFFSET)), _DAY)
    category = case(
        (and_(finished, d.c.status.in_(_ENDED)), "withdrawn"),
        (and_(finished, or_(late_anyway, d.c.finished_at > d.c.due_at)), "late"),
        (and_(finished, d.c.due_at.is_not(None), finish_day < due_day), "early"),
        (finished, "on_time"),
        (or_(late_anyway, d.c.due_at < _judged_at(d, ctx.at)), "overdue"),
        else_="in_time",
    )
    conditions = [
        d.c.status.not_in(_NOT_RECEIVED),
        d.c.received_at < ctx.end,
        or_(d.c.finished_at.is_(None), d.c.finished_at >= ctx.start),
    ]
    if ctx.agencies is not None:
        conditions.append(agency.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    if ctx.procedure_id is not None:
        conditions.append(pv.c.procedure_id == ctx.procedure_id)
    if ctx.stored_times:
        times = DOSSIER_TIMES
    else:
        where = [d.c.finished_at >= ctx.start, d.c.finished_at < ctx.end]
        if ctx.procedure_id is not None:
            where.append(_of_procedure(d.c.id, ctx.procedure_id))
        times = _dossier_times(ctx.work, ctx.start - timedelta(days=_LOOKBACK_DAYS), where).subquery("dossier_times")
    duration = case((and_(finished, d.c.status.not_in(_ENDED)), times.c.duration), else_=None)
    return (
        select(
            d.c.id.label("dossier_id"),
            d.c.code.label("code"),
            agency.label("agency_id"),
            pv.c.procedure_id.label("procedure_id"),
            d.c.channel.label("channel"),
            case((d.c.received_at >= ctx.start, 1), else_=0).label("received"),
            case((d.c.received_at < ctx.start, 1), else_=0).label("carried_over"),
            category.label("category"),
            duration.label("duration"),
        )
        .select_from(d.join(pv, pv.c.id == d.c.procedure_version_id).outerjoin(times, times.c.dossier_id == d.c.id))
        .where(*conditions)
        .subquery("facts")
    )


def _step_facts(ctx: _Context, with_wait: bool = False, codes: bool = False) -> Any:
    """One row per step handled in the period: agency, officer, procedure, step, category, times.

    With the stored facts, the steps finished in the period are read from
    :data:`REPORT_STEPS` alone and only the steps still open at the period's end
    from the live rows; otherwise every row is judged and timed here.
    """
    t = Task.__table__
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    if ctx.stored_times:
        return _stored_step_facts(ctx, with_wait, codes)
    done = and_(t.c.completed_at.is_not(None), t.c.completed_at < ctx.end)
    completed = and_(done, t.c.state == TaskState.COMPLETED)
    category = case(
        (and_(done, t.c.state == TaskState.CANCELLED), "cancelled"),
        (and_(done, t.c.result == "late"), "late"),
        (and_(done, t.c.result == "early"), "early"),
        (done, "on_time"),
        (t.c.due_at < _judged_at(d, ctx.at), "overdue"),
        else_="in_time",
    )
    conditions = [t.c.started_at < ctx.end, or_(t.c.completed_at.is_(None), t.c.completed_at >= ctx.start)]
    if ctx.agencies is not None:
        conditions.append(t.c.agency_id.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    if ctx.procedure_id is not None:
        conditions.append(pv.c.procedure_id == ctx.procedure_id)
    where = [t.c.completed_at >= ctx.start, t.c.completed_at < ctx.end]
    if ctx.procedure_id is not None:
        where.append(_of_procedure(t.c.dossier_id, ctx.procedure_id))
    times = _task_times(ctx.work, ctx.start - timedelta(days=_LOOKBACK_DAYS), where).subquery("task_times")
    columns = [
        t.c.id.label("task_id"),
        d.c.id.label("dossier_id"),
        d.c.code.label("code"),
        t.c.agency_id.label("agency_id"),
        func.coalesce(t.c.completed_by, t.c.assignee).label("officer"),
        pv.c.procedure_id.label("procedure_id"),
        t.c.step_id.label("step_id"),
        t.c.step_name.label("step_name"),
        case((t.c.started_at >= ctx.start, 1), else_=0).label("received"),
        case((t.c.started_at < ctx.start, 1), else_=0).label("carried_over"),
        category.label("category"),
        case((completed, times.c.duration), else_=None).label("duration"),
    ]
    if with_wait:
        columns += [
            case((completed, times.c.waiting), else_=None).label("waiting"),
            case((completed, times.c.working), else_=None).label("working"),
        ]
    return (
        select(*columns)
        .select_from(
            t.join(d, d.c.id == t.c.dossier_id).join(pv, pv.c.id == d.c.procedure_version_id).outerjoin(times, times.c.task_id == t.c.id)
        )
        .where(*conditions)
        .subquery("facts")
    )


#: The parts of a union of facts that :func:`_aggregate` reads one by one.
_PARTS: "weakref.WeakKeyDictionary[Any, tuple[Any, ...]]" = weakref.WeakKeyDictionary()


def _stored_step_facts(ctx: _Context, with_wait: bool, codes: bool) -> Any:
    """:func:`_step_facts` from :data:`REPORT_STEPS` (steps finished in the period, judged
    and timed when stored) and the live steps not finished by the period's end."""
    t = Task.__table__
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    s = REPORT_STEPS
    null = literal(None, BigInteger)
    # Finished in the period: one index range, no join unless the dossier codes are wanted.
    finished_where = [s.c.completed_at >= ctx.start, s.c.completed_at < ctx.end, s.c.started_at < ctx.end]
    if ctx.agencies is not None:
        finished_where.append(s.c.agency_id.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    if ctx.procedure_id is not None:
        finished_where.append(s.c.procedure_id == ctx.procedure_id)
    finished_cols = [
        s.c.task_id, s.c.dossier_id, *([d.c.code] if codes else []), s.c.agency_id, s.c.officer, s.c.procedure_id,
        s.c.step_id, s.c.step_name,
        case((s.c.started_at >= ctx.start, 1), else_=0), case((s.c.started_at < ctx.start, 1), else_=0),
        s.c.category, s.c.duration, *([s.c.waiting, s.c.working] if with_wait else []),
    ]
    names = ["task_id", "dossier_id", *(["code"] if codes else []), "agency_id", "officer", "procedure_id", "step_id",
             "step_name", "received", "carried_over", "category", "duration", *(["waiting", "working"] if with_wait else [])]
    finished_from = s.join(d, d.c.id == s.c.dossier_id) if codes else s
    finished = select(*(c.label(n) for c, n in zip(finished_cols, names))).select_from(finished_from).where(*finished_where)
    # Still open at the period's end (or finished after it): judged there.
    open_where = [t.c.started_at < ctx.end, or_(t.c.completed_at.is_(None), t.c.completed_at >= ctx.end)]
    if ctx.agencies is not None:
        open_where.append(t.c.agency_id.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    # (the few open steps first, by their own index, then their dossiers: an inner query the
    # planner cannot turn into a walk over every dossier of the procedure)
    live = (
        select(t.c.id, t.c.dossier_id, t.c.agency_id, func.coalesce(t.c.completed_by, t.c.assignee).label("officer"),
               t.c.step_id, t.c.step_name, t.c.started_at, t.c.due_at)
        .where(*open_where)
        .offset(0)
        .subquery("open_steps")
    )
    category = case((live.c.due_at < _judged_at(d, ctx.at), "overdue"), else_="in_time")
    open_cols = [
        live.c.id, d.c.id, *([d.c.code] if codes else []), live.c.agency_id, live.c.officer,
        pv.c.procedure_id, live.c.step_id, live.c.step_name,
        case((live.c.started_at >= ctx.start, 1), else_=0), case((live.c.started_at < ctx.start, 1), else_=0),
        category, null, *([null, null] if with_wait else []),
    ]
    procedure_where = [pv.c.procedure_id == ctx.procedure_id] if ctx.procedure_id is not None else []
    still_open = (
        select(*(c.label(n) for c, n in zip(open_cols, names)))
        .select_from(live.join(d, d.c.id == live.c.dossier_id).join(pv, pv.c.id == d.c.procedure_version_id))
        .where(*procedure_where)
    )
    facts = finished.union_all(still_open).subquery("facts")
    # :func:`_aggregate` reads each part on its own (the finished steps straight from their
    # indexes); only the first part has handling times.
    _PARTS[facts] = (finished.subquery("finished_steps"), still_open.subquery("open_steps_at_end"))
    return facts


# --------------------------------------------------------------------------- stored facts

_STORE = MetaData()
#: One row per finished step (completed or cancelled): what reports group it by, its judgement
#: and, for a completed step, its handling times (see :func:`refresh_times`).
REPORT_STEPS = Table(
    "report_steps", _STORE,
    Column("task_id", Integer, primary_key=True),
    Column("dossier_id", Integer),
    Column("procedure_id", Integer),
    Column("step_id", String(255)),
    Column("step_name", String(500)),
    Column("agency_id", Integer),
    Column("officer", String(200)),
    Column("started_at", UTCDateTime()),
    Column("completed_at", UTCDateTime()),
    Column("category", String(10)),
    Column("duration", BigInteger),
    Column("waiting", BigInteger),
    Column("working", BigInteger),
)
#: Returns for rework (``task.return`` events): the step and agency sent back from and to.
REPORT_RETURNS = Table(
    "report_returns", _STORE,
    Column("event_id", Integer, primary_key=True),
    Column("at", UTCDateTime()),
    Column("dossier_id", Integer),
    Column("procedure_id", Integer),
    Column("from_step", String(255)),
    Column("from_agency", Integer),
    Column("to_step", String(255)),
    Column("to_agency", Integer),
)
#: Handling times of finished dossiers, computed once (see :func:`refresh_times`).
DOSSIER_TIMES = Table(
    "report_dossier_times", _STORE,
    Column("dossier_id", Integer, primary_key=True),
    Column("finished_at", UTCDateTime()),
    Column("duration", BigInteger),
)
TIMES_STATE = Table(
    "report_times_state", _STORE,
    Column("name", String(30), primary_key=True),
    Column("calendar_key", String(64)),
    Column("watermark", UTCDateTime()),
)
#: Rows finished this long before the last refresh are looked at again (late commits).
_RESCAN = timedelta(days=1)
#: New rows stored per statement by an incremental refresh.
_BATCH = 2000
#: ``session.info`` key: when true, reports compute everything from the live rows (no stored facts).
ROW_LEVEL = "reports.row_level"


def _calendar_key(calendar: WorkingCalendar) -> str:
    text_ = repr((sorted(calendar.extra_days_off), sorted(calendar.extra_working_days), dict(calendar.sessions), calendar.country))
    return hashlib.sha256(text_.encode()).hexdigest()


def _done_category(t: Any) -> Any:
    """The judgement of a finished step (the first branches of :func:`_step_facts`)."""
    return case(
        (t.c.state == TaskState.CANCELLED, "cancelled"),
        (t.c.result == "late", "late"),
        (t.c.result == "early", "early"),
        else_="on_time",
    )


def _steps_source(work: _WorkingTime, since: datetime, where: Sequence[Any]) -> Any:
    """The :data:`REPORT_STEPS` rows of the finished steps ``where`` selects."""
    t = Task.__table__
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    times = _task_times(work, since, where).subquery("task_times")
    return (
        select(
            t.c.id, t.c.dossier_id, pv.c.procedure_id, t.c.step_id, t.c.step_name, t.c.agency_id,
            func.coalesce(t.c.completed_by, t.c.assignee), t.c.started_at, t.c.completed_at, _done_category(t),
            times.c.duration, times.c.waiting, times.c.working,
        )
        .select_from(
            t.join(d, d.c.id == t.c.dossier_id).join(pv, pv.c.id == d.c.procedure_version_id)
            .outerjoin(times, times.c.task_id == t.c.id)
        )
        .where(*where)
        .order_by(pv.c.procedure_id, t.c.completed_at)  # (stored in that order: a procedure's period is read from few pages)
    )


def refresh_times(engine: Any, calendar: WorkingCalendar) -> dict[str, int]:
    """Store the finished steps (:data:`REPORT_STEPS`), the handling times of finished
    dossiers (:data:`DOSSIER_TIMES`) and the returns for rework (:data:`REPORT_RETURNS`)
    since the last refresh, in a transaction of its own;
    all of them again when the calendar changed. Reports then read these instead of
    computing working time per row; every report runs this first, and so does the worker
    periodically (so that a report rarely has much to add).

    Finished steps never change (a step sent back is a new row), nor do audit events, so a
    stored row stays right. Concurrent refreshes queue on a row lock; rows already stored are skipped.
    Returns how many rows each table received.
    """
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert

    key = _calendar_key(calendar)
    counts: dict[str, int] = {}
    t = Task.__table__
    d = Dossier.__table__
    ae = AuditEvent.__table__
    plans = (
        ("steps", REPORT_STEPS, REPORT_STEPS.c.task_id, t.c.id, t.c.completed_at, t.c.started_at, [], _steps_source,
         [c.name for c in REPORT_STEPS.columns]),
        ("dossiers", DOSSIER_TIMES, DOSSIER_TIMES.c.dossier_id, d.c.id, d.c.finished_at, d.c.received_at,
         [d.c.status.in_((DossierStatus.PROCESSED, DossierStatus.RETURNED))], _dossier_times,
         ["dossier_id", "finished_at", "duration"]),
        ("returns", REPORT_RETURNS, REPORT_RETURNS.c.event_id, ae.c.id, ae.c.at, ae.c.at, [ae.c.action == "task.return"],
         _returns_source, [c.name for c in REPORT_RETURNS.columns]),
    )
    with engine.begin() as conn:
        if postgres:
            conn.execute(text("SET LOCAL jit = off"))
            conn.execute(text("SET LOCAL work_mem = '64MB'"))
        for name, table, stored_id, live_id, end_col, start_col, base, compute, columns in plans:
            conn.execute(insert(TIMES_STATE).values(name=name, calendar_key=key, watermark=None).on_conflict_do_nothing())
            state = conn.execute(select(TIMES_STATE).where(TIMES_STATE.c.name == name).with_for_update()).one()
            watermark = state.watermark
            if state.calendar_key != key:
                conn.execute(table.delete())
                watermark = None
            where = [*base, end_col.is_not(None)]
            if watermark is None:
                batches = [where]
            else:
                # The rows finished lately that are not stored yet, by id (a join against the
                # stored rows would leave the planner no idea how few they are).
                fresh = conn.scalars(
                    select(live_id).where(*where, end_col >= watermark - _RESCAN, ~select(stored_id).where(stored_id == live_id).exists())
                ).all()
                batches = [[*where, live_id.in_(fresh[i:i + _BATCH])] for i in range(0, len(fresh), _BATCH)]
            inserted = 0
            for batch in batches:
                # (an inner query, so that the planner picks the rows by ``end_col`` rather than
                # walking an index of ``start_col`` for the minimum)
                candidates = select(start_col.label("a"), end_col.label("b")).where(*batch).offset(0).subquery("candidates")
                low, high = conn.execute(select(func.min(candidates.c.a), func.max(candidates.c.b))).one()
                if low is None:
                    continue
                low = min(low, high)
                work = _WorkingTime(calendar, (low.astimezone(VN_TZ) - timedelta(days=1)).date(),
                                    (high.astimezone(VN_TZ) + timedelta(days=1)).date(), postgres=postgres)
                source = compute(work, low - timedelta(days=1), batch)
                # (counted from what comes back: a driver gives no row count for ``WITH … INSERT``)
                stored = insert(table).from_select(columns, source).on_conflict_do_nothing().returning(stored_id)
                inserted += len(conn.execute(stored).all())
                watermark = high if watermark is None or high > watermark else watermark
            conn.execute(TIMES_STATE.update().where(TIMES_STATE.c.name == name).values(calendar_key=key, watermark=watermark))
            counts[name] = inserted
    return counts


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class _Count:
    """A measure: how many rows fall in ``categories`` (see :func:`_aggregate`)."""

    categories: tuple[str, ...]


def _count(facts: Any, *categories: str) -> Any:
    """Rows of ``facts`` in ``categories``: as a measure of :func:`_aggregate`, or as SQL."""
    return _Count(categories)


def _sql_count(facts: Any, *categories: str) -> Any:
    return func.sum(case((facts.c.category.in_(categories), 1), else_=0))


def _aggregate(
    session: Session,
    facts: Any,
    groupings: Sequence[Sequence[str]],
    measures: Mapping[str, Any],
    percentile: str | None = None,
    additive: bool = False,
    percentile_for: Sequence[int] | None = None,
) -> list[dict[tuple[Any, ...], dict[str, Any]]]:
    """``measures`` per group, for each of ``groupings`` (lists of key columns; ``[]`` is
    the grand total), and the nearest-rank 90th percentile of column ``percentile`` as ``p90``.

    A measure is a :func:`_count` of categories, or a SQL ``sum``/``count``/``max``.
    The database groups once by every key plus the row's category (so the category,
    the costly expression, is computed once per row, and PostgreSQL can aggregate
    in parallel); the counts and the coarser groupings are added up here. The
    percentile needs the rows themselves, for the groupings in ``percentile_for``
    (default: all): on PostgreSQL a grouping set each in the same pass
    (``percentile_disc``), on SQLite one more query each (window functions). (``additive`` is accepted for clarity: every grouping is
    always added up from the finest.)
    Returns, per grouping, ``{key tuple: {measure: value}}``.
    """
    counts = {name: m for name, m in measures.items() if isinstance(m, _Count)}
    plain = {name: m for name, m in measures.items() if not isinstance(m, _Count)}
    combine = {name: (max if getattr(m, "name", "") == "max" else None) for name, m in plain.items()}
    keys = list(dict.fromkeys(k for grouping in groupings for k in grouping))
    fine = [*keys, "category"]
    cols = [facts.c[k] for k in fine]
    labelled = [func.count().label("_rows"), *(m.label(name) for name, m in plain.items())]
    results: list[dict[tuple[Any, ...], dict[str, Any]]] = [{} for _ in groupings]
    wanted = [i for i in range(len(groupings)) if percentile is not None and (percentile_for is None or i in percentile_for)]
    postgres = session.get_bind().dialect.name == "postgresql"
    parts = _PARTS.get(facts)
    if parts:
        return _aggregate_parts(session, facts, parts, groupings, measures, percentile, wanted)
    one_pass = postgres and bool(wanted)
    if one_pass:
        # One pass: the fine groups and, for the percentile, a grouping set per wanted grouping,
        # sorted by bytes (the same groups, sorted much faster than by a linguistic collation).
        value = facts.c[percentile]
        keyed = {k: (facts.c[k].collate("C") if isinstance(facts.c[k].type, String) else facts.c[k]) for k in fine}
        cols = [keyed[k].label(k) for k in fine]
        sets = [tuple_(*keyed.values()), *(tuple_(*(keyed[k] for k in groupings[i])) if groupings[i] else text("()") for i in wanted)]
        query = select(*cols, func.grouping(*keyed.values()).label("_grouping"), *labelled,
                       func.percentile_disc(0.9).within_group(value).label("p90")).group_by(func.grouping_sets(*sets))
        masks = {sum(1 << (len(fine) - 1 - j) for j, k in enumerate(fine) if k not in groupings[i]): i for i in wanted}
    else:
        query = select(*cols, *labelled).group_by(*cols)
    for row in session.execute(query).mappings():
        if one_pass and row["_grouping"] != 0:
            index = masks[row["_grouping"]]
            key = tuple(row[k] for k in groupings[index])
            results[index].setdefault(key, _empty(counts, plain))["p90"] = row["p90"]
            continue
        for index, grouping in enumerate(groupings):
            target = results[index].setdefault(tuple(row[k] for k in grouping), _empty(counts, plain))
            for name, measure in counts.items():
                if row["category"] in measure.categories:
                    target[name] += row["_rows"]
            for name in plain:
                value_ = row[name]
                if combine[name] is max:
                    target[name] = value_ if target[name] is None else (target[name] if value_ is None else max(target[name], value_))
                else:
                    target[name] = (target[name] or 0) + (value_ or 0)
    if percentile is None or one_pass:
        return results
    value = facts.c[percentile]
    for index in wanted:
        grouping = groupings[index]
        gcols = [facts.c[k] for k in grouping]
        window = {"partition_by": gcols} if gcols else {}
        ranked = (
            select(
                *gcols,
                value.label("v"),
                func.row_number().over(order_by=value, **window).label("rn"),
                func.count().over(**window).label("n"),
            )
            .where(value.is_not(None))
            .subquery("ranked")
        )
        nearest = _idiv(ranked.c.n * literal_column("9") + literal_column("9"), 10)
        for row in session.execute(select(*(ranked.c[k] for k in grouping), ranked.c.v).where(ranked.c.rn == nearest)):
            results[index].setdefault(tuple(row[:-1]), _empty(counts, plain))["p90"] = row[-1]
    return results


def _on_part(expression: Any, facts: Any, part: Any) -> Any:
    """``expression`` over the columns of ``facts`` rewritten over the same-named columns of ``part``."""
    from sqlalchemy.sql.visitors import replacement_traverse

    def swap(element: Any) -> Any:
        if getattr(element, "table", None) is facts:
            return part.c[element.name]
        return None

    return replacement_traverse(expression, {}, swap)


def _aggregate_parts(
    session: Session,
    facts: Any,
    parts: Sequence[Any],
    groupings: Sequence[Sequence[str]],
    measures: Mapping[str, Any],
    percentile: str | None,
    wanted: Sequence[int],
) -> list[dict[tuple[Any, ...], dict[str, Any]]]:
    """:func:`_aggregate` of facts made of ``parts`` (a union): each part grouped on its own
    (hashing, no sort), the groups added up here; the percentile from the first part alone,
    the only one with values, grouped in the order of its index."""
    counts = {name: m for name, m in measures.items() if isinstance(m, _Count)}
    plain = {name: m for name, m in measures.items() if not isinstance(m, _Count)}
    combine = {name: (max if getattr(m, "name", "") == "max" else None) for name, m in plain.items()}
    keys = list(dict.fromkeys(k for grouping in groupings for k in grouping))
    fine = [*keys, "category"]
    results: list[dict[tuple[Any, ...], dict[str, Any]]] = [{} for _ in groupings]
    for part in parts:
        cols = [part.c[k] for k in fine]
        labelled = [func.count().label("_rows"), *(_on_part(m, facts, part).label(name) for name, m in plain.items())]
        for row in session.execute(select(*cols, *labelled).group_by(*cols)).mappings():
            for index, grouping in enumerate(groupings):
                target = results[index].setdefault(tuple(row[k] for k in grouping), _empty(counts, plain))
                for name, measure in counts.items():
                    if row["category"] in measure.categories:
                        target[name] += row["_rows"]
                for name in plain:
                    value_ = row[name]
                    if combine[name] is max:
                        target[name] = value_ if target[name] is None else (target[name] if value_ is None else max(target[name], value_))
                    else:
                        target[name] = (target[name] or 0) + (value_ or 0)
    if percentile is None:
        return results
    first = parts[0]
    value = first.c[percentile]
    postgres = session.get_bind().dialect.name == "postgresql"
    for index in wanted:
        grouping = groupings[index]
        gcols = [first.c[k] for k in grouping]
        if postgres:
            query = select(*gcols, func.percentile_disc(0.9).within_group(value)).where(value.is_not(None)).group_by(*gcols)
        else:
            window = {"partition_by": gcols} if gcols else {}
            ranked = (
                select(*gcols, value.label("v"), func.row_number().over(order_by=value, **window).label("rn"),
                       func.count().over(**window).label("n"))
                .where(value.is_not(None))
                .subquery("ranked")
            )
            nearest = _idiv(ranked.c.n * literal_column("9") + literal_column("9"), 10)
            query = select(*(ranked.c[k] for k in grouping), ranked.c.v).where(ranked.c.rn == nearest)
        for row in session.execute(query):
            results[index].setdefault(tuple(row[:-1]), _empty(counts, plain))["p90"] = row[-1]
    return results


def _empty(counts: Mapping[str, Any], plain: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict.fromkeys(counts, 0), **dict.fromkeys(plain), "p90": None}


def _days(seconds: Any, standard_day: int) -> float | None:
    return None if seconds is None else round(float(seconds) / standard_day, 2)


def _rate(part: int, whole: int) -> float | None:
    return None if not whole else round(part / whole, 4)


def _names(session: Session) -> tuple[dict[int, Any], dict[int, Any]]:
    agencies = {row.id: row for row in session.execute(select(Agency.id, Agency.code, Agency.name, Agency.parent_id))}
    procedures = {row.id: row for row in session.execute(select(Procedure.id, Procedure.code, Procedure.name))}
    return agencies, procedures


def _keys_of(group_by: str) -> list[str]:
    return {"agency": ["agency_id"], "procedure": ["procedure_id"], "officer": ["officer"], "step": ["procedure_id", "step_id"]}[group_by]


def _level_of(group_by: str, level: str | None) -> str:
    if group_by not in GROUPS:
        raise InvalidRequest(f"group_by phải là một trong {', '.join(GROUPS)}, không phải {str(group_by)[:40]!r}.")
    level = level or GROUPS[group_by]
    if level not in ("dossier", "step"):
        raise InvalidRequest("level phải là 'dossier' (hồ sơ) hoặc 'step' (bước xử lý).")
    if level == "dossier" and group_by in ("officer", "step"):
        raise InvalidRequest(f"Nhóm theo {group_by} chỉ tính được ở mức bước xử lý (level=step).")
    return level


def on_time(
    session: Session,
    start: datetime,
    end: datetime,
    group_by: str,
    now: datetime,
    level: str | None = None,
    agencies: Collection[int] | None = None,
    procedure: str | None = None,
) -> list[dict[str, Any]]:
    """On-time figures for ``[start, end)`` per agency, officer, procedure or step.

    ``level`` ``dossier`` judges whole dossiers against the legal deadline (an
    agency is the one the dossier belongs to); ``step`` judges steps against their
    allotments (an agency is where the step ran). ``agencies`` restricts to those
    agency ids (None: all); ``procedure`` to one procedure code. Rows carry
    ``received, carried_over, early, on_time, late, finished, in_time, overdue,
    in_progress, withdrawn|cancelled, on_time_rate, late_rate, avg_days, p90_days``
    and, per agency and officer, ``flagged`` (late share above :data:`LATE_FLAG`).
    """
    level = _level_of(group_by, level)
    ctx = _context(session, start, end, now, agencies, procedure)
    facts = _dossier_facts(ctx) if level == "dossier" else _step_facts(ctx)
    keys = _keys_of(group_by)
    ended = "withdrawn" if level == "dossier" else "cancelled"
    measures: dict[str, Any] = {
        "received": func.sum(facts.c.received),
        "carried_over": func.sum(facts.c.carried_over),
        **{name: _count(facts, name) for name in ("early", "on_time", "late", "in_time", "overdue", ended)},
        "duration_sum": func.sum(facts.c.duration),
        "duration_n": func.count(facts.c.duration),
    }
    if group_by == "step":
        measures["step_name"] = func.max(facts.c.step_name)
    [groups] = _aggregate(session, facts, [keys], measures, percentile="duration")
    agencies_by_id, procedures = _names(session)
    officers = {}
    if group_by == "officer":
        officers = dict(session.execute(select(Officer.username, Officer.full_name)).all())
    rows = []
    for key, row in groups.items():
        row = dict(zip(keys, key)) | row
        finished = int(row["early"] + row["on_time"] + row["late"])
        out: dict[str, Any] = {}
        if group_by == "agency":
            agency = agencies_by_id.get(row["agency_id"])
            out |= {"agency_code": agency.code if agency else None, "agency_name": agency.name if agency else "(chưa gắn cơ quan)"}
        elif group_by == "procedure":
            proc = procedures.get(row["procedure_id"])
            out |= {"procedure_code": proc.code, "procedure_name": proc.name}
        elif group_by == "officer":
            out |= {"officer": row["officer"], "officer_name": officers.get(row["officer"], row["officer"])}
        else:
            proc = procedures.get(row["procedure_id"])
            out |= {"procedure_code": proc.code, "procedure_name": proc.name, "step_id": row["step_id"], "step_name": row["step_name"]}
        numbers = {name: int(row[name] or 0) for name in ("received", "carried_over", "early", "on_time", "late", "in_time", "overdue", ended)}
        out |= numbers
        out |= {
            "finished": finished,
            "in_progress": numbers["in_time"] + numbers["overdue"],
            "on_time_rate": _rate(numbers["early"] + numbers["on_time"], finished),
            "late_rate": _rate(numbers["late"], finished),
            "avg_days": _days(row["duration_sum"] / row["duration_n"] if row["duration_n"] else None, ctx.work.standard_day),
            "p90_days": _days(row["p90"], ctx.work.standard_day),
        }
        if group_by in ("agency", "officer"):
            out["flagged"] = bool(finished and numbers["late"] / finished > LATE_FLAG)
        rows.append(out)
    order = {"agency": "agency_code", "procedure": "procedure_code", "officer": "officer", "step": "procedure_code"}[group_by]
    rows.sort(key=lambda r: (str(r.get(order) or ""), str(r.get("step_id") or "")))
    return rows


def _metric_filter(facts: Any, metric: str, ended: str) -> Any:
    groups = {
        "received": facts.c.received == 1,
        "carried_over": facts.c.carried_over == 1,
        "finished": facts.c.category.in_(("early", "on_time", "late")),
        "in_progress": facts.c.category.in_(("in_time", "overdue")),
    }
    if metric in groups:
        return groups[metric]
    if metric in ("early", "on_time", "late", "in_time", "overdue", ended):
        return facts.c.category == metric
    raise InvalidRequest(f"Chỉ tiêu {str(metric)[:40]!r} không có; dùng một trong: {', '.join(m for m in ON_TIME_METRICS if m != ('cancelled' if ended == 'withdrawn' else 'withdrawn'))}.")


def _key_filter(session: Session, facts: Any, group_by: str, key: str | None, step: str | None = None) -> list[Any]:
    """Conditions selecting the group ``key`` (agency code, officer username, procedure code)."""
    if key is None:
        return []
    if group_by == "agency":
        agency_id = session.scalar(select(Agency.id).where(Agency.code == key[:64]))
        if agency_id is None:
            raise NotFound(f"Không có cơ quan mã {key[:64]}.")
        return [facts.c.agency_id == agency_id]
    if group_by == "officer":
        return [facts.c.officer == key[:200]]
    procedure_id = session.scalar(select(Procedure.id).where(Procedure.code == key[:64]))
    if procedure_id is None:
        raise NotFound(f"Không có thủ tục mã {key[:64]}.")
    conditions = [facts.c.procedure_id == procedure_id]
    if group_by == "step":
        if not step:
            raise InvalidRequest("Cần mã bước (step) để xem chi tiết theo bước.")
        conditions.append(facts.c.step_id == step[:255])
    return conditions


def drill_down(
    session: Session,
    start: datetime,
    end: datetime,
    group_by: str,
    key: str | None,
    metric: str,
    now: datetime,
    level: str | None = None,
    agencies: Collection[int] | None = None,
    procedure: str | None = None,
    step: str | None = None,
    limit: int = 1000,
) -> list[str]:
    """The dossier codes behind one number of :func:`on_time`: the group ``key``
    (agency code, officer username, procedure code; for ``step`` the procedure
    code and ``step``; None: every group) and ``metric`` (see :data:`ON_TIME_METRICS`)."""
    level = _level_of(group_by, level)
    ctx = _context(session, start, end, now, agencies, procedure)
    facts = _dossier_facts(ctx) if level == "dossier" else _step_facts(ctx, codes=True)
    condition = _metric_filter(facts, metric, "withdrawn" if level == "dossier" else "cancelled")
    query = (
        select(facts.c.code)
        .where(condition, *_key_filter(session, facts, group_by, key, step))
        .group_by(facts.c.code)
        .order_by(facts.c.code)
        .limit(max(1, min(int(limit), 100_000)))
    )
    return list(session.scalars(query))


# --------------------------------------------------------------------------- bottlenecks


def _returns(ctx: _Context, procedure_id: int) -> tuple[Any, Any]:
    """Returns for rework in the period: ``(sent from a step, received by a step)`` selects
    with ``dossier_id, code, step_id, agency_id``."""
    ae = AuditEvent.__table__
    t = Task.__table__
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    if ctx.stored_times:
        r = REPORT_RETURNS
        period = [r.c.procedure_id == procedure_id, r.c.at >= ctx.start, r.c.at < ctx.end]
        sides = []
        for step, agency in ((r.c.from_step, r.c.from_agency), (r.c.to_step, r.c.to_agency)):
            where = [*period, step.is_not(None)]
            if ctx.agencies is not None:
                where.append(agency.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
            sides.append(
                select(r.c.dossier_id, d.c.code, step.label("step_id"), agency.label("agency_id"))
                .select_from(r.join(d, d.c.id == r.c.dossier_id))
                .where(*where)
            )
        return sides[0].subquery("sent"), sides[1].subquery("returned_to")
    # The period's returns first (index on action and time), then their steps and dossiers.
    events = _return_events([ae.c.action == "task.return", ae.c.at >= ctx.start, ae.c.at < ctx.end])
    base = (
        events.join(d, d.c.id == events.c.dossier_id)
        .join(pv, and_(pv.c.id == d.c.procedure_version_id, pv.c.procedure_id == procedure_id))
    )
    scope = [t.c.agency_id.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False)] if ctx.agencies is not None else []
    sent = (
        select(d.c.id.label("dossier_id"), d.c.code, t.c.step_id, t.c.agency_id)
        .select_from(base.join(t, t.c.id == events.c.task_id))
        .where(*scope)
    )
    earlier = _returned_to_agency(events)
    received = (
        select(d.c.id.label("dossier_id"), d.c.code, events.c.to_step.label("step_id"), earlier.label("agency_id"))
        .select_from(base)
        .where(events.c.to_step.is_not(None))
        .subquery("received")
    )
    received_q = select(received)
    if ctx.agencies is not None:
        received_q = received_q.where(received.c.agency_id.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    return sent.subquery("sent"), received_q.subquery("returned_to")


def _return_events(where: Sequence[Any]) -> Any:
    ae = AuditEvent.__table__
    return (
        select(ae.c.id, ae.c.dossier_id, ae.c.task_id, ae.c.at, ae.c.details["to_step"].as_string().label("to_step"))
        .where(*where)
        .offset(0)
        .subquery("return_events")
    )


def _returned_to_agency(events: Any) -> Any:
    """The agency of the step sent back to: the step named in the event, at the agency of its latest earlier run."""
    t = Task.__table__
    return (
        select(t.c.agency_id)
        .where(t.c.dossier_id == events.c.dossier_id, t.c.step_id == events.c.to_step, t.c.started_at <= events.c.at)
        .order_by(t.c.started_at.desc(), t.c.id.desc())
        .limit(1)
        .correlate(events)
        .scalar_subquery()
    )


def _returns_source(work: _WorkingTime, since: datetime, where: Sequence[Any]) -> Any:
    """The :data:`REPORT_RETURNS` rows of the return events ``where`` selects."""
    t = Task.__table__
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    events = _return_events(where)
    return (
        select(events.c.id, events.c.at, events.c.dossier_id, pv.c.procedure_id, t.c.step_id, t.c.agency_id,
               events.c.to_step, case((events.c.to_step.is_not(None), _returned_to_agency(events)), else_=None))
        .select_from(
            events.join(d, d.c.id == events.c.dossier_id).join(pv, pv.c.id == d.c.procedure_version_id)
            .outerjoin(t, t.c.id == events.c.task_id)
        )
    )


def _queue(ctx: _Context, procedure_id: int, now: datetime) -> Any:
    t = Task.__table__
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    where = [t.c.state.in_(TaskState.OPEN), pv.c.procedure_id == procedure_id]
    if ctx.agencies is not None:
        where.append(t.c.agency_id.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    overdue = and_(t.c.due_at < now, d.c.paused_at.is_(None))
    return (
        select(d.c.code, t.c.step_id, t.c.step_name, t.c.agency_id, case((overdue, 1), else_=0).label("overdue"))
        .select_from(t.join(d, d.c.id == t.c.dossier_id).join(pv, pv.c.id == d.c.procedure_version_id))
        .where(*where)
        .subquery("queue")
    )


def bottlenecks(
    session: Session,
    procedure: str,
    start: datetime,
    end: datetime,
    now: datetime,
    agencies: Collection[int] | None = None,
    rank_by: str = "late_share",
) -> dict[str, Any]:
    """Where dossiers of ``procedure`` pile up: per step (at each agency) and per agency.

    Each row: ``queue`` (open steps now), ``queue_overdue``, ``received`` and
    ``finished`` in the period, ``late`` and ``late_share``, average working days
    ``avg_wait_days`` before the step was claimed and ``avg_work_days`` from claim to
    completion, ``avg_days`` / ``p90_days`` in the step, ``returns_sent`` (sent back
    from this step for rework) and ``returns_received`` (this step's work sent
    back to it). Rows are ranked by ``rank_by`` (see :data:`RANK_BY`), worst first;
    :func:`bottleneck_drill_down` lists the dossier codes behind a number.
    """
    if rank_by not in RANK_BY:
        raise InvalidRequest(f"rank_by phải là một trong {', '.join(RANK_BY)}.")
    if not procedure:
        raise InvalidRequest("Cần mã thủ tục (procedure).")
    ctx = _context(session, start, end, now, agencies, procedure)
    assert ctx.procedure_id is not None
    facts = _step_facts(ctx, with_wait=True)
    queue = _queue(ctx, ctx.procedure_id, now)
    sent, returned = _returns(ctx, ctx.procedure_id)
    agencies_by_id, procedures = _names(session)
    result: dict[str, Any] = {"procedure_code": procedures[ctx.procedure_id].code, "procedure_name": procedures[ctx.procedure_id].name}
    groupings = [["step_id", "agency_id"], ["agency_id"]]
    measures = {
        "step_name": func.max(facts.c.step_name),
        "received": func.sum(facts.c.received),
        "finished": _count(facts, "early", "on_time", "late"),
        "late": _count(facts, "late"),
        "wait_sum": func.coalesce(func.sum(facts.c.waiting), 0),
        "wait_n": func.count(facts.c.waiting),
        "work_sum": func.coalesce(func.sum(facts.c.working), 0),
        "work_n": func.count(facts.c.working),
        "dur_sum": func.coalesce(func.sum(facts.c.duration), 0),
        "dur_n": func.count(facts.c.duration),
    }
    # The 90th percentile per step (an agency's steps differ too much for one to mean much).
    aggregated = _aggregate(session, facts, groupings, measures, percentile="duration", percentile_for=[0])
    # Queue and returns are small and additive: counted per step and agency, summed per agency.
    fine: dict[tuple[Any, ...], dict[str, Any]] = {}
    for step_id, agency_id, name, count, overdue in session.execute(
        select(queue.c.step_id, queue.c.agency_id, func.max(queue.c.step_name), func.count(), func.sum(queue.c.overdue))
        .group_by(queue.c.step_id, queue.c.agency_id)
    ):
        fine.setdefault((step_id, agency_id), {})
        fine[(step_id, agency_id)] |= {"queue": int(count), "queue_overdue": int(overdue or 0), "queue_name": name}
    for source, label in ((sent, "returns_sent"), (returned, "returns_received")):
        for step_id, agency_id, count in session.execute(
            select(source.c.step_id, source.c.agency_id, func.count()).group_by(source.c.step_id, source.c.agency_id)
        ):
            fine.setdefault((step_id, agency_id), {})[label] = int(count)
    std = ctx.work.standard_day
    for grouping, groups in (("steps", aggregated[0]), ("agencies", aggregated[1])):
        table: dict[tuple[Any, ...], dict[str, Any]] = {key: dict(values) for key, values in groups.items()}
        for (step_id, agency_id), extra in fine.items():
            key = (step_id, agency_id) if grouping == "steps" else (agency_id,)
            target = table.setdefault(key, {})
            for name in ("queue", "queue_overdue", "returns_sent", "returns_received"):
                target[name] = target.get(name, 0) + extra.get(name, 0)
            if not target.get("step_name"):
                target["step_name"] = extra.get("queue_name")
        rows = []
        for key, item in table.items():
            numbers = {name: int(item.get(name) or 0) for name in (
                "queue", "queue_overdue", "received", "finished", "late", "returns_sent", "returns_received",
                "wait_sum", "wait_n", "work_sum", "work_n", "dur_sum", "dur_n")}
            agency_id = key[-1]
            agency = agencies_by_id.get(agency_id)
            out: dict[str, Any] = {"step_id": key[0], "step_name": item.get("step_name")} if grouping == "steps" else {}
            out |= {
                "agency_code": agency.code if agency else None,
                "agency_name": agency.name if agency else "(chưa gắn cơ quan)",
                **{k: v for k, v in numbers.items() if not k.endswith(("_sum", "_n"))},
                "late_share": _rate(numbers["late"], numbers["finished"]),
                "avg_wait_days": _days(numbers["wait_sum"] / numbers["wait_n"] if numbers["wait_n"] else None, std),
                "avg_work_days": _days(numbers["work_sum"] / numbers["work_n"] if numbers["work_n"] else None, std),
                "avg_days": _days(numbers["dur_sum"] / numbers["dur_n"] if numbers["dur_n"] else None, std),
                "p90_days": _days(item.get("p90"), std),
            }
            rows.append(out)
        sort_key = {
            "late_share": lambda r: (r["late_share"] or 0, r["late"], r["queue_overdue"]),
            "queue": lambda r: (r["queue"], r["queue_overdue"]),
            "waiting": lambda r: (r["avg_wait_days"] or 0,),
            "working": lambda r: (r["avg_work_days"] or 0,),
            "returns": lambda r: (r["returns_received"] + r["returns_sent"],),
        }[rank_by]
        rows.sort(key=lambda r: (sort_key(r), str(r.get("step_id") or ""), str(r["agency_code"] or "")), reverse=True)
        for rank, item in enumerate(rows, 1):
            item["rank"] = rank
        result[grouping] = rows
    return result


def bottleneck_drill_down(
    session: Session,
    procedure: str,
    start: datetime,
    end: datetime,
    metric: str,
    now: datetime,
    step: str | None = None,
    agency: str | None = None,
    agencies: Collection[int] | None = None,
    limit: int = 1000,
) -> list[str]:
    """The dossier codes behind a number of :func:`bottlenecks` (``step`` and/or ``agency``
    code select the row; ``metric`` one of :data:`BOTTLENECK_METRICS`)."""
    if metric not in BOTTLENECK_METRICS:
        raise InvalidRequest(f"Chỉ tiêu phải là một trong {', '.join(BOTTLENECK_METRICS)}.")
    ctx = _context(session, start, end, now, agencies, procedure)
    assert ctx.procedure_id is not None
    agency_id = None
    if agency is not None:
        agency_id = session.scalar(select(Agency.id).where(Agency.code == agency[:64]))
        if agency_id is None:
            raise NotFound(f"Không có cơ quan mã {agency[:64]}.")
    if metric in ("queue", "queue_overdue"):
        source = _queue(ctx, ctx.procedure_id, now)
        where = [source.c.overdue == 1] if metric == "queue_overdue" else []
    elif metric in ("returns_sent", "returns_received"):
        sent, returned = _returns(ctx, ctx.procedure_id)
        source, where = (sent if metric == "returns_sent" else returned), []
    else:
        source = _step_facts(ctx, codes=True)
        where = [_metric_filter(source, metric, "cancelled")]
    if step is not None:
        where.append(source.c.step_id == step[:255])
    if agency is not None:
        where.append(source.c.agency_id == agency_id)
    query = select(source.c.code).where(*where).group_by(source.c.code).order_by(source.c.code).limit(max(1, min(int(limit), 100_000)))
    return list(session.scalars(query))


# --------------------------------------------------------------------------- satisfaction


def satisfaction(
    session: Session,
    start: datetime,
    end: datetime,
    now: datetime,
    group_by: str = "agency",
    agencies: Collection[int] | None = None,
    procedure: str | None = None,
    reasons: int = 20,
) -> list[dict[str, Any]]:
    """Ratings and feedback per agency (the dossier's) or procedure, with the satisfaction
    score of Decision 766: 100 % − late rate − share of finished dossiers with a
    dissatisfied rating or a complaint (feedback about them), never below 0.

    ``reasons`` lists up to that many dissatisfied ratings and complaints per row:
    the dossier, the comment, and the criteria scored below "Bình thường".
    """
    if group_by not in ("agency", "procedure"):
        raise InvalidRequest("Mức độ hài lòng nhóm theo 'agency' (cơ quan) hoặc 'procedure' (thủ tục).")
    ctx = _context(session, start, end, now, agencies, procedure)
    facts = _dossier_facts(ctx)
    key = "agency_id" if group_by == "agency" else "procedure_id"
    d = Dossier.__table__
    pv = ProcedureVersion.__table__
    r = Rating.__table__
    fb = Feedback.__table__
    table: dict[Any, dict[str, Any]] = {}

    def row(k: Any) -> dict[str, Any]:
        return table.setdefault(k, {"finished": 0, "late": 0, "complained": 0, "ratings": 0, "satisfied": 0, "dissatisfied": 0, "feedback": 0, "reasons": []})

    complained = or_(
        select(r.c.id).where(r.c.dossier_id == facts.c.dossier_id, r.c.satisfied.is_(False)).exists(),
        select(fb.c.id).where(fb.c.dossier_id == facts.c.dossier_id).exists(),
    )
    for k, finished, late, bad in session.execute(
        select(
            facts.c[key],
            _sql_count(facts, "early", "on_time", "late"),
            _sql_count(facts, "late"),
            func.sum(case((and_(facts.c.category.in_(("early", "on_time", "late")), complained), 1), else_=0)),
        ).group_by(facts.c[key])
    ):
        item = row(k)
        item["finished"], item["late"], item["complained"] = int(finished or 0), int(late or 0), int(bad or 0)
    d_agency = func.coalesce(d.c.home_agency_id, d.c.receiving_agency_id)
    d_key = d_agency if group_by == "agency" else pv.c.procedure_id
    rating_where = [r.c.created_at >= start, r.c.created_at < end]
    if ctx.agencies is not None:
        rating_where.append(d_agency.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    if ctx.procedure_id is not None:
        rating_where.append(pv.c.procedure_id == ctx.procedure_id)
    rated_from = r.join(d, d.c.id == r.c.dossier_id).join(pv, pv.c.id == d.c.procedure_version_id)
    for k, total, good in session.execute(
        select(d_key, func.count(), func.sum(case((r.c.satisfied.is_(True), 1), else_=0))).select_from(rated_from).where(*rating_where).group_by(d_key)
    ):
        item = row(k)
        item["ratings"], item["satisfied"] = int(total), int(good or 0)
        item["dissatisfied"] = item["ratings"] - item["satisfied"]
    labels = {key_: text.split(":")[0] for key_, text in CRITERIA.items()}
    for k, code, comment, scores, at in session.execute(
        select(d_key, d.c.code, r.c.comment, r.c.scores, r.c.created_at)
        .select_from(rated_from)
        .where(*rating_where, r.c.satisfied.is_(False))
        .order_by(r.c.created_at.desc(), r.c.id.desc())
    ):
        item = row(k)
        if len(item["reasons"]) < reasons:
            low = [labels.get(c, c) for c, score in (scores or {}).items() if isinstance(score, int) and score < SATISFIED_FROM]
            item["reasons"].append({"kind": "rating", "dossier_code": code, "comment": comment, "criteria": low, "at": at})
    # Feedback: about a dossier (its agency and procedure) or, per agency, about the agency itself.
    fb_from = fb.outerjoin(d, d.c.id == fb.c.dossier_id).outerjoin(pv, pv.c.id == d.c.procedure_version_id)
    fb_key = func.coalesce(fb.c.agency_id, d_agency) if group_by == "agency" else pv.c.procedure_id
    fb_where = [fb.c.created_at >= start, fb.c.created_at < end, fb_key.is_not(None)]
    if ctx.agencies is not None:
        agency_expr = func.coalesce(fb.c.agency_id, d_agency)
        fb_where.append(agency_expr.in_(sorted(ctx.agencies)) if ctx.agencies else literal(False))
    if ctx.procedure_id is not None:
        fb_where.append(pv.c.procedure_id == ctx.procedure_id)
    for k, subject, content, code, at in session.execute(
        select(fb_key, fb.c.subject, fb.c.content, d.c.code, fb.c.created_at).select_from(fb_from).where(*fb_where).order_by(fb.c.created_at.desc(), fb.c.id.desc())
    ):
        item = row(k)
        item["feedback"] += 1
        if len(item["reasons"]) < reasons:
            item["reasons"].append({"kind": "feedback", "dossier_code": code, "comment": f"{subject}: {content}"[:500], "criteria": [], "at": at})
    agencies_by_id, procedures = _names(session)
    rows = []
    for k, item in table.items():
        out: dict[str, Any] = {}
        if group_by == "agency":
            agency = agencies_by_id.get(k)
            out |= {"agency_code": agency.code if agency else None, "agency_name": agency.name if agency else "(chưa gắn cơ quan)"}
        else:
            proc = procedures[k]
            out |= {"procedure_code": proc.code, "procedure_name": proc.name}
        late_rate = _rate(item["late"], item["finished"])
        complaint_rate = _rate(item["complained"], item["finished"])
        score = None
        if item["finished"]:
            score = round(max(0.0, 100.0 - 100.0 * item["late"] / item["finished"] - 100.0 * item["complained"] / item["finished"]), 2)
        out |= {k2: item[k2] for k2 in ("finished", "late", "complained", "ratings", "satisfied", "dissatisfied", "feedback")}
        out |= {
            "late_rate": late_rate,
            "complaint_rate": complaint_rate,
            "dissatisfied_share": _rate(item["dissatisfied"], item["ratings"]),
            "score": score,
            "reasons": item["reasons"],
        }
        rows.append(out)
    rows.sort(key=lambda x: str(x.get("agency_code") or x.get("procedure_code") or ""))
    return rows


# --------------------------------------------------------------------------- periodic report


#: Columns of the periodic report, in order: key → Vietnamese header.
REPORT_COLUMNS: dict[str, str] = {
    "total": "Tổng số hồ sơ nhận giải quyết",
    "carried_over": "Kỳ trước chuyển qua",
    "received_online": "Mới tiếp nhận trực tuyến",
    "received_direct": "Mới tiếp nhận trực tiếp, bưu chính",
    "finished": "Đã giải quyết: tổng số",
    "early": "Trước hạn",
    "on_time": "Đúng hạn",
    "late": "Quá hạn",
    "in_progress": "Đang giải quyết: tổng số",
    "in_time": "Chưa đến hạn",
    "overdue": "Quá hạn (đang giải quyết)",
    "withdrawn": "Rút hồ sơ, dừng xử lý",
    "on_time_rate": "Tỷ lệ đúng hạn (%)",
    "avg_days": "Thời gian giải quyết trung bình (ngày làm việc)",
}


@dataclass
class PeriodicReport:
    """The on-time report of an agency and the agencies under it for a period."""

    period: Period
    agency_code: str
    agency_name: str
    generated_at: datetime
    #: One row per agency (depth-first, with ``depth``), per procedure, and the totals.
    by_agency: list[dict[str, Any]] = field(default_factory=list)
    by_procedure: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)


def periodic_report(
    session: Session,
    agency_code: str,
    period: Period | str,
    now: datetime,
    visible: Collection[int] | None = None,
) -> PeriodicReport:
    """Quarterly, 6-month, 9-month or yearly report (``Q1-2026``, ``H1-2026``, ``9M-2026``,
    ``2026``) of ``agency_code`` and the agencies under it: dossiers counted by the agency
    they belong to, rows per agency and per procedure, totals."""
    if isinstance(period, str):
        period = parse_period(period)
    scope = scope_of(session, agency_code, visible)
    assert scope is not None
    ctx = _context(session, period.start, period.end, now, scope, None)
    facts = _dossier_facts(ctx)
    agencies_by_id, procedures = _names(session)
    measures = {
        "online": func.sum(case((and_(facts.c.received == 1, facts.c.channel == "online"), 1), else_=0)),
        "direct": func.sum(case((and_(facts.c.received == 1, facts.c.channel != "online"), 1), else_=0)),
        "carried": func.sum(facts.c.carried_over),
        **{name: _count(facts, name) for name in ("early", "on_time", "late", "in_time", "overdue", "withdrawn")},
        "dur_sum": func.coalesce(func.sum(facts.c.duration), 0),
        "dur_n": func.count(facts.c.duration),
    }
    # Per agency, per procedure and the totals from the same facts (not by adding rounded rows).
    by_agency, by_procedure, totals = _aggregate(session, facts, [["agency_id"], ["procedure_id"], []], measures, additive=True)

    def as_row(values: Mapping[str, Any] | None) -> dict[str, Any]:
        return _report_row(*(int((values or {}).get(name) or 0) for name in measures))

    tables = {
        "agency_id": {key[0]: as_row(values) for key, values in by_agency.items()},
        "procedure_id": {key[0]: as_row(values) for key, values in by_procedure.items()},
    }
    total = totals.get(())
    std = ctx.work.standard_day
    root = organisation.agency_tree(session).by_code[agency_code]
    report = PeriodicReport(period, agency_code, agencies_by_id[root.id].name, now)
    tree = organisation.agency_tree(session)
    for node, depth in _depth_first(tree, root.id):
        if node.id not in scope:
            continue
        agency = agencies_by_id[node.id]
        numbers = tables["agency_id"].get(node.id) or as_row(None)
        report.by_agency.append({"agency_code": agency.code, "agency_name": agency.name, "depth": depth} | _finish_row(numbers, std))
    for proc_id, numbers in sorted(tables["procedure_id"].items(), key=lambda item: procedures[item[0]].code):
        proc = procedures[proc_id]
        report.by_procedure.append({"procedure_code": proc.code, "procedure_name": proc.name} | _finish_row(numbers, std))
    report.totals = _finish_row(as_row(total), std)
    return report


def _report_row(online: int, direct: int, carried: int, early: int, on_time: int, late: int, in_time: int, overdue: int,
                withdrawn: int, dur_sum: int, dur_n: int) -> dict[str, Any]:
    finished = early + on_time + late
    in_progress = in_time + overdue
    return {
        "total": carried + online + direct, "carried_over": carried, "received_online": online, "received_direct": direct,
        "finished": finished, "early": early, "on_time": on_time, "late": late, "in_progress": in_progress,
        "in_time": in_time, "overdue": overdue, "withdrawn": withdrawn, "_dur_sum": dur_sum, "_dur_n": dur_n,
    }


def _finish_row(numbers: Mapping[str, Any], standard_day: int) -> dict[str, Any]:
    out = {k: v for k, v in numbers.items() if not k.startswith("_")}
    rate = _rate(numbers["early"] + numbers["on_time"], numbers["finished"])
    out["on_time_rate"] = None if rate is None else round(rate * 100, 2)
    out["avg_days"] = _days(numbers["_dur_sum"] / numbers["_dur_n"] if numbers["_dur_n"] else None, standard_day)
    return out


def _depth_first(tree: Any, root: int) -> Iterable[tuple[Any, int]]:
    stack = [(tree.nodes[root], 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        for child in sorted(tree.children.get(node.id, []), key=lambda n: n.code, reverse=True):
            stack.append((child, depth + 1))
