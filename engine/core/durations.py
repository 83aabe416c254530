"""Legal deadlines and step allotments as designers write them in a diagram.

A duration is a number and a unit, in English or Vietnamese::

    "3 working days"  "3 ngày làm việc"  "3wd"
    "4 working hours" "4 giờ làm việc"   "4wh"
    "30 calendar days" "30 ngày"          "30cd"
    "same day" "trong ngày"               (a same-day procedure; see ``cutoff``)

Example::

    >>> parse_duration("2,5 ngày làm việc")
    Duration(amount=Decimal('2.5'), unit='working_days')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

__all__ = ["Duration", "DurationError", "parse_duration", "HOURS_PER_WORKING_DAY"]

Unit = Literal["working_days", "working_hours", "calendar_days", "same_day"]

#: Length of a standard working day, used to compare allotments with deadlines.
HOURS_PER_WORKING_DAY = 8

_UNITS: dict[str, Unit] = {
    "working day": "working_days",
    "working days": "working_days",
    "ngày làm việc": "working_days",
    "wd": "working_days",
    "working hour": "working_hours",
    "working hours": "working_hours",
    "giờ làm việc": "working_hours",
    "giờ": "working_hours",
    "wh": "working_hours",
    "calendar day": "calendar_days",
    "calendar days": "calendar_days",
    "ngày": "calendar_days",
    "cd": "calendar_days",
}
_SAME_DAY = {"same day", "same-day", "trong ngày", "0 working days", "0 ngày làm việc"}
_PATTERN = re.compile(r"^\s*(\d{1,4}(?:[.,]\d{1,2})?)\s*([^\d].*?)\s*$")


class DurationError(ValueError):
    """A duration text that cannot be understood."""


@dataclass(frozen=True)
class Duration:
    """An amount of working days, working hours or calendar days."""

    amount: Decimal
    unit: Unit

    @property
    def working_hours(self) -> Decimal:
        """Upper bound of the working hours this duration spans, for comparisons.

        Calendar days count as full working days (at most that many are working
        days); a same-day duration counts as one working day.
        """
        if self.unit == "working_hours":
            return self.amount
        if self.unit == "same_day":
            return Decimal(HOURS_PER_WORKING_DAY)
        return self.amount * HOURS_PER_WORKING_DAY

    def __str__(self) -> str:
        if self.unit == "same_day":
            return "trong ngày"
        amount = format(self.amount.normalize(), "f")
        label = {"working_days": "ngày làm việc", "working_hours": "giờ làm việc", "calendar_days": "ngày"}[self.unit]
        return f"{amount} {label}"


def parse_duration(text: str) -> Duration:
    """Parse a deadline or allotment such as ``"3 ngày làm việc"``; raise :class:`DurationError`."""
    cleaned = " ".join(text.strip().lower().split())
    if cleaned in _SAME_DAY:
        return Duration(Decimal(0), "same_day")
    match = _PATTERN.match(cleaned)
    if not match or match.group(2) not in _UNITS:
        raise DurationError(
            f"'{text}' is not a duration; write e.g. '3 working days', '4 working hours', "
            "'30 calendar days' or 'same day' (or in Vietnamese: '3 ngày làm việc', '4 giờ làm việc', "
            "'30 ngày', 'trong ngày')."
        )
    try:
        amount = Decimal(match.group(1).replace(",", "."))
    except InvalidOperation as err:  # pragma: no cover - the pattern admits only numbers
        raise DurationError(f"'{text}' has no valid number.") from err
    unit = _UNITS[match.group(2)]
    if amount == 0 and unit == "working_days":
        return Duration(Decimal(0), "same_day")
    if amount <= 0:
        raise DurationError(f"'{text}' must be more than zero.")
    return Duration(amount, unit)
