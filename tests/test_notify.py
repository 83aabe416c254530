"""Notification outbox: enqueue in the caller's transaction, deliver through real loopback servers.

E-mail goes to a real SMTP server (aiosmtpd) and SMS/Zalo to a real HTTP
server on 127.0.0.1; the database is the migrated SQLite file or PostgreSQL
of the ``db_engine`` fixture. Assertions are on what the servers received.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine.notify import (
    Channel,
    DeliveryError,
    HttpGatewayChannel,
    LogChannel,
    SmtpChannel,
    backoff,
    channels_from_settings,
    claim_due,
    deliver_due,
    enqueue,
    mask_recipient,
    run_forever,
)
from engine.persistence.models import OutboxMessage

SUBJECT = "Thông báo: hồ sơ 000.00.00.H00-260302-0001 đã được tiếp nhận"
BODY = (
    "Kính gửi ông/bà Nguyễn Thị Ánh Tuyết,\n"
    "Hồ sơ đăng ký khai sinh của ông/bà đã được Ủy ban nhân dân xã tiếp nhận.\n"
    "Ngày hẹn trả kết quả: 04/03/2026. Trân trọng."
)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A real HTTP server on loopback that records POSTs and answers scripted statuses."""

    def __init__(self, port: int = 0, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with gateway.lock:
                    gateway.received.append(
                        {"path": self.path, "headers": dict(self.headers), "json": json.loads(raw.decode("utf-8"))}
                    )
                    status = gateway.script.pop(0) if gateway.script else 200
                if gateway.delay:
                    threading.Event().wait(gateway.delay)
                payload = b'{"ok": true}' if status < 300 else b'{"error": "nope"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/sms") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def keys(self) -> list[str]:
        return [r["headers"]["Idempotency-Key"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailBox:
    """aiosmtpd handler: refuses ``unknown@…`` with 550, keeps every accepted message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("unknown@"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[tuple[MailBox, int]]:
    box = MailBox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), ready_timeout=5)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture
def factory(db_engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(db_engine)


# --------------------------------------------------------------------------- helpers


class Recorder:
    """An in-memory channel (for the cases where no server is the point)."""

    def __init__(self, name: str, on_send: Any = None) -> None:
        self.name = name
        self.sent: list[int] = []
        self.on_send = on_send

    def send(self, message: OutboxMessage) -> None:
        if self.on_send:
            self.on_send(message)
        self.sent.append(message.id)


def add(factory: sessionmaker[Session], now: datetime, n: int = 1, channel: str = "sms", recipient: str = "0912345689") -> list[int]:
    with factory() as session:
        messages = [
            enqueue(session, channel=channel, recipient=recipient, subject=SUBJECT, body=BODY, event="dossier.received", now=now)
            for _ in range(n)
        ]
        session.commit()
        return [m.id for m in messages]


def row(factory: sessionmaker[Session], message_id: int) -> OutboxMessage:
    with factory() as session:
        message = session.get(OutboxMessage, message_id)
        assert message is not None
        session.expunge(message)
        return message


# --------------------------------------------------------------------------- enqueue


def test_enqueue_writes_nothing_until_the_caller_commits(factory: sessionmaker[Session], now: datetime) -> None:
    def count() -> int:
        with factory() as other:
            return other.scalar(select(func.count()).select_from(OutboxMessage)) or 0

    with factory() as session:
        enqueue(session, channel="sms", recipient="0912345689", subject=SUBJECT, body=BODY, event="e", now=now)
        assert count() == 0
        session.rollback()
    assert count() == 0

    with factory() as session:
        message = enqueue(session, channel="email", recipient="a@b.vn", subject=SUBJECT, body=BODY, event="e", now=now)
        assert count() == 0
        session.commit()
        stored = row(factory, message.id)
    assert count() == 1
    assert (stored.state, stored.attempts, stored.next_attempt_at, stored.subject) == ("pending", 0, now, SUBJECT)

    with factory() as session, pytest.raises(ValueError):
        enqueue(session, channel="fax", recipient="x", subject="s", body="b", event="e", now=now)


# --------------------------------------------------------------------------- e-mail


def test_email_is_delivered_through_a_real_smtp_server(
    factory: sessionmaker[Session], smtp: tuple[MailBox, int], now: datetime
) -> None:
    box, port = smtp
    [good] = add(factory, now, channel="email", recipient="Nguyễn Thị Ánh Tuyết <tuyet@example.vn>")
    [bad] = add(factory, now, channel="email", recipient="unknown@example.vn")
    channels = {"email": SmtpChannel("127.0.0.1", port, sender="motcua@ubnd.example.vn", timeout=5)}

    report = deliver_due(factory, channels, now)

    assert (report.sent, report.failed, report.retried) == (1, 1, 0)
    [(mail_from, rcpt, content)] = box.messages
    assert mail_from == "motcua@ubnd.example.vn" and rcpt == ["tuyet@example.vn"]
    content.decode("ascii")  # 7-bit safe on the wire
    mail = email.message_from_bytes(content, policy=email.policy.default)
    assert mail["Subject"] == SUBJECT
    assert mail["Message-ID"] == f"<outbox-{good}@motcua>"
    assert "Nguyễn Thị Ánh Tuyết" in str(mail["To"])
    assert mail.get_content().replace("\r\n", "\n").rstrip("\n") == BODY
    sent = row(factory, good)
    assert (sent.state, sent.sent_at, sent.attempts) == ("sent", now, 1)
    refused = row(factory, bad)  # 550 for the recipient: permanent, no retry
    assert refused.state == "failed" and "550" in str(refused.last_error) and refused.attempts == 1


# --------------------------------------------------------------------------- HTTP gateways


def test_gateway_gets_json_and_idempotency_key_and_503_is_retried_with_backoff(
    factory: sessionmaker[Session], gateway: Gateway, now: datetime
) -> None:
    [sms] = add(factory, now, channel="sms", recipient="0912345689")
    [zalo] = add(factory, now, channel="zalo", recipient="0987654321")
    channels = {
        "sms": HttpGatewayChannel("sms", gateway.url("/sms"), token="s3cr3t-token", timeout=5),
        "zalo": HttpGatewayChannel("zalo", gateway.url("/zalo"), timeout=5),
    }
    gateway.script = [503, 503]

    first = deliver_due(factory, channels, now)

    assert (first.sent, first.retried, first.failed) == (0, 2, 0)
    for message_id in (sms, zalo):
        waiting = row(factory, message_id)
        assert waiting.state == "pending" and waiting.attempts == 1
        assert waiting.next_attempt_at == now + timedelta(minutes=1)
        assert "503" in str(waiting.last_error)
    assert deliver_due(factory, channels, now + timedelta(seconds=59)).claimed == 0  # backoff respected

    later = deliver_due(factory, channels, now + timedelta(minutes=1))

    assert (later.sent, later.retried) == (2, 0)
    assert Counter(gateway.keys()) == {f"outbox-{sms}": 2, f"outbox-{zalo}": 2}
    first_sms = next(r for r in gateway.received if r["path"] == "/sms")
    assert first_sms["json"] == {
        "id": f"outbox-{sms}",
        "to": "0912345689",
        "subject": SUBJECT,
        "text": BODY,
        "event": "dossier.received",
    }
    assert first_sms["headers"]["Content-Type"].startswith("application/json")
    assert first_sms["headers"]["Authorization"] == "Bearer s3cr3t-token"
    assert "Authorization" not in next(r for r in gateway.received if r["path"] == "/zalo")["headers"]
    done = row(factory, sms)
    assert (done.state, done.sent_at, done.attempts) == ("sent", now + timedelta(minutes=1), 2)


def test_gateway_400_fails_at_once_and_429_is_retried(
    factory: sessionmaker[Session], gateway: Gateway, now: datetime
) -> None:
    [rejected, throttled] = add(factory, now, n=2)
    gateway.script = [400, 429]
    report = deliver_due(factory, {"sms": HttpGatewayChannel("sms", gateway.url(), timeout=5)}, now)

    assert (report.sent, report.retried, report.failed) == (0, 1, 1)
    failed = row(factory, rejected)
    assert failed.state == "failed" and failed.attempts == 1 and "400" in str(failed.last_error)
    assert row(factory, throttled).state == "pending"
    assert deliver_due(factory, {"sms": HttpGatewayChannel("sms", gateway.url())}, now + timedelta(days=1)).sent == 1
    assert gateway.keys().count(f"outbox-{rejected}") == 1  # never retried


def test_gateway_down_is_retried_and_then_delivered_exactly_once(factory: sessionmaker[Session], now: datetime) -> None:
    port = free_port()
    channels = {"zalo": HttpGatewayChannel("zalo", f"http://127.0.0.1:{port}/zalo", timeout=5)}
    [message_id] = add(factory, now, channel="zalo")

    down = deliver_due(factory, channels, now)

    assert down.retried == 1
    waiting = row(factory, message_id)
    assert waiting.state == "pending" and "unreachable" in str(waiting.last_error)
    server = Gateway(port=port)
    try:
        up = deliver_due(factory, channels, now + timedelta(minutes=1))
        again = deliver_due(factory, channels, now + timedelta(hours=1))
    finally:
        server.close()
    assert (up.sent, again.claimed) == (1, 0)
    assert server.keys() == [f"outbox-{message_id}"]
    assert row(factory, message_id).state == "sent"


def test_max_attempts_reached_means_failed(factory: sessionmaker[Session], gateway: Gateway, now: datetime) -> None:
    [message_id] = add(factory, now)
    channels = {"sms": HttpGatewayChannel("sms", gateway.url(), timeout=5)}
    gateway.script = [503] * 10
    at = now
    for expected in (now + timedelta(minutes=1), now + timedelta(minutes=1 + 2)):  # 1, then 2 minutes later
        assert deliver_due(factory, channels, at, max_attempts=3).retried == 1
        at = row(factory, message_id).next_attempt_at
        assert at == expected
    final = deliver_due(factory, channels, at, max_attempts=3)

    assert (final.failed, final.retried) == (1, 0)
    failed = row(factory, message_id)
    assert (failed.state, failed.attempts) == ("failed", 3)
    assert len(gateway.received) == 3
    assert deliver_due(factory, channels, at + timedelta(days=1)).claimed == 0


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert backoff(9) == timedelta(minutes=256) and backoff(10) == timedelta(hours=6) and backoff(500) == timedelta(hours=6)


# --------------------------------------------------------------------------- concurrency and crashes


def test_two_senders_at_once_never_send_a_message_twice(factory: sessionmaker[Session], now: datetime) -> None:
    server = Gateway(delay=0.003)
    ids = add(factory, now, n=40)
    barrier = threading.Barrier(2)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def pending() -> int:
        with factory() as session:
            query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "pending")
            return session.scalar(query) or 0

    def sender() -> None:
        try:
            channels = {"sms": HttpGatewayChannel("sms", server.url(), timeout=5)}
            barrier.wait()
            while True:
                report = deliver_due(factory, channels, now, batch=7)
                reports.append(report)
                if report.claimed == 0 and pending() == 0:
                    return
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.close()

    assert not errors
    assert Counter(server.keys()) == Counter({f"outbox-{i}": 1 for i in ids})
    assert sum(r.sent for r in reports) == 40 and sum(r.lost for r in reports) == 0
    with factory() as session:
        states = session.execute(select(OutboxMessage.state, OutboxMessage.attempts)).all()
    assert Counter(states) == {("sent", 1): 40}


def test_a_crashed_senders_message_is_taken_again_after_its_lease(
    factory: sessionmaker[Session], gateway: Gateway, now: datetime
) -> None:
    [message_id] = add(factory, now)
    channels = {"sms": HttpGatewayChannel("sms", gateway.url(), timeout=5)}
    [claimed] = claim_due(factory, now)  # ... and the sender dies before sending or recording
    assert claimed.id == message_id
    stuck = row(factory, message_id)
    assert (stuck.state, stuck.attempts, stuck.next_attempt_at) == ("sending", 1, now + timedelta(minutes=5))

    assert deliver_due(factory, channels, now + timedelta(minutes=4)).claimed == 0  # lease still held
    assert gateway.received == []
    report = deliver_due(factory, channels, now + timedelta(minutes=5, seconds=1))

    assert report.sent == 1
    assert gateway.keys() == [f"outbox-{message_id}"]
    done = row(factory, message_id)
    assert (done.state, done.attempts) == ("sent", 2)


def test_a_sender_that_lost_its_lease_does_not_overwrite_the_new_owner(
    factory: sessionmaker[Session], now: datetime
) -> None:
    [message_id] = add(factory, now)
    late = now + timedelta(minutes=10)
    takeover: list[Any] = []
    # While the first sender is (slowly) sending, its lease expires and a second sender takes over and fails.
    fails = Recorder("sms", on_send=lambda m: (_ for _ in ()).throw(DeliveryError("HTTP 503")))
    slow = Recorder("sms", on_send=lambda m: takeover.append(deliver_due(factory, {"sms": fails}, late)))

    report = deliver_due(factory, {"sms": slow}, now)

    assert (report.sent, report.lost) == (0, 1)
    assert takeover[0].retried == 1
    message = row(factory, message_id)
    assert (message.state, message.attempts, message.next_attempt_at) == ("pending", 2, late + timedelta(minutes=2))


def test_a_crashing_message_on_its_last_attempt_ends_failed(factory: sessionmaker[Session], now: datetime) -> None:
    [message_id] = add(factory, now)
    claim_due(factory, now, max_attempts=1)
    report = deliver_due(factory, {"sms": Recorder("sms")}, now + timedelta(hours=1), max_attempts=1)
    assert (report.failed, report.claimed) == (1, 0)
    failed = row(factory, message_id)
    assert failed.state == "failed" and "lease expired" in str(failed.last_error)


def test_an_exploding_channel_does_not_stop_the_others(
    factory: sessionmaker[Session], gateway: Gateway, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    [broken] = add(factory, now, channel="zalo")
    sms = add(factory, now, n=3, channel="sms")
    [logged] = add(factory, now, channel="log")

    def explode(message: OutboxMessage) -> None:
        raise RuntimeError("boom")

    channels: dict[str, Channel] = {
        "zalo": Recorder("zalo", on_send=explode),
        "sms": HttpGatewayChannel("sms", gateway.url(), timeout=5),
        "log": LogChannel(),
    }
    with caplog.at_level(logging.INFO, logger="engine.notify"):
        report = deliver_due(factory, channels, now)

    assert (report.sent, report.retried, report.failed) == (4, 1, 0)
    assert sorted(gateway.keys()) == sorted(f"outbox-{i}" for i in sms)
    assert all(row(factory, i).state == "sent" for i in [*sms, logged])
    waiting = row(factory, broken)
    assert (waiting.state, waiting.attempts, waiting.last_error) == ("pending", 1, "RuntimeError: boom")
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_only_messages_of_the_given_channels_are_taken(factory: sessionmaker[Session], now: datetime) -> None:
    [email_id] = add(factory, now, channel="email", recipient="a@b.vn")
    [sms_id] = add(factory, now, channel="sms")
    recorder = Recorder("sms")
    assert deliver_due(factory, {"sms": recorder}, now).sent == 1
    assert recorder.sent == [sms_id]
    assert row(factory, email_id).state == "pending"


def test_a_pass_running_past_half_its_lease_hands_the_rest_back(factory: sessionmaker[Session], now: datetime) -> None:
    ids = add(factory, now, n=3)
    clock = [0.0]
    slow = Recorder("sms", on_send=lambda m: clock.__setitem__(0, clock[0] + 200))

    report = deliver_due(factory, {"sms": slow}, now, timer=lambda: clock[0])

    assert (report.claimed, report.sent, report.released) == (3, 1, 2)
    for message_id in ids[1:]:
        back = row(factory, message_id)
        assert (back.state, back.attempts, back.next_attempt_at) == ("pending", 0, now)


# --------------------------------------------------------------------------- background loop


class FakeStop:
    """A stop event that records waits and sets itself after ``after`` waits."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.waits: list[float | None] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def test_run_forever_uses_the_given_clock_drains_backlogs_and_survives_errors(
    factory: sessionmaker[Session], now: datetime
) -> None:
    add(factory, now, n=3, channel="log")
    recorder = Recorder("log")
    calls = [0]

    def flaky_factory() -> Session:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("database down")
        return factory()

    times = iter([now, now + timedelta(seconds=30), now + timedelta(seconds=30), now + timedelta(minutes=1)])
    stop = FakeStop(after=2)

    total = run_forever(flaky_factory, {"log": recorder}, 15, stop, clock=lambda: next(times), batch=2)

    # pass 1 fails → wait; pass 2 takes a full batch → no wait; pass 3 takes the rest → wait → stopped
    assert stop.waits == [15, 15]
    assert (total.claimed, total.sent) == (3, 3)
    assert len(recorder.sent) == 3


# --------------------------------------------------------------------------- channels and settings


def test_log_channel_logs_no_personal_data(caplog: pytest.LogCaptureFixture, now: datetime) -> None:
    message = OutboxMessage(
        id=42, channel="sms", recipient="0912345689", subject=SUBJECT, body=BODY, event="dossier.received", created_at=now
    )
    with caplog.at_level(logging.INFO, logger="engine.notify"):
        LogChannel().send(message)
    text = caplog.text
    assert "outbox-42" in text and "dossier.received" in text and "09******89" in text and "sms" in text
    assert "0912345689" not in text and "Nguyễn" not in text and "hồ sơ" not in text
    assert mask_recipient("tuyet.nguyen@example.vn") == "tu**********@example.vn"
    assert mask_recipient("123") == "***"


def test_channels_from_settings_falls_back_to_log() -> None:
    channels = channels_from_settings(
        {
            "smtp_host": "mail.example.vn",
            "smtp_port": "587",
            "smtp_sender": "motcua@example.vn",
            "smtp_starttls": "true",
            "sms_gateway_url": "https://sms.example.vn/send",
            "gateway_token": "t0k",
            "zalo_gateway_url": "",
        }
    )
    assert set(channels) == {"email", "sms", "zalo", "log"}
    email_channel = channels["email"]
    assert isinstance(email_channel, SmtpChannel) and email_channel.port == 587 and email_channel.starttls
    assert isinstance(channels["sms"], HttpGatewayChannel) and channels["sms"].token == "t0k"
    assert isinstance(channels["zalo"], LogChannel) and channels["zalo"].name == "zalo"
    assert all(isinstance(c, LogChannel) for c in channels_from_settings({}).values())
    with pytest.raises(ValueError):
        channels_from_settings({"smtp_host": "mail.example.vn"})  # no sender
    with pytest.raises(ValueError):
        HttpGatewayChannel("sms", "https://sms.example.vn", token="bí-mật")  # not a valid header value
