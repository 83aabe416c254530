"""The transactional outbox: enqueue with the change, deliver in the background.

Writing
    :func:`enqueue` adds a ``pending`` row to the caller's session and does
    not commit: the notification exists if and only if the change that caused
    it commits.
    :func:`enqueue_many` writes many such rows in one bulk ``INSERT``.

Delivering
    :func:`deliver_due` runs one pass:

    1. **Claim** (one short, committed transaction): due rows — ``pending``
       with ``next_attempt_at <= now``, plus ``sending`` rows whose lease has
       expired — oldest first. On PostgreSQL they are selected ``FOR UPDATE
       SKIP LOCKED``; on every backend each row is then taken with a
       compare-and-set ``UPDATE … WHERE id = ? AND state = ? AND attempts = ?``
       (on SQLite this is what keeps two senders apart). A claimed row becomes
       ``sending``, ``attempts`` grows by one and ``next_attempt_at`` holds the
       lease expiry (``now + lease``; no extra column is needed and the
       ``(state, next_attempt_at)`` index serves both queries).
    2. **Send**, outside any transaction, one message at a time; one broken
       message never stops the others.
    3. **Record** each outcome in its own short transaction, fenced on
       ``state = 'sending' AND attempts = <claimed attempts>`` so a sender that
       lost its lease cannot overwrite the new owner's result: ``sent`` (with
       ``sent_at``), a retry (``pending``, ``next_attempt_at = now + backoff``,
       ``last_error``), or ``failed`` on a permanent error or once
       ``attempts`` reaches ``max_attempts``.

Ordered channels
    Messages of an ordered channel (:data:`ORDERED_CHANNELS`: the national
    portal) are delivered **in order per dossier**: a message is claimed only
    when every earlier message of the same dossier and channel is ``sent``
    or claimed in the same pass, in id order. When one of them fails (retry
    or give-up), the later ones claimed with it are handed back unsent; a
    ``failed`` message holds the dossier's later messages until it is retried
    (``engine.portal.retry_failed``). Transient errors of an ordered channel are
    retried up to :data:`ORDERED_MAX_ATTEMPTS` times (at least ``max_attempts``).

Guarantees
    Two senders never claim the same message at the same time, so in normal
    operation each message is sent once. Delivery is **at-least-once** when a
    sender dies (or stalls past its lease) between sending and recording: the
    lease expires, the row is claimed again and re-sent. The stable identity
    derived from the outbox id — ``Message-ID: <outbox-ID@motcua>`` for e-mail,
    ``Idempotency-Key: outbox-ID`` for HTTP gateways — lets the receiving side
    drop that duplicate. A crash is counted as an attempt, so a message that
    crashes its sender every time still ends ``failed`` after ``max_attempts``.

Time is always passed in (``now``); only :func:`run_forever` reads a clock,
the one it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, Table, and_, exists, insert, not_, select, update
from sqlalchemy.orm import Session

from engine.persistence.models import OutboxMessage

from .channels import CHANNEL_NAMES, ORDERED_CHANNELS, Channel, DeliveryError

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "LEASE",
    "ORDERED_MAX_ATTEMPTS",
    "DeliveryReport",
    "SessionFactory",
    "StopEvent",
    "backoff",
    "claim_due",
    "deliver_due",
    "enqueue",
    "enqueue_many",
    "run_forever",
]

logger = logging.getLogger("engine.notify")

#: How long a claimed message belongs to its sender before another may take it.
LEASE = timedelta(minutes=5)
#: First retry delay; doubled on every further attempt …
BACKOFF_BASE = timedelta(minutes=1)
#: … up to this.
BACKOFF_CAP = timedelta(hours=6)

#: Tries of an ordered-channel message before transient errors count as failure
#: (with the 6-hour cap, about a week): a failed message blocks its dossier's later ones.
ORDERED_MAX_ATTEMPTS = 40

_MAX_ERROR = 2000
_TABLE = cast(Table, OutboxMessage.__table__)

SessionFactory = Callable[[], Session]


class StopEvent(Protocol):
    """What :func:`run_forever` needs of a stop signal (:class:`threading.Event` fits)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class DeliveryReport:
    """What one or more delivery passes did."""

    #: Messages this pass took (and was to send).
    claimed: int = 0
    #: Delivered and recorded ``sent``.
    sent: int = 0
    #: Failed for now, scheduled again with backoff.
    retried: int = 0
    #: Given up: permanent error, ``max_attempts`` reached, or a lease expired on the last attempt.
    failed: int = 0
    #: Claimed but handed back unsent because the pass ran past half its lease.
    released: int = 0
    #: Sent or tried, but the outcome could not be recorded (lease lost, database error).
    lost: int = 0

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


