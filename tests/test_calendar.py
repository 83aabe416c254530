"""Tests for engine.core.calendar (working-day deadlines).

Expected instants in the worked examples were computed by hand from the
holidays package's data (checked in ``test_holiday_data_assumptions``).
Property tests compare the module with a deliberately naive day-by-day
reference model built directly on the holidays package.  Resolution: one
microsecond (amounts are exact ``timedelta`` values).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import pickle
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import calendar as calendar_module
from engine.core.calendar import DEFAULT_SESSIONS, VN_TZ, WorkingCalendar

CAL = WorkingCalendar()
H8 = timedelta(hours=8)


def vn(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=VN_TZ)


# --------------------------------------------------------------------------
# Independent reference model (day-by-day loops, straight from `holidays`)
# --------------------------------------------------------------------------

_VN = holidays.country_holidays("VN", years=range(2023, 2031))
REF_HOLIDAYS = frozenset(_VN.keys())
REF_MAKEUP = frozenset(_VN.weekend_workdays)
MON = ((time(7, 30), time(11, 30)), (time(13, 0), time(17, 0)))


def ref_sessions(d: date, off: frozenset[date] = frozenset(), work: frozenset[date] = frozenset()):
    if d in work:
        return MON
    if d in off:
        return ()
    if d in REF_MAKEUP:
        return MON
    if d in REF_HOLIDAYS:
        return ()
    return MON if d.weekday() < 5 else ()


def ref_session_spans(d: date, **kw):
    for a, b in ref_sessions(d, **kw):
        yield datetime.combine(d, a, tzinfo=VN_TZ), datetime.combine(d, b, tzinfo=VN_TZ)


def ref_next_instant(t: datetime) -> datetime:
    d = t.date()
    while True:
        for a, b in ref_session_spans(d):
            if t < b:
                return max(a, t)
        d += timedelta(days=1)


def ref_add(t: datetime, amount: timedelta, **kw) -> datetime:
    if amount == timedelta(0):
        return ref_next_instant(t)
    d = t.date()
    while True:
        for a, b in ref_session_spans(d, **kw):
            begin = max(a, t)
            if begin >= b:
                continue
            if amount <= b - begin:
                return begin + amount
            amount -= b - begin
        d += timedelta(days=1)


def ref_between(x: datetime, y: datetime) -> timedelta:
    total = timedelta(0)
    d = x.date()
    while d <= y.date():
        for a, b in ref_session_spans(d):
            lo, hi = max(a, x), min(b, y)
            if hi > lo:
                total += hi - lo
        d += timedelta(days=1)
    return total


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

D_MIN, D_MAX = date(2024, 1, 1), date(2028, 12, 31)
BOUNDARIES = [
    time(0, 0),
    time(7, 30),
    time(11, 30),
    time(12, 0),
    time(13, 0),
    time(17, 0),
    time(23, 59),
]

random_instants = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2028, 12, 31, 23, 59, 59),
    timezones=st.just(VN_TZ),
)
boundary_instants = st.builds(
    lambda d, t: datetime.combine(d, t, tzinfo=VN_TZ),
    st.dates(D_MIN, D_MAX),
    st.sampled_from(BOUNDARIES),
)
instants = st.one_of(random_instants, boundary_instants)

amounts = st.one_of(
    st.integers(0, 60 * 8 * 60).map(
        lambda m: timedelta(minutes=m)
    ),  # whole minutes: hits boundaries
    st.integers(0, 500).map(lambda h: timedelta(hours=h)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=500)),  # microsecond resolution
)
positive_amounts = amounts.filter(lambda d: d > timedelta(0))

PROPS = settings(max_examples=200, deadline=None)


def in_session(t: datetime) -> bool:
    """start < t <= end of some session on t's date (reference model)."""
    return any(a < t <= b for a, b in ref_session_spans(t.date()))


# --------------------------------------------------------------------------
# Holiday data the worked examples rely on
# --------------------------------------------------------------------------


