"""Working-day calendar for legal deadlines (Vietnamese one-stop practice).

Pure module: no database, no web framework, and it never reads the clock;
every instant is passed in.  All datetimes must be timezone-aware (a naive
datetime raises ``ValueError``); results are returned in :data:`VN_TZ`
(``Asia/Ho_Chi_Minh``).  Computations use the Vietnamese wall clock, which has
had a fixed UTC+07:00 offset since 1975.  Resolution is one microsecond.

Rules
-----
* Working time is a list of sessions per weekday; by default Monday-Friday
  07:30-11:30 and 13:00-17:00 (8 hours), no sessions on Saturday and Sunday.
* *N working days* is ``N x standard_day`` of session time, where
  ``standard_day`` is the total length of Monday's sessions (8 hours by
  default), so ``add_working_days(s, n) == add_working_time(s, n * 8h)``.
  Fractional days are allowed.
* A dossier received outside working hours starts the clock at the next
  session start (received during lunch: 13:00; on Saturday: Monday 07:30).
* A due instant that falls exactly at the end of a session *is* that end:
  Monday 07:30 + 1 working day = Monday 17:00, not Tuesday 07:30.  Adding a
  positive amount to such an instant continues in the next session, so
  ``add(add(s, d1), d2) == add(s, d1 + d2)`` whenever ``d2 > 0``.
* Adding zero working time returns :meth:`WorkingCalendar.next_working_instant`
  of the start (the end-of-session rule applies only when time is added).
* Which sessions apply on a date, from highest to lowest precedence:

  1. ``extra_working_days`` (administrator override): Monday's sessions;
  2. ``extra_days_off`` (administrator override): no sessions;
  3. make-up working days (*làm bù*) of the ``holidays`` package
     (``.weekend_workdays``): Monday's sessions;
  4. public holidays of the ``holidays`` package, including its substituted
     days off: no sessions;
  5. otherwise the sessions of the weekday.

  Holiday data is loaded lazily, one year at a time, and cached; the
  supported years are those of the ``holidays`` package for the country
  (1901-2100 for Vietnam).  Dates outside raise ``ValueError``.

Worked example (Tết 2026: 16-20/2/2026 are public holidays)::

    >>> cal = WorkingCalendar()
    >>> cal.add_working_days(datetime(2026, 2, 13, 10, 0, tzinfo=VN_TZ), 3)
    datetime.datetime(2026, 2, 25, 10, 0, tzinfo=zoneinfo.ZoneInfo(key='Asia/Ho_Chi_Minh'))

Friday 13/2 10:00-11:30 and 13:00-17:00 count 5.5 hours; 16-20/2 are Tết
and 21-22/2 a weekend; Monday 23/2 and Tuesday 24/2 count 8 hours each
(21.5 hours); the remaining 2.5 hours end on Wednesday 25/2 at 10:00.

Implementation note: per calendar instance, a table of cumulative working
microseconds at the start of each day (indexed by date ordinal) is built
lazily, whole years at a time, so that adding working time or measuring it is
a binary search plus a few arithmetic steps, independent of the amount.
"""

from __future__ import annotations

import math
import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "DEFAULT_SESSIONS",
    "VN_TZ",
    "DaySessions",
    "Session",
    "WorkingCalendar",
]

#: The zone of every result: Vietnam (UTC+07:00, no daylight saving time).
VN_TZ: ZoneInfo = ZoneInfo("Asia/Ho_Chi_Minh")

#: One working session: ``(start, end)`` naive times of day, ``start < end``.
Session = tuple[time, time]
#: The sessions of one day, ordered and non-overlapping (empty: a day off).
DaySessions = tuple[Session, ...]

_US_PER_SECOND = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_SECOND
_US_PER_HOUR = 60 * _US_PER_MINUTE
_US_PER_DAY = 24 * _US_PER_HOUR

# One day's sessions as microseconds since midnight.
_UsPattern = tuple[tuple[int, int], ...]

