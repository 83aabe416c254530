"""Background jobs (APScheduler): the deadline sweep, the outbox sender, the portal feeder
and the refresh of the reports' stored facts.

The portal feeder (:func:`engine.portal.feed`) runs when a push URL is
configured (``MOTCUA_PORTAL_PUSH_URL``); it only queues messages, which the
outbox sender delivers through the ``portal`` channel.

Each job is a sweep over indexed rows, never one scheduled job per task, and
several worker processes may run them at once against one PostgreSQL.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.orm import Session

from . import config, escalation
from .core.calendar import VN_TZ

if TYPE_CHECKING:
    from . import portal

__all__ = ["build_scheduler", "run_portal_feed", "run_report_refresh", "run_sweep"]

#: How often the reports' stored facts are brought up to date, in seconds.
REPORT_REFRESH_SECONDS = 300

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(VN_TZ)


def run_sweep(sessions: Callable[[], Session], clock: Callable[[], datetime] = _now) -> escalation.SweepReport:
    """One pass of the deadline sweep at the clock's current time."""
    report = escalation.sweep(sessions, clock())
    if report.fired or report.failed:
        log.info("escalation sweep: %s fired, %s messages, %s failed", report.fired, report.messages, report.failed)
    return report


def run_portal_feed(
    sessions: Callable[[], Session], clock: Callable[[], datetime] = _now, push_all: bool = False, batch: int = 500
) -> "portal.FeedReport":
    """The portal feeder at the clock's current time: passes until the backlog is read (at most 20)."""
    from . import portal

    total = portal.FeedReport()
    for _ in range(20):
        report = portal.feed(sessions, clock(), push_all=push_all, batch=batch)
        total.read += report.read
        total.queued += report.queued
        total.gaps_skipped += report.gaps_skipped
        total.waiting, total.cursor = report.waiting, max(total.cursor, report.cursor)
        if report.read < batch or report.waiting:
            break
    if total.queued:
        log.info("portal feed: %s events read, %s messages queued, cursor %s", total.read, total.queued, total.cursor)
    return total


def run_report_refresh(sessions: Callable[[], Session]) -> dict[str, int]:
    """Store the steps and dossiers finished since the last refresh (see
    :func:`engine.reports.refresh_times`), so that a report has little left to add."""
    from . import reports, services

    with sessions() as session:
        calendar = services.load_calendar(session)
        engine = session.get_bind()
    counts = reports.refresh_times(engine, calendar)
    if any(counts.values()):
        log.info("report facts: %s steps, %s dossiers stored", counts.get("steps", 0), counts.get("dossiers", 0))
    return counts


def build_scheduler(
    sessions: Callable[[], Session],
    deliver: Callable[[datetime], object] | None = None,
    sweep_seconds: int = 60,
    deliver_seconds: int = 15,
    clock: Callable[[], datetime] = _now,
    background: bool = False,
    settings: config.Settings | None = None,
) -> BaseScheduler:
    """A scheduler with the sweep (and, given ``deliver``, the outbox sender).

    ``background``: run in threads beside a web server instead of blocking.
    ``settings`` (default: the ``MOTCUA_*`` environment): with a
    ``portal_push_url`` the portal feeder runs every ``portal_interval`` seconds.
    """
    settings = settings if settings is not None else config.load()
    scheduler: BaseScheduler = BackgroundScheduler(timezone=VN_TZ) if background else BlockingScheduler(timezone=VN_TZ)
    # Jobs first run at once by the wall clock; ``clock`` is what the jobs take as "now".
    scheduler.add_job(run_sweep, "interval", seconds=sweep_seconds, args=[sessions, clock], id="escalation-sweep",
                      max_instances=1, coalesce=True, next_run_time=_now())
    if deliver is not None:
        scheduler.add_job(lambda: deliver(clock()), "interval", seconds=deliver_seconds, id="outbox-sender",
                          max_instances=1, coalesce=True, next_run_time=_now())
    scheduler.add_job(run_report_refresh, "interval", seconds=REPORT_REFRESH_SECONDS, args=[sessions], id="report-refresh",
                      max_instances=1, coalesce=True, next_run_time=_now())
    if settings.portal_push_url:
        scheduler.add_job(run_portal_feed, "interval", seconds=int(settings.portal_interval or 15),
                          args=[sessions, clock, settings.portal_push_all], id="portal-feeder",
                          max_instances=1, coalesce=True, next_run_time=_now())
    return scheduler