def test_holiday_data_assumptions() -> None:
    h = holidays.country_holidays("VN", years=[2026, 2027])
    for d in range(16, 21):
        assert date(2026, 2, d) in h  # Tết 2026
    assert date(2026, 2, 13) not in h and date(2026, 2, 23) not in h
    for d in range(4, 11):
        assert date(2027, 2, d) in h  # Tết 2027
    assert date(2027, 2, 3) not in h and date(2027, 2, 11) not in h
    assert {date(2026, 4, 30), date(2026, 5, 1)} <= set(h)
    assert {date(2027, 4, 30), date(2027, 5, 1), date(2027, 5, 3)} <= set(h)
    assert {date(2026, 8, 31), date(2026, 9, 1), date(2026, 9, 2)} <= set(h)
    assert date(2026, 8, 22) in h.weekend_workdays
    assert date(2026, 11, 24) in h and date(2026, 11, 24).weekday() == 1
    assert date(2026, 3, 2).weekday() == 0 and date(2026, 8, 22).weekday() == 5


# --------------------------------------------------------------------------
# Worked examples
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "due"),
    [
        # Fri 10:00-17:00 = 5.5 h; Tết 16-20/2 + weekend; Mon 8 h, Tue 8 h; Wed 2.5 h.
        (vn(2026, 2, 13, 10), 3, vn(2026, 2, 25, 10)),
        (vn(2026, 3, 2, 7, 30), 1, vn(2026, 3, 2, 17)),  # Monday 07:30 + 1 day = Monday 17:00
        # Tết 2027: Wed 3/2 16:00 (1 h) ... Thu 11/2 7 h -> 16:00.
        (vn(2027, 2, 3, 16), 1, vn(2027, 2, 11, 16)),
        # 30/4 Thu, 1/5 Fri 2026 off: Wed 29/4 17:00 + 1 day = Mon 4/5 17:00.
        (vn(2026, 4, 29, 17), 1, vn(2026, 5, 4, 17)),
        # 2027: 30/4 Fri, 1/5 Sat, 3/5 Mon (observed) off: Thu 4 h, Tue 8 h, Wed 4 h.
        (vn(2027, 4, 29, 13), 2, vn(2027, 5, 5, 11, 30)),
        # 2/9/2026: 31/8, 1/9, 2/9 off; Fri 28/8 4 h, Thu 3/9 8 h, Fri 4/9 4 h.
        (vn(2026, 8, 28, 13), 2, vn(2026, 9, 4, 11, 30)),
        # Make-up Saturday 22/8/2026 uses Monday's sessions: Fri 1 h + Sat 4 h + 3 h.
        # (16:00, not 15:00: 7 h from 07:30 with the 11:30-13:00 lunch ends at 16:00.)
        (vn(2026, 8, 21, 16), 1, vn(2026, 8, 22, 16)),
    ],
)
def test_add_working_days_examples(start: datetime, days: int, due: datetime) -> None:
    result = CAL.add_working_days(start, days)
    assert result == due
    assert result.tzinfo is VN_TZ
    assert result == ref_add(start, days * H8)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        (vn(2026, 3, 2, 13), 4, vn(2026, 3, 2, 17)),  # Monday 13:00 + 4 h = 17:00
        (vn(2026, 3, 3, 12), 1, vn(2026, 3, 3, 14)),  # lunch: clock starts 13:00
        (vn(2026, 3, 3, 18), 1, vn(2026, 3, 4, 8, 30)),  # Tuesday evening -> Wednesday
        (vn(2026, 3, 7, 10), 1, vn(2026, 3, 9, 8, 30)),  # Saturday -> Monday
        (vn(2026, 3, 2, 17), 0.5, vn(2026, 3, 3, 8)),  # continue after a session end
        (vn(2026, 11, 23, 17), 1, vn(2026, 11, 25, 8, 30)),  # 24/11 Vietnam Cultural Day
        (vn(2026, 3, 2, 11), 0.5, vn(2026, 3, 2, 11, 30)),  # ends exactly at lunch
        (vn(2026, 3, 2, 11), 0.75, vn(2026, 3, 2, 13, 15)),
    ],
)
def test_add_working_hours_examples(start: datetime, hours: float, due: datetime) -> None:
    assert CAL.add_working_hours(start, hours) == due


def test_received_saturday_starts_monday() -> None:
    assert CAL.next_working_instant(vn(2026, 3, 7, 10)) == vn(2026, 3, 9, 7, 30)
    assert CAL.add_working_time(vn(2026, 3, 7, 10), timedelta(0)) == vn(2026, 3, 9, 7, 30)


