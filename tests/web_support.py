"""Shared set-up of the page tests: the app on a database holding the demo province,
signed-in test clients, CSRF tokens, and a broken diagram for the designer's pages."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from engine import auth, services
from engine.core.calendar import VN_TZ

from .conftest import load_demo_province

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "motcua-demo"
KHAI_SINH = "1.001193"
PHUOC_AN = "000.17.22.H19"
LONG_THO = "000.17.23.H19"
#: Demo accounts the tests sign in with.
ACCOUNTS = ("motcua.phuocan", "chuyenvien.phuocan", "lanhdao.phuocan", "motcua.longtho", "chuyenvien.longtho", "thietke.tinh", "giamsat.tinh")
PROCEDURES = ("dang-ky-khai-sinh.bpmn", "chung-thuc-ban-sao.bpmn")


def wall_clock() -> datetime:
    """The pages read the real clock; data made for them uses it too."""
    return datetime.now(VN_TZ)


def seed(engine: Engine, accounts: tuple[str, ...] = ACCOUNTS, procedures: tuple[str, ...] = PROCEDURES) -> None:
    """The demo province, passwords for ``accounts`` and the ``procedures`` deployed."""
    now = wall_clock()
    with Session(engine, expire_on_commit=False) as session:
        load_demo_province(session, now)
        for username in accounts:
            auth.set_password(session, username, PASSWORD)
        for name in procedures:
            services.deploy(session, {name: (ROOT / "processes" / name).read_bytes()}, actor="thietke.tinh", now=now)


def make_app(engine: Engine, **overrides: Any) -> Flask:
    app = create_app(database_url=engine.url.render_as_string(hide_password=False), secret_key="kiem-thu-trang", **overrides)
    app.config["TESTING"] = True
    return app


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    token = csrf_of(client.get("/dang-nhap").get_data(as_text=True))
    return client.post("/dang-nhap", data={"username": username, "password": password, "csrf_token": token})


def post(client: FlaskClient, path: str, data: dict[str, Any], page: str | None = None, **kwargs: Any) -> Any:
    """POST ``data`` with the CSRF token taken from ``page`` (default: the home page)."""
    token = csrf_of(client.get(page or "/tra-cuu").get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token}, **kwargs)


def receive(session: Session, name: str = "Nguyễn Văn Minh", phone: str = "0912345678", agency: str = PHUOC_AN,
            actor: str = "motcua.phuocan", now: datetime | None = None) -> str:
    """Receive a birth registration through the use case; its code."""
    record = services.start_dossier(session, KHAI_SINH, {"documents": [{"name": "Tờ khai đăng ký khai sinh", "copies": 1}]},
                                    actor=actor, now=now or wall_clock(), agency_code=agency, applicant={"name": name, "phone": phone})
    return record.code


def broken_birth_registration() -> bytes:
    """The birth registration diagram with its deadline, one lane's role and one step's allotment removed."""
    text = (ROOT / "processes" / "dang-ky-khai-sinh.bpmn").read_text(encoding="utf-8")
    text = text.replace('<camunda:property name="deadline" value="same day" />', "", 1)
    text = text.replace('<camunda:property name="code" value="1.001193" />', '<camunda:property name="code" value="9.000001" />', 1)
    lane = text.index('<bpmn:lane id="lane_ks_tu_phap"')
    role = text.index('<camunda:property name="role" value="officer" />', lane)
    text = text[:role] + text[role + len('<camunda:property name="role" value="officer" />'):]
    step = text.index('<bpmn:userTask id="kiem_tra_ghi_so"')
    allot = re.compile(r'<camunda:property name="allotment" value="[^"]*" />')
    match = allot.search(text, step)
    assert match is not None
    text = text[: match.start()] + text[match.end():]
    return text.encode("utf-8")


def module_engine(kind: str, folder: Path) -> Iterator[Engine]:
    """A migrated database on ``kind`` ("sqlite" or "postgresql") that lives as long as the caller wants
    (the page tests share one seeded database per module and backend)."""
    from .conftest import _postgres_engine, _sqlite_engine

    if kind == "sqlite":
        engine = _sqlite_engine(folder)
        yield engine
        engine.dispose()
    else:
        yield from _postgres_engine()
