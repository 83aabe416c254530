"""Delivery channels: one small interface, one class per way of reaching people.

A channel delivers one :class:`~engine.persistence.models.OutboxMessage` or
raises :class:`DeliveryError`. ``permanent=True`` means retrying cannot help
(an invalid address, an HTTP 4xx other than 408/429, an SMTP 5xx for the
recipient); anything else — including unexpected exceptions — is retried by
:func:`engine.notify.deliver_due` with exponential backoff.

Every channel passes a stable identity derived from the outbox id
(``Message-ID: <outbox-ID@motcua>`` for e-mail, ``Idempotency-Key: outbox-ID``
for HTTP gateways) so the receiving side can drop the duplicate that
at-least-once delivery may produce.
"""

from __future__ import annotations

import dataclasses
import email.policy
import email.utils
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable

from engine.persistence.models import OutboxMessage

__all__ = [
    "CHANNEL_NAMES",
    "SETTINGS_KEYS",
    "Channel",
    "DeliveryError",
    "HttpGatewayChannel",
    "LogChannel",
    "ORDERED_CHANNELS",
    "PortalChannel",
    "SmtpChannel",
    "channels_from_settings",
    "mask_recipient",
    "message_key",
]

logger = logging.getLogger("engine.notify")

#: The channel names an outbox message may carry.
CHANNEL_NAMES: frozenset[str] = frozenset({"email", "sms", "zalo", "log", "portal"})

#: Channels delivered in order per dossier: a message waits while an earlier one
#: of the same dossier is unsent (see :func:`engine.notify.deliver_due`).
ORDERED_CHANNELS: frozenset[str] = frozenset({"portal"})

#: Channels that fall back to a :class:`LogChannel` when not configured. The
#: portal never does: its messages wait in the outbox until a push URL is set.
_LOGGED_WHEN_UNSET = ("email", "sms", "zalo", "log")

#: Settings read by :func:`channels_from_settings` (declare them as ``MOTCUA_<KEY>``).
SETTINGS_KEYS: tuple[str, ...] = (
    "smtp_host",
    "smtp_port",
    "smtp_sender",
    "smtp_username",
    "smtp_password",
    "smtp_starttls",
    "smtp_ssl",
    "smtp_timeout",
    "sms_gateway_url",
    "sms_gateway_token",
    "zalo_gateway_url",
    "zalo_gateway_token",
    "gateway_token",
    "gateway_timeout",
    "message_id_domain",
    "portal_push_url",
    "portal_push_token",
)

_MAX_ERROR_BODY = 300