def test_zero_amount_is_next_working_instant() -> None:
    assert CAL.add_working_hours(vn(2026, 3, 2, 17), 0) == vn(2026, 3, 3, 7, 30)
    assert CAL.add_working_hours(vn(2026, 3, 2, 9), 0) == vn(2026, 3, 2, 9)
    assert CAL.add_working_time(vn(2026, 3, 2, 17), timedelta(minutes=1)) == vn(2026, 3, 3, 7, 31)


def test_next_working_instant() -> None:
    assert CAL.next_working_instant(vn(2026, 3, 2, 7, 30)) == vn(2026, 3, 2, 7, 30)
    assert CAL.next_working_instant(vn(2026, 3, 2, 11, 30)) == vn(2026, 3, 2, 13)
    assert CAL.next_working_instant(vn(2026, 3, 2, 6)) == vn(2026, 3, 2, 7, 30)
    assert CAL.next_working_instant(vn(2026, 2, 13, 17)) == vn(2026, 2, 23, 7, 30)  # Tết 2026
    assert CAL.next_working_instant(vn(2026, 8, 21, 17)) == vn(2026, 8, 22, 7, 30)  # make-up Sat


def test_sessions_and_working_days() -> None:
    assert CAL.sessions_on(date(2026, 3, 2)) == MON
    assert CAL.sessions_on(date(2026, 3, 7)) == ()
    assert CAL.sessions_on(date(2026, 8, 22)) == MON  # make-up Saturday
    for d in (
        date(2026, 8, 31),
        date(2026, 9, 1),
        date(2026, 9, 2),
        date(2026, 11, 24),
        date(2027, 5, 3),
    ):
        assert not CAL.is_working_day(d)
    assert all(not CAL.is_working_day(date(2027, 2, d)) for d in range(4, 11))
    assert CAL.is_working_day(date(2027, 2, 11))
    assert CAL.standard_day == H8
    with pytest.raises(TypeError):
        CAL.is_working_day(vn(2026, 3, 2))  # a datetime is not a date here


# ---------------------------------------------------------------- overrides


def test_extra_day_off_shifts_due_date() -> None:
    cal = WorkingCalendar(extra_days_off=frozenset({date(2026, 2, 25)}))
    assert not cal.is_working_day(date(2026, 2, 25))
    assert cal.add_working_days(vn(2026, 2, 13, 10), 3) == vn(2026, 2, 26, 10)


def test_extra_working_saturday_is_counted() -> None:
    start = vn(2026, 3, 13, 16)  # Friday
    assert CAL.add_working_days(start, 1) == vn(2026, 3, 16, 16)
    cal = WorkingCalendar(extra_working_days=frozenset({date(2026, 3, 14)}))
    assert cal.sessions_on(date(2026, 3, 14)) == MON
    assert cal.add_working_days(start, 1) == vn(2026, 3, 14, 16)


def test_override_precedence() -> None:
    tet, makeup = date(2026, 2, 17), date(2026, 8, 22)
    both = WorkingCalendar(extra_days_off=frozenset({tet}), extra_working_days=frozenset({tet}))
    assert both.is_working_day(tet)  # extra_working_days > extra_days_off > holidays
    assert not WorkingCalendar(extra_days_off=frozenset({makeup})).is_working_day(makeup)
    # An extra working day uses Monday's sessions even where the weekday has others.
    sessions = {**DEFAULT_SESSIONS, 2: "08:00-12:00"}
    cal = WorkingCalendar(sessions=sessions, extra_working_days=frozenset({date(2026, 3, 4)}))
    assert cal.sessions_on(date(2026, 3, 4)) == MON
    assert cal.sessions_on(date(2026, 3, 11)) == ((time(8), time(12)),)


# ---------------------------------------------------------------- same day


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (vn(2026, 3, 3, 14, 59), vn(2026, 3, 3, 17)),
        (vn(2026, 3, 3, 15, 0), vn(2026, 3, 3, 17)),  # at the cut-off: same day
        (vn(2026, 3, 3, 15, 1), vn(2026, 3, 4, 17)),
        (vn(2026, 3, 3, 6, 0), vn(2026, 3, 3, 17)),  # before opening on a working day
        (vn(2026, 3, 3, 12, 0), vn(2026, 3, 3, 17)),  # lunch
        (vn(2026, 3, 7, 10, 0), vn(2026, 3, 9, 17)),  # Saturday -> Monday
        (vn(2026, 2, 13, 15, 30), vn(2026, 2, 23, 17)),  # Friday before Tết 2026
        (vn(2026, 8, 21, 15, 30), vn(2026, 8, 22, 17)),  # -> make-up Saturday
    ],
)
def test_due_same_day(received: datetime, due: datetime) -> None:
    assert CAL.due_same_day(received) == due


