"""Background jobs (APScheduler): the deadline sweep and the outbox sender.

Each job is a sweep over indexed rows, never one scheduled job per task, and
several worker processes may run them at once against one PostgreSQL.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.orm import Session

from . import escalation
from .core.calendar import VN_TZ

__all__ = ["build_scheduler", "run_sweep"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(VN_TZ)


def run_sweep(sessions: Callable[[], Session], clock: Callable[[], datetime] = _now) -> escalation.SweepReport:
    """One pass of the deadline sweep at the clock's current time."""
    report = escalation.sweep(sessions, clock())
    if report.fired or report.failed:
        log.info("escalation sweep: %s fired, %s messages, %s failed", report.fired, report.messages, report.failed)
    return report


def build_scheduler(
    sessions: Callable[[], Session],
    deliver: Callable[[datetime], object] | None = None,
    sweep_seconds: int = 60,
    deliver_seconds: int = 15,
    clock: Callable[[], datetime] = _now,
    background: bool = False,
) -> BaseScheduler:
    """A scheduler with the sweep (and, given ``deliver``, the outbox sender).

    ``background``: run in threads beside a web server instead of blocking.
    """
    scheduler: BaseScheduler = BackgroundScheduler(timezone=VN_TZ) if background else BlockingScheduler(timezone=VN_TZ)
    # Jobs first run at once by the wall clock; ``clock`` is what the jobs take as "now".
    scheduler.add_job(run_sweep, "interval", seconds=sweep_seconds, args=[sessions, clock], id="escalation-sweep",
                      max_instances=1, coalesce=True, next_run_time=_now())
    if deliver is not None:
        scheduler.add_job(lambda: deliver(clock()), "interval", seconds=deliver_seconds, id="outbox-sender",
                          max_instances=1, coalesce=True, next_run_time=_now())
    return scheduler