class DeliveryError(Exception):
    """A message could not be delivered; ``permanent`` errors are not retried."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@runtime_checkable
class Channel(Protocol):
    """Something that delivers an outbox message (or raises :class:`DeliveryError`)."""

    name: str

    def send(self, message: OutboxMessage) -> None:
        """Deliver ``message``; raise :class:`DeliveryError` on failure."""
        ...


def message_key(message: OutboxMessage) -> str:
    """The stable idempotency key of a message: ``outbox-<id>``."""
    if message.id is None:
        raise ValueError("the outbox message has no id yet (flush or commit it first)")
    return f"outbox-{message.id}"


def mask_recipient(recipient: str) -> str:
    """A recipient safe to log: ``0912345689`` → ``09******89``, ``an@x.vn`` → ``a*@x.vn``."""
    value = (recipient or "").strip()
    local, at, domain = value.partition("@")
    if at:
        keep = 2 if len(local) > 4 else 1 if len(local) > 1 else 0
        return local[:keep] + "*" * (len(local) - keep) + "@" + domain
    if len(value) <= 4:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


class LogChannel:
    """Writes a line per message to the ``engine.notify`` logger (the default channel).

    Only the message id, event, channel and a masked recipient are logged —
    never the subject or body, which may carry personal data.
    """

    def __init__(self, name: str = "log", level: int = logging.INFO) -> None:
        self.name = name
        self.level = level

    def send(self, message: OutboxMessage) -> None:
        logger.log(
            self.level,
            "notification outbox-%s event=%s channel=%s to=%s",
            message.id,
            message.event,
            message.channel,
            mask_recipient(message.recipient),
        )

    def __repr__(self) -> str:
        return f"LogChannel(name={self.name!r})"


class SmtpChannel:
    """E-mail through an SMTP server (standard library :mod:`smtplib`).

    Subject and body are UTF-8 (RFC 2047 subject, base64/quoted-printable body,
    so 7-bit servers work too). ``Message-ID`` is ``<outbox-ID@domain>`` and
    ``Date`` is the message's ``created_at``: a re-sent message is byte-for-byte
    the same mail, which receiving servers and clients de-duplicate.
    One connection per message; ``starttls`` upgrades a plain connection,
    ``use_ssl`` connects with implicit TLS (port 465).
    """

    _POLICY = email.policy.SMTP.clone(cte_type="7bit")

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "",
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10,
        *,
        use_ssl: bool = False,
        name: str = "email",
        message_id_domain: str = "motcua",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not host:
            raise ValueError("SmtpChannel needs a host")
        if not sender:
            raise ValueError("SmtpChannel needs a sender address")
        if starttls and use_ssl:
            raise ValueError("choose either starttls or use_ssl, not both")
        self.name = name
        self.host = host
        self.port = int(port)
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.timeout = timeout
        self.message_id_domain = message_id_domain
        self.ssl_context = ssl_context

    def build(self, message: OutboxMessage) -> EmailMessage:
        """The e-mail for ``message`` (raises a permanent error for a bad address)."""
        recipient = (message.recipient or "").strip()
        _, address = email.utils.parseaddr(recipient)
        if not address or "@" not in address or any(c in recipient for c in "\r\n"):
            raise DeliveryError(f"invalid e-mail address {mask_recipient(recipient)!r}", permanent=True)
        mail = EmailMessage(policy=self._POLICY)
        try:
            mail["From"] = self.sender
            mail["To"] = recipient
            mail["Subject"] = message.subject or ""
            mail["Message-ID"] = f"<{message_key(message)}@{self.message_id_domain}>"
            if message.created_at is not None:
                mail["Date"] = email.utils.format_datetime(message.created_at)
            mail.set_content(message.body or "", charset="utf-8")
        except (ValueError, TypeError) as exc:  # header injection, malformed address …
            raise DeliveryError(f"cannot build the e-mail: {exc}", permanent=True) from exc
        return mail

    def send(self, message: OutboxMessage) -> None:
        mail = self.build(message)
        try:
            with self._connect() as smtp:
                if self.starttls:
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = bool(codes) and all(500 <= code < 600 for code in codes)
            raise DeliveryError(f"recipient refused: {codes}", permanent=permanent) from exc
        except smtplib.SMTPAuthenticationError as exc:  # configuration, not this message
            raise DeliveryError(f"SMTP authentication failed ({exc.smtp_code})") from exc
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {text[:_MAX_ERROR_BODY]}", permanent=500 <= exc.smtp_code < 600
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:  # connection refused, timeout, TLS …
            raise DeliveryError(f"SMTP unavailable: {type(exc).__name__}: {exc}") from exc
        if refused:
            codes = [code for code, _ in refused.values()]
            raise DeliveryError(f"recipient refused: {codes}", permanent=all(500 <= c < 600 for c in codes))

    def _connect(self) -> smtplib.SMTP:
        if self.use_ssl:
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self.ssl_context or ssl.create_default_context()
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"SmtpChannel(name={self.name!r}, host={self.host!r}, port={self.port})"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: a POST must reach the configured URL or fail."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpGatewayChannel:
    """SMS or Zalo through an HTTP gateway (standard library :mod:`urllib`).

    POSTs ``{"id", "to", "subject", "text", "event"}`` as JSON with
    ``Idempotency-Key: outbox-<id>`` and, if a token is set,
    ``Authorization: Bearer <token>``. 2xx = sent; 408, 429, 5xx, redirects and
    connection errors = retry; any other 4xx = permanent failure.
    Proxies come from the usual ``HTTPS_PROXY``/``NO_PROXY`` variables.
    """

    RETRYABLE_4XX = frozenset({408, 429})

    def __init__(self, name: str, url: str, token: str | None = None, timeout: float = 10) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError(f"gateway URL for {name!r} must be http(s)://…, got {url!r}")
        self.name = name
        self.url = url
        if token and (not token.isascii() or any(c in token for c in "\r\n")):
            raise ValueError(f"gateway token for {name!r} must be printable ASCII")
        self.token = token or None
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    def payload(self, message: OutboxMessage) -> dict[str, Any]:
        """The JSON document posted for ``message``."""
        return {
            "id": message_key(message),
            "to": message.recipient,
            "subject": message.subject,
            "text": message.body,
            "event": message.event,
        }

    def send(self, message: OutboxMessage) -> None:
        if not (message.recipient or "").strip():
            raise DeliveryError("empty recipient", permanent=True)
        data = json.dumps(self.payload(message), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "Idempotency-Key": message_key(message),
            "User-Agent": "motcua-notify/1",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
                response.read(_MAX_ERROR_BODY)
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                detail = exc.read(_MAX_ERROR_BODY).decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 - the body is only a hint
                detail = ""
            finally:
                exc.close()
            permanent = 400 <= status < 500 and status not in self.RETRYABLE_4XX
            raise DeliveryError(f"gateway {self.name} answered HTTP {status}: {detail}".rstrip(": "), permanent) from exc
        except (TimeoutError, urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"gateway {self.name} unreachable: {type(exc).__name__}: {reason}") from exc
        except Exception as exc:  # http.client.RemoteDisconnected, IncompleteRead …
            raise DeliveryError(f"gateway {self.name} failed: {type(exc).__name__}: {exc}") from exc
        if not 200 <= status < 300:
            raise DeliveryError(f"gateway {self.name} answered HTTP {status}")

    def __repr__(self) -> str:
        return f"HttpGatewayChannel(name={self.name!r}, url={self.url!r})"


class PortalChannel(HttpGatewayChannel):
    """Status changes to the national public service portal (Cổng DVC quốc gia).

    The message body is already the portal's JSON document (built by
    :mod:`engine.portal`); it is POSTed as it is, with
    ``Idempotency-Key: outbox-<id>``. Statuses are read as for any gateway.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 10, name: str = "portal") -> None:
        super().__init__(name, url, token=token, timeout=timeout)

    def payload(self, message: OutboxMessage) -> dict[str, Any]:
        try:
            document = json.loads(message.body or "")
        except ValueError as exc:
            raise DeliveryError(f"portal message is not JSON: {exc}", permanent=True) from exc
        if not isinstance(document, dict):
            raise DeliveryError("portal message is not a JSON object", permanent=True)
        return document

    def __repr__(self) -> str:
        return f"PortalChannel(url={self.url!r})"