_SESSION_RE = re.compile(
    r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?\s*-\s*([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?",
    re.ASCII,
)


# --------------------------------------------------------------------------
# Session tables
# --------------------------------------------------------------------------


class _SessionTable(Mapping[int, DaySessions]):
    """Immutable, hashable mapping weekday (0=Monday .. 6=Sunday) -> sessions."""

    __slots__ = ("_days",)

    def __init__(self, days: tuple[DaySessions, ...]) -> None:
        if len(days) != 7:
            raise ValueError("a session table needs exactly 7 weekdays")
        self._days = days

    def __getitem__(self, weekday: int) -> DaySessions:
        if isinstance(weekday, int) and not isinstance(weekday, bool) and 0 <= weekday < 7:
            return self._days[weekday]
        raise KeyError(weekday)

    def __iter__(self) -> Iterator[int]:
        return iter(range(7))

    def __len__(self) -> int:
        return 7

    def __hash__(self) -> int:
        return hash(self._days)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _SessionTable):
            return self._days == other._days
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        body = ", ".join(f"{k}: {_format_day(v)!r}" for k, v in enumerate(self._days))
        return f"SessionTable({{{body}}})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self._days,))


def _format_day(day: DaySessions) -> str:
    def fmt(t: time) -> str:
        return t.strftime("%H:%M:%S" if t.second or t.microsecond else "%H:%M")

    return ",".join(f"{fmt(s)}-{fmt(e)}" for s, e in day)


def _check_day(day: Iterable[Any], where: str) -> DaySessions:
    """Validate one day's sessions: naive times, start < end, ordered, disjoint."""
    out: list[Session] = []
    for item in day:
        try:
            start, end = item
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: a session must be a (start, end) pair, got {item!r}"
            ) from None
        for t in (start, end):
            if not isinstance(t, time):
                raise TypeError(f"{where}: session bounds must be datetime.time, got {t!r}")
            if t.tzinfo is not None:
                raise ValueError(f"{where}: session times must be naive (wall clock), got {t!r}")
        if not start < end:
            raise ValueError(
                f"{where}: session {_format_day(((start, end),))} ends before it starts"
            )
        if out and start < out[-1][1]:
            raise ValueError(
                f"{where}: session {_format_day(((start, end),))} overlaps or precedes "
                f"{_format_day((out[-1],))}; sessions must be ordered and must not overlap"
            )
        out.append((start, end))
    return tuple(out)


def _coerce_sessions(value: Any) -> _SessionTable:
    if isinstance(value, _SessionTable):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"sessions must be a mapping weekday -> sessions, got {type(value).__name__}"
        )
    days: list[DaySessions] = [() for _ in range(7)]
    for key, day in value.items():
        if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < 7:
            raise ValueError(
                f"sessions: weekday keys must be integers 0 (Monday) .. 6 (Sunday), got {key!r}"
            )
        if isinstance(day, str):
            days[key] = WorkingCalendar.parse_sessions(day)
        else:
            days[key] = _check_day(day, f"sessions[{key}]")
    return _SessionTable(tuple(days))


def _coerce_dates(value: Any, name: str) -> frozenset[date]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a set of datetime.date, got {type(value).__name__}")
    items = frozenset(value)
    for d in items:
        if not isinstance(d, date) or isinstance(d, datetime):
            raise TypeError(f"{name} must contain datetime.date objects (not datetime), got {d!r}")
    return items


_STD = (time(7, 30), time(11, 30)), (time(13, 0), time(17, 0))

#: Default sessions: Monday-Friday 07:30-11:30 and 13:00-17:00; weekends off.
DEFAULT_SESSIONS: Mapping[int, DaySessions] = _SessionTable((_STD, _STD, _STD, _STD, _STD, (), ()))


# --------------------------------------------------------------------------
# Holiday data (shared by all calendars of a country)
# --------------------------------------------------------------------------


@cache
def _country_years(country: str) -> tuple[int, int]:
    """First and last year the holidays package knows for ``country``."""
    h = holidays.country_holidays(country)
    return int(getattr(h, "start_year", 1901)), int(getattr(h, "end_year", 2100))


