"""A seeded simulation of months of one-stop work, written through the use cases.

The simulator plays receptionists, officers, leaders and applicants on a
virtual clock: dossiers arrive during working hours with a weekly pattern
(online ones at any hour), officers claim and finish steps at their own speed,
one or more bottleneck steps run late, applicants are asked for supplements
and pay their financial obligations, some withdraw, late agencies apologise,
results are returned and rated. Every change goes through the engine's own use
cases (``services``, ``lifecycle``, ``public``, ``escalation``) with the
virtual ``now``, so the audit trail, due dates, escalations and notifications
are exactly what real use would leave behind.

The same seed on the same database gives the same history.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from . import escalation, lifecycle, public, services
from .core.calendar import VN_TZ, WorkingCalendar
from .errors import Conflict, EngineError
from .persistence.models import Agency, Officer, OfficerRole, Procedure, ProcedureVersion

__all__ = ["Arrival", "SimulationPlan", "SimulationReport", "arrival_instants", "form_value", "person_name", "simulate"]

#: Relative arrivals per weekday (Monday first): Mondays are busiest, a
#: make-up Saturday is quiet; Sunday only sees online filings.
WEEKDAY_LOAD = (1.35, 1.1, 1.0, 1.0, 0.85, 0.45, 0.0)

#: Boolean form fields whose True sends the dossier back for rework.
REWORK_FIELDS = frozenset({"tra_lai", "can_xac_minh_them"})
#: Boolean form fields whose False ends the dossier with a refusal.
VERDICT_FIELDS = frozenset({"hop_le", "du_dieu_kien", "khong_tranh_chap"})
#: The agency kind that determines financial obligations (the tax authority).
TAX_AGENCY = "named:thue"

_FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý")
_MIDDLE = ("Văn", "Thị", "Hữu", "Minh", "Ngọc", "Thanh", "Đức", "Thu", "Quốc", "Hoài", "Kim", "Gia")
_GIVEN = ("An", "Bình", "Chi", "Dũng", "Hà", "Hải", "Hạnh", "Hùng", "Khoa", "Lan", "Linh", "Long", "Mai", "Nam", "Ngân",
          "Phúc", "Quân", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Uyên", "Vy", "Yến")
_PLACES = ("ấp 1", "ấp 2", "ấp Bến Cam", "ấp Long Hiệu", "khu phố 3", "tổ 5 ấp Phước Lý", "đường Lý Thái Tổ", "đường 25B")
_COMPLAINTS = (
    "Hồ sơ trễ hẹn nhưng không được báo trước.",
    "Phải đi lại nhiều lần để bổ sung giấy tờ.",
    "Cán bộ hướng dẫn chưa rõ ràng.",
    "Thời gian chờ tại bộ phận một cửa quá lâu.",
)


@dataclass(frozen=True)
class Arrival:
    """A dossier arriving: when, whether filed online, and at which desk (None: any commune)."""

    at: datetime
    online: bool
    desk: str | None = None


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate.

    ``mix`` weighs procedure codes (default: every deployed procedure with the
    weights of :data:`DEFAULT_MIX`, others 1); ``bottlenecks`` slows step ids
    down by a factor (2.0 = twice the usual working time). Rates are per dossier.
    """

    start: datetime
    end: datetime
    dossiers: int
    seed: int = 2026
    mix: Mapping[str, float] | None = None
    bottlenecks: Mapping[str, float] = field(default_factory=lambda: {"tham_tra_ho_so": 2.6, "dang_ky_thuong_tru": 2.4})
    online_share: float = 0.2
    supplement_rate: float = 0.07
    abandon_rate: float = 0.15  # of the supplement requests: the applicant never comes back and withdraws
    withdraw_rate: float = 0.015
    rework_rate: float = 0.08
    refusal_rate: float = 0.03
    return_rate: float = 0.03  # an officer returns the step to the previous one
    rating_rate: float = 0.4
    feedback_rate: float = 0.01
    sweep_hours: tuple[int, ...] = (7, 13)
    arrivals: tuple[Arrival, ...] | None = None  # replay these instead of drawing arrivals
    #: Observed working hours per step id, (waits before claim, claim to completion):
    #: when given, a step takes as long as one drawn from history, whatever its allotment.
    step_hours: Mapping[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dossiers < 0:
            raise ValueError("The number of dossiers cannot be negative.")
        if self.end <= self.start:
            raise ValueError("The simulated period must end after it starts.")


#: How often each bundled procedure is asked for (a commune's usual mix).
DEFAULT_MIX: dict[str, float] = {
    "2.000815": 30,  # chứng thực bản sao
    "1.001193": 14,  # khai sinh
    "LT.KS-TT-BHYT": 8,
    "1.001612": 8,  # hộ kinh doanh
    "LLTP-CA-TINH": 10,
    "1.013978": 6,  # đất đai lần đầu
    "1.013225": 6,  # giấy phép xây dựng
    "1.013831": 5,  # chuyển nhượng quyền sử dụng đất
}


@dataclass
class SimulationReport:
    """What happened, counted by kind of event."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**dict(sorted(self.counts.items())), "errors": len(self.errors)}


# --------------------------------------------------------------------------- arrivals


def _spans(day: date, sessions: Sequence[tuple[time, time]], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of ``day``'s sessions that fall within [start, end)."""
    out = []
    for a, b in sessions:
        lo, hi = max(datetime.combine(day, a, VN_TZ), start), min(datetime.combine(day, b, VN_TZ), end)
        if lo < hi:
            out.append((lo, hi))
    return out


def _length(spans: Sequence[tuple[datetime, datetime]]) -> float:
    return sum((b - a).total_seconds() for a, b in spans)


def _random_instant_in(rng: random.Random, spans: Sequence[tuple[datetime, datetime]]) -> datetime:
    """A uniformly random instant within ``spans``."""
    offset = rng.uniform(0, _length(spans))
    for a, b in spans:
        length = (b - a).total_seconds()
        if offset < length:
            return a + timedelta(seconds=int(offset))
        offset -= length
    return spans[-1][0]


def arrival_instants(
    calendar: WorkingCalendar, start: datetime, end: datetime, count: int, online_share: float, rng: random.Random
) -> Iterator[tuple[datetime, bool]]:
    """``count`` arrival instants in [start, end), in order, each with whether it was filed online.

    Desk arrivals fall inside working sessions, weighted by :data:`WEEKDAY_LOAD`
    (a make-up working Saturday counts as a working day); online filings come at
    any hour of any day, more in the evening. Days are drawn first and each
    day's instants only when it comes, so a million arrivals need little memory.
    """
    first, last = start.astimezone(VN_TZ).date(), (end - timedelta(microseconds=1)).astimezone(VN_TZ).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    whole_day = ((time(0), time(23, 59, 59, 999999)),)
    desk = {d: spans for d in days if (spans := _spans(d, calendar.sessions_on(d), start, end))}
    online = {d: spans for d in days if (spans := _spans(d, whole_day, start, end))}
    # A day cut by the period's ends weighs by the share of it that is inside.
    desk_weights = [
        (WEEKDAY_LOAD[d.weekday()] or 0.45) * _length(spans) / _length(_spans(d, calendar.sessions_on(d), _MIN, _MAX))
        for d, spans in desk.items()
    ]
    online_weights = [_length(spans) / 86400 for spans in online.values()]
    online_count = sum(1 for _ in range(count) if rng.random() < online_share) if desk else count
    per_day: Counter[tuple[date, bool]] = Counter()
    for day in rng.choices(list(desk), desk_weights, k=count - online_count) if desk else ():
        per_day[(day, False)] += 1
    for day in rng.choices(list(online), online_weights, k=online_count):
        per_day[(day, True)] += 1
    for day in days:
        batch = [(_random_instant_in(rng, desk[day]), False) for _ in range(per_day[(day, False)])]
        for _ in range(per_day[(day, True)]):
            for _try in range(50):  # more in the evening: accept an instant by the weight of its hour
                at = _random_instant_in(rng, online[day])
                if rng.random() * 1.6 < _ONLINE_HOURS[at.hour]:
                    break
            batch.append((at, True))
        batch.sort()
        yield from batch


_MIN = datetime.min.replace(tzinfo=VN_TZ) + timedelta(days=1)
_MAX = datetime.max.replace(tzinfo=VN_TZ) - timedelta(days=1)
#: Relative online filings per hour of the day.
_ONLINE_HOURS = (0.2,) * 6 + (0.6, 1, 1, 1, 1, 0.8, 0.8, 1, 1, 1, 0.9, 0.8, 1, 1.4, 1.6, 1.4, 0.8, 0.4)


# --------------------------------------------------------------------------- the world


@dataclass
class _Procedure:
    code: str
    meta: dict[str, Any]
    first_step: str | None


@dataclass
class _Case:
    """What the simulator remembers of one dossier (the engine holds the truth)."""

    code: str
    procedure: _Procedure
    rng: random.Random  # this dossier's own stream: a change elsewhere leaves its draws alone
    phone: str
    channel: str
    received_at: datetime
    supplement_asked: bool = False
    payment_asked: bool = False
    apologised: bool = False
    finished: bool = False
    seen_tasks: set[int] = field(default_factory=set)


class _World:
    def __init__(self, sessions: sessionmaker[Session], plan: SimulationPlan, report: SimulationReport) -> None:
        self.sessions = sessions
        self.plan = plan
        self.report = report
        self.rng = random.Random(plan.seed)
        self.queue: list[tuple[datetime, int, str, tuple[Any, ...]]] = []
        self.arrivals: Iterator[Arrival] = iter(())
        self.free_at: dict[str, datetime] = {}  # officer → when their current work is done
        self.seq = itertools.count()
        with sessions() as session:
            self.calendar = services.load_calendar(session)
            self.procedures = self._procedures(session)
            self.holders = self._holders(session)
            self.communes = list(
                session.scalars(
                    select(Agency.code).where(Agency.level == "commune", Agency.active.is_(True)).order_by(Agency.code)
                )
            )
        self.speed = {
            name: round(random.Random(f"{plan.seed}/{name}").lognormvariate(0, 0.25), 3)
            for names in self.holders.values() for name in names
        }
        self.arrived = 0
        self.tiebreak = random.Random(f"{plan.seed}/tiebreak")

    # -------------------------------------------------------- set-up

    def _procedures(self, session: Session) -> list[tuple[_Procedure, float]]:
        rows = session.execute(
            select(Procedure.code, ProcedureVersion.meta)
            .join(ProcedureVersion, ProcedureVersion.procedure_id == Procedure.id)
            .order_by(Procedure.code, ProcedureVersion.version)
        ).all()
        latest: dict[str, dict[str, Any]] = {}
        for code, meta in rows:
            latest[code] = meta
        mix = self.plan.mix or {code: DEFAULT_MIX.get(code, 1.0) for code in latest}
        out = []
        for code, weight in sorted(mix.items()):
            if code not in latest:
                raise EngineError(f"Procedure {code} is not deployed; deploy it before simulating.")
            if weight > 0:
                steps = latest[code].get("steps", {})
                out.append((_Procedure(code, latest[code], next(iter(steps), None)), float(weight)))
        if not out:
            raise EngineError("No procedure is deployed; deploy the procedures before simulating.")
        return out

    @staticmethod
    def _holders(session: Session) -> dict[tuple[int, str], list[str]]:
        holders: dict[tuple[int, str], list[str]] = defaultdict(list)
        rows = session.execute(
            select(OfficerRole.agency_id, OfficerRole.role, Officer.username)
            .join(Officer, Officer.id == OfficerRole.officer_id)
            .where(Officer.active.is_(True))
            .order_by(Officer.username)
        )
        for agency_id, role, username in rows:
            holders[(agency_id, role)].append(username)
        return holders

    # -------------------------------------------------------- clock

    def at(self, when: datetime, kind: str, *args: Any) -> None:
        if when < self.plan.end:
            heapq.heappush(self.queue, (when, next(self.seq), kind, args))

    def later(self, start: datetime, working_hours: float) -> datetime:
        return self.calendar.add_working_hours(start, max(working_hours, 0.02))

    def events(self) -> Iterator[tuple[datetime, str, tuple[Any, ...]]]:
        while self.queue:
            when, _seq, kind, args = heapq.heappop(self.queue)
            yield when, kind, args


def _allotment_hours(step: Mapping[str, Any]) -> float:
    amount, unit = step.get("allotment_amount"), step.get("allotment_unit")
    if not amount:
        return 4.0
    value = float(Decimal(amount))
    return {"working_hours": value, "working_days": value * 8, "calendar_days": value * 8 * 5 / 7}.get(unit or "", 8.0)


def person_name(rng: random.Random) -> str:
    """A Vietnamese full name drawn from common family, middle and given names."""
    return f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"


def form_value(rng: random.Random, field_def: Mapping[str, Any], plan: SimulationPlan, now: datetime) -> Any:
    """A plausible value for a step's form field; booleans follow the plan's rework and refusal rates."""
    name, kind = field_def["id"], field_def.get("type", "string")
    if kind == "boolean":
        if name in REWORK_FIELDS:
            return rng.random() < plan.rework_rate
        if name in VERDICT_FIELDS:
            return rng.random() >= plan.refusal_rate
        return True
    if kind == "long":
        if "phi" in name:
            return rng.choice((0, 8_000, 10_000, 25_000, 100_000))
        if name.startswith("nam_sinh"):
            return rng.randint(1965, 2004)
        return rng.randint(1, 300)
    if kind == "date":
        return (now - timedelta(days=rng.randint(1, 50))).date().isoformat()
    if kind == "enum":
        return rng.choice(("Nam", "Nữ"))
    if name.startswith(("ho_ten", "nguoi")):
        return person_name(rng)
    if name.startswith("so_") or name.startswith("ma_"):
        return f"{rng.randint(1, 9999):04d}/{now:%Y}"
    if "dia" in name or "noi" in name:
        return f"{rng.choice(_PLACES)}, {rng.choice(('xã Phước An', 'xã Long Thọ', 'xã Đại Phước'))}"
    return rng.choice(("Đạt yêu cầu", "Đã kiểm tra, đúng quy định", "Đề nghị giải quyết", "Không có ý kiến khác"))


# --------------------------------------------------------------------------- the run


def simulate(
    sessions: sessionmaker[Session],
    plan: SimulationPlan,
    progress: Callable[[int, int, datetime], None] | None = None,
) -> SimulationReport:
    """Play ``plan`` against the database behind ``sessions``; return what happened.

    The organisation and the procedures must be in place. ``progress`` is called
    with (dossiers received so far, dossiers planned, virtual now) every 1 % of
    the arrivals.
    """
    report = SimulationReport()
    world = _World(sessions, plan, report)
    rng = world.rng
    if plan.arrivals is not None:
        world.arrivals = iter(sorted(plan.arrivals, key=lambda a: a.at))
    else:
        drawn = arrival_instants(world.calendar, plan.start, plan.end, plan.dossiers, plan.online_share, rng)
        world.arrivals = (Arrival(at, online) for at, online in drawn)
    _next_arrival(world)
    day = plan.start.astimezone(VN_TZ).date()
    while datetime.combine(day, time(0), VN_TZ) < plan.end:
        if world.calendar.is_working_day(day):
            for hour in plan.sweep_hours:
                world.at(datetime.combine(day, time(hour, 30), VN_TZ), "sweep")
        day += timedelta(days=1)

    step = max(1, plan.dossiers // 100)
    with sessions() as session:
        for now, kind, args in world.events():
            try:
                _HANDLERS[kind](world, session, now, *args)
            except EngineError as err:  # a rule of the engine said no: note it, as a real user would
                session.rollback()
                report.counts["refused_by_engine"] += 1
                report.errors.append(f"{now:%d/%m/%Y %H:%M} {kind}: {err}")
            if kind == "arrive" and progress and (report.counts["received"] % step == 0 or report.counts["received"] == plan.dossiers):
                progress(report.counts["received"], plan.dossiers, now)
    return report


def _next_arrival(world: _World) -> None:
    """Put the next arrival on the clock (one at a time keeps the queue small)."""
    for arrival in world.arrivals:
        procedures, weights = zip(*world.procedures, strict=True)
        world.at(arrival.at, "arrive", world.rng.choices(procedures, weights)[0], arrival)
        return


def _arrive(world: _World, session: Session, now: datetime, procedure: _Procedure, arrival: Arrival) -> None:
    _next_arrival(world)
    world.arrived += 1
    plan = world.plan
    rng = random.Random(f"{plan.seed}/dossier/{world.arrived}")
    online = arrival.online
    desk = arrival.desk or rng.choice(world.communes)
    receptionist = _someone(world, session, desk, "receptionist", rng)
    phone = f"09{rng.randint(10_000_000, 99_999_999)}"
    applicant = {"name": person_name(rng), "phone": phone, "email": None}
    channel = "online" if online else ("post" if rng.random() < 0.03 else "in_person")
    record = services.start_dossier(
        session, procedure.code, {}, actor=receptionist or "simulator", now=now, agency_code=desk,
        applicant=applicant, channel=channel,
    )
    world.report.counts["received"] += 1
    world.report.counts[f"channel.{channel}"] += 1
    case = _Case(record.code, procedure, rng, phone, channel, now)
    if rng.random() < plan.withdraw_rate:
        world.at(world.later(now, rng.uniform(2, 40)), "withdraw", case)
    _schedule_open_steps(world, session, case, now)


def _someone(world: _World, session: Session, agency_code: str, role: str, rng: random.Random) -> str | None:
    agency_id = session.scalar(select(Agency.id).where(Agency.code == agency_code))
    names = world.holders.get((agency_id, role), []) if agency_id is not None else []
    return rng.choice(names) if names else None


def _schedule_open_steps(world: _World, session: Session, case: _Case, now: datetime) -> None:
    """Plan a claim for every open step of ``case`` not yet planned."""
    rng = case.rng
    for task in services.open_tasks(session, case.code):
        if task.id in case.seen_tasks:
            continue
        case.seen_tasks.add(task.id)
        if task.assignee:  # received by the desk officer, or handed back to whoever did it before
            _plan_work(world, case, now, task.id, task.step_id, task.assignee)
            continue
        names = world.holders.get((task.agency_id, task.role), [])
        if not names:
            world.report.counts["unstaffed_steps"] += 1
            continue
        # The colleague who will be free first takes it; ties go by chance.
        officer = min(names, key=lambda name: (world.free_at.get(name, now), world.tiebreak.random()))
        observed = world.plan.step_hours.get(task.step_id)
        if observed and observed[0]:
            wait = rng.choice(observed[0])
        else:
            wait = _allotment_hours(case.procedure.meta["steps"].get(task.step_id, {})) * rng.uniform(0.02, 0.15) * world.speed[officer]
        world.at(world.later(now, wait), "claim", case, task.id, officer)


def _claim(world: _World, session: Session, now: datetime, case: _Case, task_id: int, officer: str) -> None:
    if case.finished:
        return
    task = lifecycle.claim(session, task_id, officer, now)
    world.report.counts["claimed"] += 1
    _plan_work(world, case, now, task_id, task.step_id, officer)


#: The most of a step's elapsed time that occupies its officer: a short step is
#: all hands-on work, a long one mostly waits on others (checks, site visits).
_HANDS_ON_HOURS = 1.5


def _plan_work(world: _World, case: _Case, now: datetime, task_id: int, step_id: str, officer: str) -> None:
    """The officer works on the step (slower on a bottleneck), maybe asking for a supplement first.

    An officer does one thing at a time: the step's effort waits until the
    officer is free, so a short-staffed agency builds a queue. The step also
    takes its usual elapsed time (checks, site visits, signatures) if longer.
    """
    rng, plan = case.rng, world.plan
    allotment = _allotment_hours(case.procedure.meta["steps"].get(step_id, {}))
    speed, slow = world.speed.get(officer, 1.0), plan.bottlenecks.get(step_id, 1.0)
    observed = plan.step_hours.get(step_id)
    if observed and observed[1]:  # as long as it once took
        elapsed = rng.choice(observed[1])
    else:
        elapsed = allotment * rng.lognormvariate(-0.9, 0.45) * speed * slow
    effort = min(elapsed, _HANDS_ON_HOURS * speed)
    begin = max(now, world.free_at.get(officer, now))
    world.free_at[officer] = world.later(begin, effort)
    done = max(world.later(now, elapsed), world.free_at[officer])
    if step_id != case.procedure.first_step and not case.supplement_asked and rng.random() < plan.supplement_rate:
        world.at(world.later(now, rng.uniform(0.5, 3)), "supplement", case, officer)
    world.at(done, "complete", case, task_id, officer)


def _complete(world: _World, session: Session, now: datetime, case: _Case, task_id: int, officer: str) -> None:
    if case.finished:
        return
    dossier = services.get_dossier(session, case.code)
    if dossier.paused_at is not None:  # waiting for the applicant; try again when they are back
        world.report.counts["waited_for_applicant"] += 1
        return
    rng, plan = case.rng, world.plan
    meta = case.procedure.meta
    task = next((t for t in services.open_tasks(session, case.code) if t.id == task_id), None)
    if task is None:
        return
    if task.step_id != case.procedure.first_step and rng.random() < plan.return_rate:
        try:
            lifecycle.return_to_previous(session, task_id, "Hồ sơ cần xem xét lại ở bước trước.", officer, now)
        except Conflict:  # e.g. the previous steps ran in parallel branches: finish it instead
            session.rollback()
        else:
            world.report.counts["returned_to_previous"] += 1
            _after_change(world, session, case, now)
            return
    step = meta["steps"].get(task.step_id, {})
    data = {f["id"]: form_value(rng, f, plan, now) for f in step.get("form", []) if f.get("required") or rng.random() < 0.5}
    record = services.complete_task(session, task_id, data, officer, now)
    world.report.counts["completed_steps"] += 1
    if task.due_at is not None and now > task.due_at:
        world.report.counts["late_steps"] += 1
    # The tax authority has set the obligation: the applicant pays, the clock stops.
    if meta.get("financial_obligation") and step.get("agency") == TAX_AGENCY and not case.payment_asked:
        case.payment_asked = True
        lifecycle.request_payment(session, case.code, ["Lệ phí trước bạ", "Tiền sử dụng đất"], officer, now)
        world.report.counts["payments"] += 1
        world.at(world.later(now, rng.uniform(6, 60)), "resume", case, officer)
    if record.status == services.DossierStatus.PROCESSED:
        world.report.counts["processed"] += 1
        world.at(world.later(now, rng.uniform(0.2, 16)), "return", case)
        return
    if record.status not in lifecycle.ACTIVE + lifecycle.PAUSED:
        case.finished = True
        world.report.counts["ended_by_workflow"] += 1
        return
    _after_change(world, session, case, now)


def _after_change(world: _World, session: Session, case: _Case, now: datetime) -> None:
    _maybe_apologise(world, session, case, now)
    _schedule_open_steps(world, session, case, now)


def _maybe_apologise(world: _World, session: Session, case: _Case, now: datetime) -> None:
    """A dossier past its appointment gets the late agency's apology and a new date, once."""
    dossier = services.get_dossier(session, case.code)
    if case.apologised or dossier.due_at is None or now <= dossier.due_at or dossier.paused_at is not None:
        return
    late = [t for t in services.open_tasks(session, case.code) if t.agency_id is not None]
    if not late:
        return
    agency_id = late[0].agency_id
    leaders = world.holders.get((agency_id, "leader"), [])
    if not leaders:
        return
    agency_code = session.scalar(select(Agency.code).where(Agency.id == agency_id))
    new_due = world.later(now, case.rng.choice((8, 16, 24)))
    lifecycle.issue_apology(
        session, case.code, new_due, "Hồ sơ cần xác minh thêm, chưa giải quyết kịp thời hạn.", agency_code,
        approved_by=leaders[0], actor=leaders[0], now=now,
    )
    case.apologised = True
    world.report.counts["apologies"] += 1


def _supplement(world: _World, session: Session, now: datetime, case: _Case, officer: str) -> None:
    if case.finished or case.supplement_asked:
        return
    dossier = services.get_dossier(session, case.code)
    if dossier.status not in lifecycle.ACTIVE:
        return
    case.supplement_asked = True
    lifecycle.request_supplement(session, case.code, ["Bản sao giấy tờ còn thiếu", "Bản chính để đối chiếu"], officer, now)
    world.report.counts["supplements"] += 1
    rng = case.rng
    if rng.random() < world.plan.abandon_rate:
        world.at(world.later(now, rng.uniform(40, 80)), "withdraw", case)
    else:
        world.at(world.later(now, rng.uniform(4, 40)), "resume", case, officer)


def _resume(world: _World, session: Session, now: datetime, case: _Case, officer: str) -> None:
    if case.finished:
        return
    dossier = services.get_dossier(session, case.code)
    if dossier.paused_at is None:
        return
    lifecycle.resume(session, case.code, officer, now)
    world.report.counts["resumed"] += 1
    # A claimed step whose completion fell in the pause is finished after it;
    # unclaimed steps still have their claim planned.
    for task in services.open_tasks(session, case.code):
        if task.assignee:
            step = case.procedure.meta["steps"].get(task.step_id, {})
            work = _allotment_hours(step) * case.rng.lognormvariate(-1.2, 0.4) * world.speed.get(task.assignee, 1.0)
            world.at(world.later(now, work), "complete", case, task.id, task.assignee)
    _schedule_open_steps(world, session, case, now)


def _withdraw(world: _World, session: Session, now: datetime, case: _Case) -> None:
    if case.finished:
        return
    dossier = services.get_dossier(session, case.code)
    if dossier.status not in lifecycle.ACTIVE + lifecycle.PAUSED:
        return
    actor = _someone(world, session, dossier.agency_code, "receptionist", case.rng) or "simulator"
    lifecycle.withdraw(session, case.code, "Công dân có đơn xin rút hồ sơ.", actor, now)
    case.finished = True
    world.report.counts["withdrawn"] += 1


def _return(world: _World, session: Session, now: datetime, case: _Case) -> None:
    if case.finished:
        return
    dossier = services.get_dossier(session, case.code)
    actor = _someone(world, session, dossier.agency_code, "receptionist", case.rng) or "simulator"
    channel = {"online": "online", "post": "post"}.get(case.channel, "desk")
    lifecycle.return_result(session, case.code, channel, actor, now)
    case.finished = True
    world.report.counts["returned"] += 1
    rng, plan = case.rng, world.plan
    if rng.random() < plan.rating_rate:
        late = dossier.due_at is not None and dossier.finished_at is not None and dossier.finished_at > dossier.due_at
        world.at(now + timedelta(hours=rng.uniform(0.2, 30)), "rate", case, late)
    if rng.random() < plan.feedback_rate:
        world.at(now + timedelta(hours=rng.uniform(1, 48)), "feedback", case)


def _rate(world: _World, session: Session, now: datetime, case: _Case, late: bool) -> None:
    rng = case.rng
    centre = 3.0 if late else 4.5
    scores = {key: min(5, max(1, round(rng.gauss(centre, 0.6)))) for key in public.CRITERIA}
    comment = rng.choice(_COMPLAINTS) if min(scores.values()) < 3 else None
    public.rate(session, case.code, public.secret_of(case.phone) or "", scores, comment, now)
    world.report.counts["ratings"] += 1


def _feedback(world: _World, session: Session, now: datetime, case: _Case) -> None:
    public.send_feedback(
        session, "Phản ánh về việc giải quyết hồ sơ", case.rng.choice(_COMPLAINTS), now,
        dossier_code=case.code, secret=public.secret_of(case.phone),
    )
    world.report.counts["feedback"] += 1


def _sweep(world: _World, session: Session, now: datetime) -> None:
    session.commit()
    result = escalation.sweep(world.sessions, now)
    world.report.counts["escalations"] += result.fired


_HANDLERS: dict[str, Callable[..., None]] = {
    "arrive": _arrive,
    "claim": _claim,
    "complete": _complete,
    "supplement": _supplement,
    "resume": _resume,
    "withdraw": _withdraw,
    "return": _return,
    "rate": _rate,
    "feedback": _feedback,
    "sweep": _sweep,
}