def _aware(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now


def backoff(attempts: int, base: timedelta = BACKOFF_BASE, cap: timedelta = BACKOFF_CAP) -> timedelta:
    """Delay before the next try after ``attempts`` tries: 1, 2, 4, … minutes, at most 6 hours."""
    exponent = min(max(attempts, 1) - 1, 40)
    return min(base * (1 << exponent), cap)


def _message_row(
    *, channel: str, recipient: str, subject: str, body: str, event: str, now: datetime, dossier_id: int | None
) -> dict[str, Any]:
    """The columns of a new ``pending`` outbox row, due at ``now`` (checked as :func:`enqueue` documents)."""
    if channel not in CHANNEL_NAMES:
        raise ValueError(f"unknown channel {channel!r}; expected one of {sorted(CHANNEL_NAMES)}")
    if not recipient or not recipient.strip():
        raise ValueError("a notification needs a recipient")
    if not event:
        raise ValueError("a notification needs an event name")
    _aware(now)
    return {
        "created_at": now,
        "channel": channel,
        "recipient": recipient.strip(),
        "subject": subject or "",
        "body": body or "",
        "event": event,
        "dossier_id": dossier_id,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "sent_at": None,
    }


def enqueue(
    session: Session,
    *,
    channel: str,
    recipient: str,
    subject: str,
    body: str,
    event: str,
    now: datetime,
    dossier_id: int | None = None,
) -> OutboxMessage:
    """Add a ``pending`` message, due at ``now``, to ``session`` — without committing.

    The caller's commit writes it together with the change that caused it; a
    rollback discards both. ``id`` is assigned at the next flush.
    """
    message = OutboxMessage(
        **_message_row(
            channel=channel, recipient=recipient, subject=subject, body=body, event=event, now=now, dossier_id=dossier_id
        )
    )
    session.add(message)
    return message


def enqueue_many(session: Session, messages: Iterable[Mapping[str, Any]], now: datetime) -> int:
    """Write many ``pending`` messages, due at ``now``, in one bulk ``INSERT`` — without committing.

    Each mapping holds :func:`enqueue`'s keyword arguments except ``now``
    (``channel``, ``recipient``, ``subject``, ``body``, ``event`` and
    optionally ``dossier_id``); the rows are exactly those :func:`enqueue`
    would add, in the given order. Every message is checked before any is
    written: one bad message raises ``ValueError`` and writes none. Returns
    the number of messages written.
    """
    rows = [
        _message_row(
            channel=m["channel"], recipient=m["recipient"], subject=m["subject"], body=m["body"], event=m["event"],
            now=now, dossier_id=m.get("dossier_id"),
        )
        for m in messages
    ]
    if rows:
        session.execute(insert(_TABLE), rows)
    return len(rows)


def _execute(session: Session, statement: Any) -> CursorResult[Any]:
    """Run an UPDATE (its result has a ``rowcount``)."""
    return cast("CursorResult[Any]", session.execute(statement))


def _detached(row: Any, **changes: Any) -> OutboxMessage:
    """A transient copy of an outbox row for the channels (no session, no lazy loads)."""
    values = {column.key: getattr(row, column.key) for column in _TABLE.columns}
    values.update(changes)
    return OutboxMessage(**values)


def _limit(channel: str, max_attempts: int) -> int:
    """Attempts a message of ``channel`` gets before a transient error fails it."""
    return max(max_attempts, ORDERED_MAX_ATTEMPTS) if channel in ORDERED_CHANNELS else max_attempts


def _due(t: Table, now: datetime) -> Any:
    return and_(t.c.state.in_(("pending", "sending")), t.c.next_attempt_at <= now)


def _ordered_candidates(session: Session, names: list[str], now: datetime, batch: int) -> list[Any]:
    """Due messages of ordered channels whose earlier messages are all sent or due, oldest first,
    cut to the prefix of each dossier's unsent messages (see the module doc)."""
    t = _TABLE
    earlier = t.alias("earlier")
    blocked = exists().where(
        earlier.c.channel == t.c.channel,
        earlier.c.dossier_id == t.c.dossier_id,
        earlier.c.id < t.c.id,
        earlier.c.state != "sent",
        not_(_due(earlier, now)),
    )
    query = (
        select(t)
        .where(_due(t, now), t.c.channel.in_(names), not_(blocked))
        .order_by(t.c.id)
        .limit(batch)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=t, skip_locked=True)
    rows = session.execute(query).all()
    keyed = {(row.channel, row.dossier_id) for row in rows if row.dossier_id is not None}
    if not keyed:
        return list(rows)
    # The unsent messages of those dossiers, up to the last candidate: a candidate
    # is taken only if every unsent message before it is taken too (one skipped
    # because another sender holds it, or cut by the limit, stops the dossier).
    unsent = session.execute(
        select(t.c.id, t.c.channel, t.c.dossier_id)
        .where(
            t.c.channel.in_(sorted({c for c, _ in keyed})),
            t.c.dossier_id.in_(sorted({d for _, d in keyed})),
            t.c.state != "sent",
            t.c.id <= max(row.id for row in rows),
        )
        .order_by(t.c.id)
    ).all()
    taken = {row.id for row in rows}
    stopped: set[tuple[str, int]] = set()
    allowed: set[int] = set()
    for item in unsent:
        key = (item.channel, item.dossier_id)
        if key not in keyed or key in stopped:
            continue
        if item.id in taken:
            allowed.add(item.id)
        else:
            stopped.add(key)
    return [row for row in rows if row.dossier_id is None or row.id in allowed]


def _claim(
    session_factory: SessionFactory,
    channel_names: Collection[str],
    now: datetime,
    batch: int,
    max_attempts: int,
    lease: timedelta,
) -> tuple[list[OutboxMessage], int]:
    """Take up to ``batch`` due messages in one committed transaction; also return how many expired leases were failed."""
    if batch < 1 or not channel_names:
        return [], 0
    t = _TABLE
    plain = sorted(set(channel_names) - ORDERED_CHANNELS)
    ordered = sorted(set(channel_names) & ORDERED_CHANNELS)
    with session_factory() as session:
        rows: list[Any] = []
        if plain:
            query = (
                select(t)
                .where(and_(_due(t, now), t.c.channel.in_(plain)))
                .order_by(t.c.next_attempt_at, t.c.id)
                .limit(batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(session.execute(query).all())
        if ordered:
            # Ordered messages get what the others leave, and at least half the batch.
            share = max(batch - len(rows), (batch + 1) // 2)
            ordered_rows = _ordered_candidates(session, ordered, now, share)
            rows = rows[: batch - len(ordered_rows)] + ordered_rows
        claimed: list[OutboxMessage] = []
        expired_failed = 0
        broken: set[tuple[str, int]] = set()
        for row in rows:
            key = (row.channel, row.dossier_id)
            is_ordered = row.channel in ORDERED_CHANNELS and row.dossier_id is not None
            if is_ordered and key in broken:
                continue
            cas = update(t).where(t.c.id == row.id, t.c.state == row.state, t.c.attempts == row.attempts)
            if row.state == "sending" and row.attempts >= _limit(row.channel, max_attempts):
                error = f"lease expired on attempt {row.attempts} (sender crashed?); outcome unknown, giving up"
                result = _execute(session, cas.values(state="failed", last_error=error))
                if result.rowcount == 1:
                    expired_failed += 1
                    logger.error("outbox-%s failed: %s", row.id, error)
                if is_ordered:
                    broken.add(key)
                continue
            if row.state == "sending":
                logger.warning("outbox-%s: lease expired (attempt %s), claiming it again", row.id, row.attempts)
            lease_until = now + lease
            result = _execute(
                session, cas.values(state="sending", attempts=row.attempts + 1, next_attempt_at=lease_until)
            )
            if result.rowcount == 1:
                claimed.append(_detached(row, state="sending", attempts=row.attempts + 1, next_attempt_at=lease_until))
            elif is_ordered:
                broken.add(key)
        session.commit()
    return claimed, expired_failed


def claim_due(
    session_factory: SessionFactory,
    now: datetime,
    *,
    channels: Collection[str] = CHANNEL_NAMES,
    batch: int = 50,
    max_attempts: int = 8,
    lease: timedelta = LEASE,
) -> list[OutboxMessage]:
    """Claim due messages (step 1 of :func:`deliver_due`) and return detached copies.

    Each returned message is ``sending`` under a lease until ``now + lease``;
    if it is never recorded it becomes due again after that.
    """
    claimed, _ = _claim(session_factory, channels, _aware(now), batch, max_attempts, lease)
    return claimed


def _record(session_factory: SessionFactory, message: OutboxMessage, **values: Any) -> bool:
    """Write an outcome if ``message`` is still ours (same state and attempt); True if written."""
    t = _TABLE
    with session_factory() as session:
        result = _execute(
            session,
            update(t)
            .where(t.c.id == message.id, t.c.state == "sending", t.c.attempts == message.attempts)
            .values(**values),
        )
        session.commit()
    return result.rowcount == 1


def _deliver_one(
    session_factory: SessionFactory,
    channel: Channel,
    message: OutboxMessage,
    now: datetime,
    max_attempts: int,
    report: DeliveryReport,
) -> bool:
    """Send one claimed message and record the outcome; True if it was sent and recorded."""
    max_attempts = _limit(message.channel, max_attempts)
    error: str | None = None
    permanent = False
    try:
        channel.send(message)
    except DeliveryError as exc:
        error, permanent = str(exc) or type(exc).__name__, exc.permanent
    except Exception as exc:  # a broken channel must not stop the batch
        logger.exception("outbox-%s: channel %r raised unexpectedly", message.id, channel.name)
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        error = error[:_MAX_ERROR]
    try:
        if error is None:
            if _record(session_factory, message, state="sent", sent_at=now, last_error=None):
                report.sent += 1
                logger.debug("outbox-%s sent via %s", message.id, channel.name)
                return True
        elif permanent or message.attempts >= max_attempts:
            why = "permanent error" if permanent else f"{message.attempts} attempts"
            if _record(session_factory, message, state="failed", last_error=error):
                report.failed += 1
                logger.warning("outbox-%s failed (%s): %s", message.id, why, error)
                return False
        else:
            retry_at = now + backoff(message.attempts)
            if _record(session_factory, message, state="pending", next_attempt_at=retry_at, last_error=error):
                report.retried += 1
                logger.info("outbox-%s attempt %s failed, retry at %s: %s", message.id, message.attempts, retry_at, error)
                return False
        report.lost += 1
        logger.warning("outbox-%s: lease lost before the outcome was recorded; another sender owns it", message.id)
    except Exception:
        report.lost += 1
        logger.exception("outbox-%s: could not record the outcome; it is retried after its lease", message.id)
    return False


def _release(session_factory: SessionFactory, messages: list[OutboxMessage], now: datetime) -> int:
    """Hand unsent claimed messages back (pending, due now, attempt not counted)."""
    released = 0
    for message in messages:
        try:
            if _record(session_factory, message, state="pending", attempts=message.attempts - 1, next_attempt_at=now):
                released += 1
        except Exception:
            logger.exception("outbox-%s: could not release; it is retried after its lease", message.id)
    return released


def deliver_due(
    session_factory: SessionFactory,
    channels: Mapping[str, Channel],
    now: datetime,
    batch: int = 50,
    max_attempts: int = 8,
    *,
    lease: timedelta = LEASE,
    timer: Callable[[], float] = time.monotonic,
) -> DeliveryReport:
    """Claim, send and record up to ``batch`` due messages (one pass; see the module doc).

    Only messages whose channel is a key of ``channels`` are taken. If sending
    takes longer than half the lease (measured with ``timer``), the rest of
    the batch is handed back unsent rather than risk a second sender taking
    it over mid-send.
    """
    _aware(now)
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    report = DeliveryReport()
    claimed, expired_failed = _claim(session_factory, list(channels), now, batch, max_attempts, lease)
    report.claimed = len(claimed)
    report.failed += expired_failed
    started = timer()
    budget = lease.total_seconds() / 2
    held: set[tuple[str, int]] = set()  # ordered (channel, dossier) whose earlier message was not sent
    for index, message in enumerate(claimed):
        if timer() - started > budget:
            rest = claimed[index:]
            report.released += _release(session_factory, rest, now)
            logger.warning("outbox pass ran past half its lease; handed %d message(s) back", len(rest))
            break
        ordered = message.channel in ORDERED_CHANNELS and message.dossier_id is not None
        key = (message.channel, message.dossier_id or 0)
        if ordered and key in held:
            report.released += _release(session_factory, [message], now)
            continue
        sent = _deliver_one(session_factory, channels[message.channel], message, now, max_attempts, report)
        if ordered and not sent:
            held.add(key)
    return report


def _utc_now() -> datetime:
    return datetime.now(UTC)


def run_forever(
    session_factory: SessionFactory,
    channels: Mapping[str, Channel],
    interval: float,
    stop_event: StopEvent,
    clock: Callable[[], datetime] = _utc_now,
    *,
    batch: int = 50,
    max_attempts: int = 8,
    lease: timedelta = LEASE,
) -> DeliveryReport:
    """Call :func:`deliver_due` with ``clock()`` every ``interval`` seconds until ``stop_event`` is set.

    A full batch is followed at once by the next pass (to drain a backlog);
    a failing pass (database down …) is logged and tried again after
    ``interval``. Returns the sum of all passes.
    """
    total = DeliveryReport()
    while not stop_event.is_set():
        full = False
        try:
            report = deliver_due(session_factory, channels, clock(), batch, max_attempts, lease=lease)
        except Exception:
            logger.exception("outbox delivery pass failed; next try in %ss", interval)
        else:
            total += report
            full = report.claimed >= batch
        if not full:
            stop_event.wait(interval)
    return total