def test_due_same_day_custom_cutoff_and_after_close() -> None:
    assert CAL.due_same_day(vn(2026, 3, 3, 16), cutoff=time(16, 30)) == vn(2026, 3, 3, 17)
    # A cut-off after close: received after close counts for the next working day.
    assert CAL.due_same_day(vn(2026, 3, 3, 17, 30), cutoff=time(18)) == vn(2026, 3, 4, 17)
    with pytest.raises(ValueError):
        CAL.due_same_day(vn(2026, 3, 3, 10), cutoff=time(15, tzinfo=UTC))


# ---------------------------------------------------------------- calendar days


@pytest.mark.parametrize(
    ("start", "days", "due"),
    [
        (vn(2026, 1, 19, 9), 30, vn(2026, 2, 23, 17)),  # lands on 18/2 (Tết) -> Mon 23/2
        (vn(2026, 3, 2, 9), 30, vn(2026, 4, 1, 17)),  # Wednesday 1/4: a working day
        (vn(2026, 3, 6, 9), 30, vn(2026, 4, 6, 17)),  # lands on Sunday 5/4 -> Monday
        (vn(2026, 8, 1, 9), 30, vn(2026, 9, 3, 17)),  # lands on 31/8 (day off) -> Thu 3/9
        (vn(2026, 3, 2, 9), 0, vn(2026, 3, 2, 17)),
        (vn(2026, 3, 2, 18), 0, vn(2026, 3, 3, 17)),  # zero days after close
    ],
)
def test_add_calendar_days(start: datetime, days: int, due: datetime) -> None:
    assert CAL.add_calendar_days(start, days) == due


# ---------------------------------------------------------------- pause / resume


def test_resume_due_examples() -> None:
    due = vn(2026, 3, 4, 17)
    # Paused 2 working hours before the due instant, resumed the next morning.
    assert CAL.resume_due(due, vn(2026, 3, 4, 15), vn(2026, 3, 5, 9)) == vn(2026, 3, 5, 11)
    # Remaining time spans lunch: 11:00-11:30 and 13:00-14:00 = 1.5 h.
    assert CAL.resume_due(vn(2026, 3, 4, 14), vn(2026, 3, 4, 11), vn(2026, 3, 4, 16, 30)) == vn(
        2026, 3, 5, 8, 30
    )
    # Paused after the due instant: nothing left.
    assert CAL.resume_due(due, vn(2026, 3, 5, 9), vn(2026, 3, 7, 10)) == vn(2026, 3, 9, 7, 30)
    with pytest.raises(ValueError):
        CAL.resume_due(due, vn(2026, 3, 4, 15), vn(2026, 3, 4, 14))


def test_working_time_between_examples() -> None:
    assert CAL.working_time_between(vn(2026, 2, 13, 10), vn(2026, 2, 25, 10)) == timedelta(hours=24)
    assert CAL.working_time_between(vn(2026, 2, 16), vn(2026, 2, 21)) == timedelta(0)  # Tết
    assert CAL.working_time_between(vn(2026, 3, 3), vn(2026, 3, 2)) == timedelta(0)
    assert CAL.working_time_between(vn(2026, 8, 22), vn(2026, 8, 23)) == H8  # make-up Saturday


# ---------------------------------------------------------------- configuration


def test_parse_sessions() -> None:
    assert WorkingCalendar.parse_sessions("07:30-11:30,13:00-17:00") == MON
    assert WorkingCalendar.parse_sessions(" 7:30 - 11:30 , 13:00-17:00:30 ") == (
        (time(7, 30), time(11, 30)),
        (time(13), time(17, 0, 30)),
    )
    assert WorkingCalendar.parse_sessions("") == ()