@lru_cache(maxsize=1024)
def _raw_year(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    h = holidays.country_holidays(country, years=year)
    offs = frozenset(d for d in h if d.year == year)
    workdays = frozenset(getattr(h, "weekend_workdays", ()) or ())
    return offs, workdays


@lru_cache(maxsize=1024)
def _year_days(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    """(public holidays, make-up working days) falling in ``year``."""
    offs, workdays = _raw_year(country, year)
    first, last = _country_years(country)
    pool = set(workdays)
    # A make-up day may be listed with the neighbouring year's substitution.
    for y in (year - 1, year + 1):
        if first <= y <= last:
            pool |= _raw_year(country, y)[1]
    return offs, frozenset(d for d in pool if d.year == year)


# --------------------------------------------------------------------------
# Helpers on instants
# --------------------------------------------------------------------------


def _coords(t: datetime, name: str = "datetime") -> tuple[int, int]:
    """(date ordinal, microseconds since midnight) of ``t`` on the VN wall clock."""
    if t.__class__ is not datetime and not isinstance(t, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(t).__name__}")
    tz = t.tzinfo
    if tz is not VN_TZ:
        if tz is None or tz.utcoffset(t) is None:
            raise ValueError(
                f"{name} {t!r} is naive; pass a timezone-aware datetime (e.g. tzinfo=VN_TZ)"
            )
        t = t.astimezone(VN_TZ)
    return t.toordinal(), (
        (t.hour * 60 + t.minute) * 60 + t.second
    ) * _US_PER_SECOND + t.microsecond


def _make(ordinal: int, tod: int) -> datetime:
    d = date.fromordinal(ordinal)
    h, r = divmod(tod, _US_PER_HOUR)
    m, r = divmod(r, _US_PER_MINUTE)
    s, us = divmod(r, _US_PER_SECOND)
    return datetime(d.year, d.month, d.day, h, m, s, us, VN_TZ)


def _time_us(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * _US_PER_SECOND + t.microsecond


def _td_us(td: timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * _US_PER_SECOND + td.microseconds


def _scaled_us(amount: Any, unit_us: int, unit_td: timedelta, name: str) -> int:
    """``amount x unit`` in microseconds, rounded like ``timedelta * float``."""
    if isinstance(amount, bool):
        raise TypeError(f"{name} must be a number, got bool")
    if isinstance(amount, int):
        if amount < 0:
            raise ValueError(f"{name} must not be negative, got {amount}")
        return amount * unit_us
    if isinstance(amount, float):
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"{name} must be a finite, non-negative number, got {amount}")
        try:
            return _td_us(unit_td * amount)
        except OverflowError:
            raise ValueError(f"{name} {amount} is too large") from None
    if isinstance(amount, (Decimal, Fraction)):
        if isinstance(amount, Decimal) and not amount.is_finite():
            raise ValueError(f"{name} must be finite, got {amount}")
        if amount < 0:
            raise ValueError(f"{name} must not be negative, got {amount}")
        return round(Fraction(amount) * unit_us)
    raise TypeError(
        f"{name} must be an int, float, Decimal or Fraction, got {type(amount).__name__}"
    )


class _Table:
    """Cumulative working time per day over a contiguous range of whole years.

    ``cum[i]`` is the working time (microseconds, from an arbitrary origin)
    before day ``lo + i``; ``cum`` has one more entry than ``pats``.  Values
    are never rebased when the range grows, only indices shift.
    """

    __slots__ = ("cum", "end", "first_year", "last_year", "lo", "pats", "ymd")

    def __init__(
        self,
        first_year: int,
        last_year: int,
        cum: list[int],
        pats: list[_UsPattern],
        ymd: list[tuple[int, int, int]],
    ) -> None:
        self.first_year = first_year
        self.last_year = last_year
        self.lo = date(first_year, 1, 1).toordinal()
        self.cum = cum
        self.pats = pats
        self.ymd = ymd  # (year, month, day) of each day, to build results quickly
        self.end = self.lo + len(pats)


# --------------------------------------------------------------------------
# The calendar
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkingCalendar:
    """Working-time arithmetic for legal deadlines; immutable and hashable.

    ``sessions`` maps weekday (0=Monday) to its sessions (``(start, end)``
    naive times, or an OpenCPS-style string such as ``"07:30-11:30,13:00-17:00"``);
    missing weekdays have no sessions.  Monday must have sessions: they define
    :attr:`standard_day` and the hours of make-up and extra working days.
    Safe to share between threads.
    """

    sessions: Mapping[int, DaySessions] = DEFAULT_SESSIONS
    extra_days_off: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()
    country: str = "VN"

    if TYPE_CHECKING:  # caches set in __post_init__; not dataclass fields
        _pats: tuple[_UsPattern, ...]
        _std_us: int
        _std_td: timedelta
        _first_year: int
        _last_year: int
        _lock: threading.Lock
        _table: _Table | None

    def __post_init__(self) -> None:
        table = _coerce_sessions(self.sessions)
        object.__setattr__(self, "sessions", table)
        object.__setattr__(
            self, "extra_days_off", _coerce_dates(self.extra_days_off, "extra_days_off")
        )
        object.__setattr__(
            self, "extra_working_days", _coerce_dates(self.extra_working_days, "extra_working_days")
        )
        if not isinstance(self.country, str):
            raise TypeError(f"country must be a str, got {type(self.country).__name__}")
        try:
            first, last = _country_years(self.country)
        except NotImplementedError:
            raise ValueError(
                f"the holidays package does not support country {self.country!r}"
            ) from None
        if not table[0]:
            raise ValueError("Monday must have sessions: they define the standard working day")
        pats = tuple(tuple((_time_us(s), _time_us(e)) for s, e in table[k]) for k in range(7))
        object.__setattr__(self, "_pats", pats)
        object.__setattr__(self, "_std_us", sum(e - s for s, e in pats[0]))
        object.__setattr__(self, "_std_td", timedelta(microseconds=self._std_us))
        object.__setattr__(self, "_first_year", first)
        object.__setattr__(self, "_last_year", last)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_table", None)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            self.__class__,
            (self.sessions, self.extra_days_off, self.extra_working_days, self.country),
        )

    # ---------------------------------------------------------------- config

    @classmethod
    def parse_sessions(cls, spec: str) -> DaySessions:
        """Parse ``"07:30-11:30,13:00-17:00"`` (seconds optional; ``""``: no sessions).

        Raises ``ValueError`` on malformed text, impossible times, a session
        that ends before it starts, and unordered or overlapping sessions.
        """
        if not isinstance(spec, str):
            raise TypeError(f"session spec must be a str, got {type(spec).__name__}")
        if not spec.strip():
            return ()
        pairs: list[Session] = []
        for part in spec.split(","):
            text = part.strip()
            m = _SESSION_RE.fullmatch(text)
            if m is None:
                raise ValueError(f"bad session {text!r} in {spec!r}; expected HH:MM-HH:MM")
            h1, m1, s1, h2, m2, s2 = (int(g) if g is not None else 0 for g in m.groups())
            try:
                pairs.append((time(h1, m1, s1), time(h2, m2, s2)))
            except ValueError:
                raise ValueError(f"bad session {text!r} in {spec!r}: time out of range") from None
        return _check_day(pairs, f"session spec {spec!r}")

    @property
    def standard_day(self) -> timedelta:
        """Length of one working day: the total length of Monday's sessions."""
        return self._std_td

    # ---------------------------------------------------------------- days

    def _kind(self, d: date, offs: frozenset[date], makeups: frozenset[date]) -> int:
        """Weekday whose sessions apply on ``d``, or -1 for a day off."""
        if d in self.extra_working_days:
            return 0
        if d in self.extra_days_off:
            return -1
        if d in makeups:
            return 0
        if d in offs:
            return -1
        return d.weekday()

    def _check_year(self, year: int) -> None:
        if not self._first_year <= year <= self._last_year:
            raise ValueError(
                f"year {year} is outside the supported calendar range "
                f"{self._first_year}-{self._last_year} for country {self.country!r}"
            )

    def sessions_on(self, d: date) -> DaySessions:
        """The sessions that apply on date ``d`` (empty for a day off)."""
        if not isinstance(d, date) or isinstance(d, datetime):
            raise TypeError(
                f"expected a date, got {type(d).__name__}; use dt.astimezone(VN_TZ).date()"
            )
        self._check_year(d.year)
        offs, makeups = _year_days(self.country, d.year)
        k = self._kind(d, offs, makeups)
        return self.sessions[k] if k >= 0 else ()

    def is_working_day(self, d: date) -> bool:
        """True if date ``d`` has at least one working session."""
        return bool(self.sessions_on(d))

    # ---------------------------------------------------------------- table

    def _build(
        self, first_year: int, last_year: int, origin: int
    ) -> tuple[list[int], list[_UsPattern], list[tuple[int, int, int]]]:
        """Cumulative table for whole years, starting at value ``origin``."""
        pats_by_kind = self._pats
        cum = [origin]
        pats: list[_UsPattern] = []
        ymd: list[tuple[int, int, int]] = []
        total = origin
        for year in range(first_year, last_year + 1):
            offs, makeups = _year_days(self.country, year)
            for ordinal in range(date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal() + 1):
                d = date.fromordinal(ordinal)
                k = self._kind(d, offs, makeups)
                pat = pats_by_kind[k] if k >= 0 else ()
                pats.append(pat)
                ymd.append((d.year, d.month, d.day))
                for s, e in pat:
                    total += e - s
                cum.append(total)
        return cum, pats, ymd

    def _cover(self, lo_ordinal: int, hi_ordinal: int) -> _Table:
        """A table covering both ordinals (inclusive), growing it if needed."""
        tab = self._table
        if tab is not None and tab.lo <= lo_ordinal and hi_ordinal < tab.end:
            return tab
        for o in (lo_ordinal, hi_ordinal):
            if not 1 <= o <= date.max.toordinal():
                raise ValueError("date outside the supported calendar range")
        y_lo = date.fromordinal(lo_ordinal).year
        y_hi = date.fromordinal(hi_ordinal).year
        self._check_year(y_lo)
        self._check_year(y_hi)
        with self._lock:
            tab = self._table
            if tab is None:
                last = min(y_hi + 1, self._last_year)
                tab = _Table(y_lo, last, *self._build(y_lo, last, 0))
            else:
                first, last = tab.first_year, tab.last_year
                cum, pats, ymd = tab.cum, tab.pats, tab.ymd
                if y_lo < first:
                    pre_cum, pre_pats, pre_ymd = self._build(y_lo, first - 1, 0)
                    shift = cum[0] - pre_cum[-1]
                    cum = [v + shift for v in pre_cum[:-1]] + cum
                    pats = pre_pats + pats
                    ymd = pre_ymd + ymd
                    first = y_lo
                if y_hi > last:
                    new_last = min(y_hi + 1, self._last_year)
                    post_cum, post_pats, post_ymd = self._build(last + 1, new_last, cum[-1])
                    cum = cum + post_cum[1:]
                    pats = pats + post_pats
                    ymd = ymd + post_ymd
                    last = new_last
                tab = _Table(first, last, cum, pats, ymd)
            object.__setattr__(self, "_table", tab)  # atomic swap; readers keep old tables
            return tab

    def _grow(self, tab: _Table, needed_us: int) -> _Table:
        """Extend ``tab`` forward by enough years for ``needed_us`` more working time."""
        if tab.last_year >= self._last_year:
            raise ValueError(
                f"the result lies beyond the supported calendar range "
                f"{self._first_year}-{self._last_year} for country {self.country!r}"
            )
        years = 1 + needed_us // (200 * self._std_us)
        target = min(tab.last_year + years, self._last_year)
        return self._cover(tab.lo, date(target, 12, 31).toordinal())

    def _table_for(self, ordinal: int) -> _Table:
        tab = self._table
        if tab is None or not tab.lo <= ordinal < tab.end:
            tab = self._cover(ordinal, ordinal)
        return tab

    @staticmethod
    def _worked(tab: _Table, i: int, tod: int) -> int:
        """Cumulative working time at time-of-day ``tod`` on day index ``i``."""
        w = tab.cum[i]
        for s, e in tab.pats[i]:
            if tod <= s:
                break
            if tod < e:
                return w + tod - s
            w += e - s
        return w

    def _next_day(self, ordinal: int) -> tuple[_Table, int]:
        """(table, index) of the first working day strictly after ``ordinal``."""
        tab = self._table_for(ordinal)
        while True:
            i = ordinal - tab.lo
            cum = tab.cum
            k = bisect_right(cum, cum[i + 1], i + 1)
            if k < len(cum):
                return tab, k - 1
            tab = self._grow(tab, 0)

    def _next_instant(self, ordinal: int, tod: int) -> datetime:
        tab = self._table_for(ordinal)
        for s, e in tab.pats[ordinal - tab.lo]:
            if tod < e:
                return _make(ordinal, max(tod, s))
        tab, j = self._next_day(ordinal)
        return _make(tab.lo + j, tab.pats[j][0][0])

    def _add(self, start: datetime, amount_us: int) -> datetime:
        # Hot path (benchmarked): _coords, _worked and _make are inlined.
        if start.__class__ is not datetime or start.tzinfo is not VN_TZ:
            ordinal, tod = _coords(start, "start")
        else:
            ordinal = start.toordinal()
            tod = (
                (start.hour * 60 + start.minute) * 60 + start.second
            ) * _US_PER_SECOND + start.microsecond
        if amount_us == 0:
            return self._next_instant(ordinal, tod)
        tab = self._table
        if tab is None or not tab.lo <= ordinal < tab.end:
            tab = self._cover(ordinal, ordinal)
        i = ordinal - tab.lo
        cum = tab.cum
        target = cum[i] + amount_us
        for s, e in tab.pats[i]:
            if tod <= s:
                break
            if tod < e:
                target += tod - s
                break
            target += e - s
        k = bisect_left(cum, target, i + 1)
        while k == len(cum):
            tab = self._grow(tab, target - cum[-1])
            cum = tab.cum
            i = ordinal - tab.lo
            k = bisect_left(cum, target, i + 1)
        j = k - 1  # cum[j] < target <= cum[j + 1]: the due day
        rem = target - cum[j]
        for s, e in tab.pats[j]:
            if rem <= e - s:
                y, mo, d = tab.ymd[j]
                h, r = divmod(s + rem, _US_PER_HOUR)
                mi, r = divmod(r, _US_PER_MINUTE)
                sec, us = divmod(r, _US_PER_SECOND)
                return datetime(y, mo, d, h, mi, sec, us, VN_TZ)
            rem -= e - s
        raise AssertionError("inconsistent working-time table")  # pragma: no cover

    # ---------------------------------------------------------------- API

    def next_working_instant(self, t: datetime) -> datetime:
        """``t`` itself if it lies in a session ``[start, end)``, else the next session start."""
        ordinal, tod = _coords(t, "t")
        return self._next_instant(ordinal, tod)

    def add_working_time(self, start: datetime, amount: timedelta) -> datetime:
        """The instant when ``amount`` of session time has elapsed from ``start``.

        A result exactly at a session end is that end.  A zero amount returns
        ``next_working_instant(start)``; a negative amount raises ``ValueError``.
        """
        if not isinstance(amount, timedelta):
            raise TypeError(f"amount must be a timedelta, got {type(amount).__name__}")
        us = _td_us(amount)
        if us < 0:
            raise ValueError(f"amount must not be negative, got {amount}")
        return self._add(start, us)

    def add_working_days(self, start: datetime, days: float) -> datetime:
        """``add_working_time(start, days * standard_day)``; ``days`` may be fractional."""
        if days.__class__ is int and days >= 0:  # fast path
            return self._add(start, days * self._std_us)
        return self._add(start, _scaled_us(days, self._std_us, self._std_td, "days"))

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """``add_working_time(start, timedelta(hours=hours))``."""
        return self._add(start, _scaled_us(hours, _US_PER_HOUR, timedelta(hours=1), "hours"))

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Session time within ``[a, b]`` (zero if ``b <= a``); holidays count nothing."""
        oa, ta = _coords(a, "a")
        ob, tb = _coords(b, "b")
        if b <= a:
            return timedelta(0)
        tab = self._table
        if tab is None or not (tab.lo <= oa < tab.end and tab.lo <= ob < tab.end):
            tab = self._cover(min(oa, ob), max(oa, ob))
        diff = self._worked(tab, ob - tab.lo, tb) - self._worked(tab, oa - tab.lo, ta)
        return timedelta(microseconds=max(diff, 0))

    def due_same_day(self, received: datetime, cutoff: time = time(15, 0)) -> datetime:
        """Due instant of a same-day procedure with a cut-off time.

        If ``received`` falls on a working day, at or before ``cutoff`` and
        before that day's close (end of its last session), the due instant is
        that day's close; otherwise (non-working day, after the cut-off, or
        after close) it is the close of the next working day.  Received 06:00
        on a working Tuesday: Tuesday 17:00; received Saturday: Monday 17:00.
        """
        if not isinstance(cutoff, time) or cutoff.tzinfo is not None:
            raise ValueError(f"cutoff must be a naive datetime.time, got {cutoff!r}")
        ordinal, tod = _coords(received, "received")
        tab = self._table_for(ordinal)
        pat = tab.pats[ordinal - tab.lo]
        if pat and tod <= _time_us(cutoff) and tod < pat[-1][1]:
            return _make(ordinal, pat[-1][1])
        tab, j = self._next_day(ordinal)
        return _make(tab.lo + j, tab.pats[j][-1][1])

    def add_calendar_days(self, start: datetime, days: int) -> datetime:
        """Deadline of ``days`` calendar days, counted in whole days to close of business.

        The due date is ``start``'s VN date plus ``days``; if that is not a
        working day, the next working day.  The due instant is the end of the
        last session of that day.  (With ``days == 0`` and ``start`` after the
        day's close, the next working day's close is used, so the result is
        never before ``start``.)
        """
        if isinstance(days, bool) or not isinstance(days, int):
            raise TypeError(f"days must be an int, got {type(days).__name__}")
        if days < 0:
            raise ValueError(f"days must not be negative, got {days}")
        ordinal, tod = _coords(start, "start")
        due = ordinal + days
        tab = self._table_for(due)
        pat = tab.pats[due - tab.lo]
        if pat and (days > 0 or tod < pat[-1][1]):
            return _make(due, pat[-1][1])
        tab, j = self._next_day(due)
        return _make(tab.lo + j, tab.pats[j][-1][1])

    def resume_due(self, due: datetime, paused_at: datetime, resumed_at: datetime) -> datetime:
        """New due instant after a pause (e.g. waiting for the applicant to supplement).

        Returns ``add_working_time(resumed_at, working_time_between(paused_at, due))``:
        the working time left at the pause is counted again from the resumption.
        Paused at or after ``due``, nothing is left and the result is
        ``next_working_instant(resumed_at)``.  ``resumed_at < paused_at`` raises
        ``ValueError``.
        """
        _coords(due, "due")
        _coords(paused_at, "paused_at")
        _coords(resumed_at, "resumed_at")
        if resumed_at < paused_at:
            raise ValueError(f"resumed_at {resumed_at} is before paused_at {paused_at}")
        remaining = self.working_time_between(paused_at, due)
        return self._add(resumed_at, _td_us(remaining))
