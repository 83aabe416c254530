"""Fixtures: a database on every backend (SQLite file and a real PostgreSQL), a fixed clock.

PostgreSQL comes from ``MOTCUA_TEST_POSTGRES_URL`` (``.ci/start-postgres``
starts one). Without it the PostgreSQL cases are skipped locally and fail in CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from engine.core.calendar import VN_TZ
from engine.persistence.db import make_engine, migrate

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PG_URL = os.environ.get("MOTCUA_TEST_POSTGRES_URL")


DEMO_PROVINCE = Path(__file__).resolve().parents[1] / "processes" / "demo" / "dong-nai.yaml"


def load_demo_province(session: Session, now: datetime) -> None:
    """Load the demo province's agencies and accounts, without their passwords
    (nobody signs in in these tests, and hashing 33 passwords costs seconds)."""
    from engine import organisation

    data = organisation.parse_organisation(DEMO_PROVINCE.read_text(encoding="utf-8"), DEMO_PROVINCE.name)
    data["officers"] = [{k: v for k, v in officer.items() if k != "password"} for officer in data["officers"]]
    organisation.load_organisation(session, data, "admin", now)


def fixture_bytes(*names: str) -> dict[str, bytes]:
    """BPMN fixture files by name → content."""
    return {name: (FIXTURES / name).read_bytes() for name in names}


@pytest.fixture
def now() -> datetime:
    """Monday 2 March 2026, 08:00 in Hà Nội: a plain working morning."""
    return datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)


def _sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'test.sqlite3'}")
    migrate(engine)
    return engine


def _postgres_engine() -> Iterator[Engine]:
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("MOTCUA_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("no PostgreSQL server (set MOTCUA_TEST_POSTGRES_URL, see .ci/start-postgres)")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"motcua_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        engine = _sqlite_engine(tmp_path)
        yield engine
        engine.dispose()
    else:
        yield from _postgres_engine()


@pytest.fixture
def session(db_engine: Engine) -> Iterator[Session]:
    """A session on a fresh database (use cases commit for real)."""
    with Session(db_engine, expire_on_commit=False) as s:
        yield s