def _as_mapping(settings: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    if isinstance(settings, Mapping):
        return settings
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return dataclasses.asdict(settings)
    return dict(vars(settings))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def channels_from_settings(settings: Mapping[str, Any] | Any) -> dict[str, Channel]:
    """Channels for ``email``, ``sms``, ``zalo``, ``log`` (and ``portal``) from plain settings.

    ``settings`` is a mapping (or a settings dataclass) with the lower-case
    keys of :data:`SETTINGS_KEYS`; empty values count as missing (and a port
    or timeout of 0 means "the default": 25, or 587 with STARTTLS, 465 with
    implicit TLS; 10 seconds). A channel
    without its settings (no ``smtp_host``, no ``sms_gateway_url`` …) falls
    back to a :class:`LogChannel` of that name. A half-configured channel
    (e.g. a host but no sender) raises ``ValueError``. ``portal`` is present
    only with a ``portal_push_url``: unconfigured, portal messages stay queued.
    """
    cfg = {k: v for k, v in _as_mapping(settings).items() if v not in (None, "")}
    channels: dict[str, Channel] = {name: LogChannel(name) for name in sorted(_LOGGED_WHEN_UNSET)}
    if "smtp_host" in cfg:
        use_ssl = _flag(cfg.get("smtp_ssl", False))
        starttls = _flag(cfg.get("smtp_starttls", False))
        channels["email"] = SmtpChannel(
            host=str(cfg["smtp_host"]),
            port=int(cfg.get("smtp_port") or (465 if use_ssl else 587 if starttls else 25)),
            sender=str(cfg.get("smtp_sender", "")),
            username=cfg.get("smtp_username"),
            password=cfg.get("smtp_password"),
            starttls=starttls,
            timeout=float(cfg.get("smtp_timeout") or 10),
            use_ssl=use_ssl,
            message_id_domain=str(cfg.get("message_id_domain", "motcua")),
        )
    for name in ("sms", "zalo"):
        url = cfg.get(f"{name}_gateway_url")
        if url:
            channels[name] = HttpGatewayChannel(
                name,
                str(url),
                token=cfg.get(f"{name}_gateway_token", cfg.get("gateway_token")),
                timeout=float(cfg.get("gateway_timeout") or 10),
            )
    if cfg.get("portal_push_url"):
        channels["portal"] = PortalChannel(
            str(cfg["portal_push_url"]),
            token=cfg.get("portal_push_token"),
            timeout=float(cfg.get("gateway_timeout") or 10),
        )
    return channels