@pytest.mark.parametrize(
    "spec",
    [
        "25:00-26:00",
        "11:30-07:30",
        "07:30-11:30,11:00-17:00",  # overlapping
        "13:00-17:00,07:30-11:30",  # unordered
        "07:30-07:30",
        "07:60-08:00",
        "7h30-11h30",
        "07:30-11:30,",
        "07:30",
        "٠٧:٣٠-١١:٣٠",  # non-ASCII digits
    ],
)
def test_parse_sessions_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        WorkingCalendar.parse_sessions(spec)


def test_custom_sessions() -> None:
    # Saturday morning reception; sessions given as strings are parsed.
    cal = WorkingCalendar(sessions={**DEFAULT_SESSIONS, 5: "07:30-11:30"})
    assert cal.standard_day == H8
    assert cal.add_working_hours(vn(2026, 3, 6, 16), 2) == vn(2026, 3, 7, 8, 30)
    assert not cal.is_working_day(date(2026, 3, 8))
    # A shorter standard day changes what "one working day" means.
    short = WorkingCalendar(sessions={k: "08:00-12:00" for k in range(5)})
    assert short.standard_day == timedelta(hours=4)
    assert short.add_working_days(vn(2026, 3, 2, 8), 1) == vn(2026, 3, 2, 12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sessions": {1: MON}},  # Monday empty
        {"sessions": {7: MON}},
        {"sessions": {0: ((time(9), time(8)),)}},
        {"sessions": {0: ((time(8), time(12)), (time(11), time(13)))}},
        {"country": "XX"},
    ],
)
def test_bad_configuration(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        WorkingCalendar(**kwargs)


def test_bad_override_type() -> None:
    with pytest.raises(TypeError):
        WorkingCalendar(extra_days_off=frozenset({vn(2026, 3, 2)}))


def test_value_semantics() -> None:
    a = WorkingCalendar(sessions=dict(DEFAULT_SESSIONS), extra_days_off={date(2026, 3, 2)})  # type: ignore[arg-type]
    b = WorkingCalendar(extra_days_off=frozenset({date(2026, 3, 2)}))
    assert a == b and hash(a) == hash(b) and len({a, b, CAL}) == 2
    assert isinstance(a.extra_days_off, frozenset)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.country = "US"  # type: ignore[misc]
    b.add_working_days(vn(2026, 3, 2, 8), 1)  # populate caches
    for clone in (pickle.loads(pickle.dumps(b)), copy.deepcopy(b), dataclasses.replace(b)):
        assert clone == b
        assert clone.add_working_days(vn(2026, 3, 2, 8), 1) == vn(2026, 3, 3, 17)
    assert dataclasses.asdict(b)["country"] == "VN"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda n: CAL.next_working_instant(n),
        lambda n: CAL.add_working_time(n, H8),
        lambda n: CAL.add_working_days(n, 1),
        lambda n: CAL.add_working_hours(n, 1),
        lambda n: CAL.working_time_between(n, vn(2026, 3, 2)),
        lambda n: CAL.working_time_between(vn(2026, 3, 2), n),
        lambda n: CAL.due_same_day(n),
        lambda n: CAL.add_calendar_days(n, 3),
        lambda n: CAL.resume_due(vn(2026, 3, 4), vn(2026, 3, 3), n),
        lambda n: CAL.resume_due(n, vn(2026, 3, 3), vn(2026, 3, 5)),
    ],
)
def test_naive_datetime_rejected(call) -> None:
    with pytest.raises(ValueError, match="naive"):
        call(datetime(2026, 3, 2, 9))


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, Decimal(-1)])
def test_negative_or_invalid_amounts(bad: float) -> None:
    with pytest.raises(ValueError):
        CAL.add_working_days(vn(2026, 3, 2, 9), bad)
    with pytest.raises(ValueError):
        CAL.add_working_hours(vn(2026, 3, 2, 9), bad)


