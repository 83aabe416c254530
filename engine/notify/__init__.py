"""Notification delivery through a transactional outbox (e-mail, SMS, Zalo, log).

Use cases call :func:`enqueue` (:func:`enqueue_many` for many at once) inside
their own transaction; a background sender (:func:`run_forever`, or
:func:`deliver_due` from a scheduler job) claims due messages, delivers them
through :class:`Channel` objects built by :func:`channels_from_settings`, and
records the outcome with retries and exponential backoff. Delivery is
at-least-once; the outbox id travels as ``Message-ID`` / ``Idempotency-Key``
so receivers can drop duplicates.
"""

from __future__ import annotations

from .channels import (
    CHANNEL_NAMES,
    SETTINGS_KEYS,
    Channel,
    DeliveryError,
    HttpGatewayChannel,
    LogChannel,
    ORDERED_CHANNELS,
    PortalChannel,
    SmtpChannel,
    channels_from_settings,
    mask_recipient,
    message_key,
)
from .outbox import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    LEASE,
    ORDERED_MAX_ATTEMPTS,
    DeliveryReport,
    SessionFactory,
    StopEvent,
    backoff,
    claim_due,
    deliver_due,
    enqueue,
    enqueue_many,
    run_forever,
)

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CHANNEL_NAMES",
    "LEASE",
    "SETTINGS_KEYS",
    "Channel",
    "DeliveryError",
    "DeliveryReport",
    "HttpGatewayChannel",
    "LogChannel",
    "ORDERED_CHANNELS",
    "ORDERED_MAX_ATTEMPTS",
    "PortalChannel",
    "SessionFactory",
    "SmtpChannel",
    "StopEvent",
    "backoff",
    "channels_from_settings",
    "claim_due",
    "deliver_due",
    "enqueue",
    "enqueue_many",
    "mask_recipient",
    "message_key",
    "run_forever",
]