def test_other_errors() -> None:
    with pytest.raises(ValueError):
        CAL.add_working_time(vn(2026, 3, 2, 9), timedelta(seconds=-1))
    with pytest.raises(ValueError):
        CAL.add_calendar_days(vn(2026, 3, 2, 9), -1)
    with pytest.raises(TypeError):
        CAL.add_calendar_days(vn(2026, 3, 2, 9), 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CAL.add_working_time(vn(2026, 3, 2, 9), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="supported"):
        CAL.is_working_day(date(2101, 1, 3))
    with pytest.raises(ValueError, match="supported"):
        CAL.add_working_days(vn(2100, 12, 30, 9), 10)


def test_decimal_and_fraction_amounts() -> None:
    s = vn(2026, 3, 2, 9, 17)
    assert CAL.add_working_days(s, Decimal("2.5")) == CAL.add_working_days(s, 2.5)
    assert CAL.add_working_days(s, Fraction(1, 3)) == CAL.add_working_time(s, H8 / 3)
    assert CAL.add_working_days(s, 2.5) == CAL.add_working_time(s, timedelta(hours=20))


def test_other_timezones_and_results_in_vn_tz() -> None:
    start = datetime(2026, 2, 13, 3, 0, tzinfo=UTC)  # 10:00 in Hanoi
    result = CAL.add_working_days(start, 3)
    assert result == vn(2026, 2, 25, 10) and result.tzinfo is VN_TZ
    assert CAL.next_working_instant(datetime(2026, 3, 2, 2, 0, tzinfo=UTC)).tzinfo is VN_TZ


def test_lazy_years_consistent() -> None:
    """Growing the table backwards/forwards gives the same answers as a fresh one."""
    cal = WorkingCalendar(extra_days_off=frozenset({date(1995, 6, 1)}))
    cal.add_working_days(vn(2026, 3, 2, 9), 1)
    early = cal.working_time_between(vn(1990, 1, 1), vn(2026, 3, 2, 9))
    late = cal.add_working_days(vn(2090, 12, 20, 9), 10)
    fresh = WorkingCalendar(extra_days_off=frozenset({date(1995, 6, 1)}))
    assert fresh.add_working_days(vn(2090, 12, 20, 9), 10) == late
    assert early == WorkingCalendar(
        extra_days_off=frozenset({date(1995, 6, 1)})
    ).working_time_between(vn(1990, 1, 1), vn(2026, 3, 2, 9))
    assert cal.add_working_days(vn(1990, 1, 25, 9), 1) == vn(1990, 1, 30, 9)  # Tết 1990: 26-29/1


def test_module_never_reads_the_clock() -> None:
    source = inspect.getsource(calendar_module)
    for forbidden in ("now(", "today(", "utcnow(", "time.time(", "import flask", "sqlalchemy"):
        assert forbidden not in source.lower()


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


@PROPS
@given(instants, amounts)
def test_matches_reference_model(s: datetime, d: timedelta) -> None:
    assert CAL.add_working_time(s, d) == ref_add(s, d)


@PROPS
@given(instants, amounts)
def test_add_then_measure(s: datetime, d: timedelta) -> None:
    r = CAL.add_working_time(s, d)
    assert r >= s and r.tzinfo is VN_TZ
    assert CAL.working_time_between(s, r) == d
    if d > timedelta(0):
        assert r > s
        assert in_session(r)  # start < r <= end of a session on a working day
        assert CAL.is_working_day(r.date())


@PROPS
@given(instants, instants, amounts)
def test_monotonic_in_start(a: datetime, b: datetime, d: timedelta) -> None:
    a, b = min(a, b), max(a, b)
    assert CAL.add_working_time(a, d) <= CAL.add_working_time(b, d)


@PROPS
@given(instants, amounts, amounts)
def test_monotonic_in_amount(s: datetime, d1: timedelta, d2: timedelta) -> None:
    d1, d2 = min(d1, d2), max(d1, d2)
    assert CAL.add_working_time(s, d1) <= CAL.add_working_time(s, d2)


@PROPS
@given(instants, amounts, positive_amounts)
def test_additive(s: datetime, d1: timedelta, d2: timedelta) -> None:
    # Holds for d2 > 0; with d2 == 0 the result is next_working_instant(add(s, d1)).
    assert CAL.add_working_time(CAL.add_working_time(s, d1), d2) == CAL.add_working_time(s, d1 + d2)


@PROPS
@given(instants, amounts)
def test_adding_zero_after_an_amount(s: datetime, d: timedelta) -> None:
    r = CAL.add_working_time(s, d)
    assert CAL.add_working_time(r, timedelta(0)) == CAL.next_working_instant(r)


spans = st.one_of(
    st.timedeltas(timedelta(0), timedelta(days=60)),
    st.integers(0, 60 * 96).map(lambda q: timedelta(minutes=15 * q)),  # lands on boundaries
)


@PROPS
@given(instants, spans, spans)
def test_between_additive_and_matches_reference(a: datetime, x: timedelta, y: timedelta) -> None:
    m, b = a + x, a + x + y
    whole = CAL.working_time_between(a, b)
    assert whole == CAL.working_time_between(a, m) + CAL.working_time_between(m, b)
    assert whole == ref_between(a, b)
    assert CAL.working_time_between(b, a) == timedelta(0)
    assert whole >= timedelta(0)


HOLIDAYS_2024_2028 = sorted(d for d in REF_HOLIDAYS if D_MIN <= d <= D_MAX and d not in REF_MAKEUP)


@PROPS
@given(
    st.sampled_from(HOLIDAYS_2024_2028), st.sampled_from(BOUNDARIES), st.sampled_from(BOUNDARIES)
)
def test_holidays_never_counted(d: date, t1: time, t2: time) -> None:
    a, b = sorted((datetime.combine(d, t1, tzinfo=VN_TZ), datetime.combine(d, t2, tzinfo=VN_TZ)))
    assert not CAL.is_working_day(d)
    assert CAL.working_time_between(a, b) == timedelta(0)
    assert CAL.working_time_between(
        vn(d.year, d.month, d.day), vn(d.year, d.month, d.day) + timedelta(days=1)
    ) == (timedelta(0))
    assert CAL.next_working_instant(a).date() != d


@PROPS
@given(instants, st.one_of(st.integers(0, 60), st.floats(0, 60, allow_nan=False)))
def test_working_days_are_eight_hours(s: datetime, n: float) -> None:
    assert CAL.add_working_days(s, n) == CAL.add_working_time(s, n * H8)


@PROPS
@given(instants, st.one_of(st.integers(0, 500), st.floats(0, 500, allow_nan=False)))
def test_working_hours(s: datetime, h: float) -> None:
    assert CAL.add_working_hours(s, h) == CAL.add_working_time(s, timedelta(hours=h))


@PROPS
@given(instants, amounts)
def test_timezone_of_input_does_not_matter(s: datetime, d: timedelta) -> None:
    assert CAL.add_working_time(s.astimezone(UTC), d) == CAL.add_working_time(s, d)


@PROPS
@given(instants)
def test_next_working_instant_property(t: datetime) -> None:
    r = CAL.next_working_instant(t)
    assert r >= t and r == ref_next_instant(t)
    assert any(a <= r < b for a, b in ref_session_spans(r.date()))
    assert CAL.working_time_between(t, r) == timedelta(0)


@PROPS
@given(instants, amounts, st.floats(0, 1), st.timedeltas(timedelta(0), timedelta(days=30)))
def test_resume_due_keeps_remaining_time(
    s: datetime, d: timedelta, frac: float, pause: timedelta
) -> None:
    due = CAL.add_working_time(s, d)
    paused_at = s + (due - s) * frac
    resumed_at = paused_at + pause
    new_due = CAL.resume_due(due, paused_at, resumed_at)
    assert new_due >= resumed_at
    assert CAL.working_time_between(resumed_at, new_due) == CAL.working_time_between(paused_at, due)
    if pause == timedelta(0) and paused_at < due:
        assert new_due == due


@PROPS
@given(instants)
def test_due_same_day_property(received: datetime) -> None:
    due = CAL.due_same_day(received)
    assert due > received and due.time() == time(17) and CAL.is_working_day(due.date())
    d = received.date()
    if CAL.is_working_day(d) and received.time() <= time(15):
        assert due.date() == d
    else:
        assert due.date() > d
        gap = d + timedelta(days=1)
        while gap < due.date():
            assert not CAL.is_working_day(gap)
            gap += timedelta(days=1)


@PROPS
@given(instants, st.integers(1, 400))
def test_add_calendar_days_property(start: datetime, n: int) -> None:
    due = CAL.add_calendar_days(start, n)
    target = start.date() + timedelta(days=n)
    assert due.time() == time(17) and due.date() >= target and CAL.is_working_day(due.date())
    gap = target
    while gap < due.date():
        assert not CAL.is_working_day(gap)
        gap += timedelta(days=1)
