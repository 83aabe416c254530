"""Backups restore into a database that runs on (SQLite online backup; pg_dump/pg_restore)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from engine import backup, lifecycle, services
from engine.cli import main
from engine.core.calendar import VN_TZ
from engine.persistence.db import make_engine, migrate
from engine.persistence.models import Dossier, Task, TaskState

from .conftest import PG_URL, _postgres_engine, load_demo_province

ROOT = Path(__file__).resolve().parents[1]
CODE = "2.000815"
PHUOC_AN = "000.17.22.H19"
AT = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)


def _fill(engine: Engine) -> list[str]:
    with Session(engine, expire_on_commit=False) as session:
        load_demo_province(session, AT)
        content = (ROOT / "processes" / "chung-thuc-ban-sao.bpmn").read_bytes()
        services.deploy(session, {"chung-thuc-ban-sao.bpmn": content}, "designer", AT)
        codes = []
        for i in range(3):
            record = services.start_dossier(session, CODE, {}, "motcua.phuocan", AT + timedelta(minutes=i), agency_code=PHUOC_AN,
                                            applicant={"name": "Vũ Văn Mạnh", "phone": "0911222333"})
            codes.append(record.code)
        return codes


def _empty_like(engine: Engine, tmp_path: Path) -> str:
    """The URL of a new, empty database on the same backend."""
    if engine.dialect.name == "sqlite":
        return f"sqlite:///{tmp_path / 'restored.sqlite3'}"
    name = f"motcua_r_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _drop(url: str) -> None:
    if url.startswith("postgresql"):
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        admin.dispose()


def test_backup_restores_the_state_at_backup_time_and_runs_on(db_engine: Engine, tmp_path: Path) -> None:
    codes = _fill(db_engine)
    url = db_engine.url.render_as_string(hide_password=False)
    target = backup.backup(url, tmp_path / "motcua.backup")
    assert target.stat().st_size > 0
    with Session(db_engine) as session:
        at_backup = backup.summary(session)
        # Work done after the backup is not in it.
        lifecycle.withdraw(session, codes[0], "Công dân rút hồ sơ", "motcua.phuocan", AT + timedelta(hours=1))
    restored_url = _empty_like(db_engine, tmp_path)
    try:
        found = backup.restore(target, restored_url)
        assert found == at_backup
        assert found.dossiers == 3 and found.open_tasks == 3
        restored = make_engine(restored_url)
        try:
            with Session(restored, expire_on_commit=False) as session:
                status = session.scalar(select(Dossier.status).where(Dossier.code == codes[0]))
                assert status != services.DossierStatus.WITHDRAWN
                # The restored database runs on: a step completes and a new dossier gets the next code.
                task = services.open_tasks(session, codes[1])[0]
                services.complete_task(session, task.id, {"so_ban_sao": 1, "so_trang": 1}, "motcua.phuocan", AT + timedelta(hours=2))
                assert [t.step_id for t in services.open_tasks(session, codes[1])] == ["kiem_tra"]
                fresh = services.start_dossier(session, CODE, {}, "motcua.phuocan", AT + timedelta(hours=3), agency_code=PHUOC_AN)
                assert fresh.code.endswith("-0004")
        finally:
            restored.dispose()
    finally:
        _drop(restored_url)


def test_sqlite_online_backup_is_consistent_while_the_application_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    engine = make_engine(url)
    migrate(engine)
    _fill(engine)
    stop = threading.Event()
    written: list[str] = []

    def receive_continuously() -> None:
        with Session(engine, expire_on_commit=False) as session:
            minute = 10
            while not stop.is_set() and minute < 400:
                written.append(services.start_dossier(session, CODE, {}, "motcua.phuocan", AT + timedelta(minutes=minute),
                                                      agency_code=PHUOC_AN).code)
                minute += 1

    writer = threading.Thread(target=receive_continuously)
    writer.start()
    try:
        while len(written) < 5:
            stop.wait(0.01)
        target = backup.backup(url, tmp_path / "snapshot.sqlite3")
    finally:
        stop.set()
        writer.join()
    snapshot = create_engine(f"sqlite:///{target}")
    with Session(snapshot) as session:
        dossiers = session.scalar(select(func.count()).select_from(Dossier))
        tasks = session.scalar(select(func.count()).select_from(Task).where(Task.state.in_(TaskState.OPEN)))
    snapshot.dispose()
    engine.dispose()
    assert 3 + 5 <= dossiers <= 3 + len(written)
    assert tasks == dossiers  # every dossier in the snapshot came with its step: no half receipt


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    engine = make_engine(url)
    migrate(engine)
    _fill(engine)
    engine.dispose()
    runner = CliRunner()
    made = runner.invoke(main, ["--database-url", url, "backup", str(tmp_path / "b.sqlite3")])
    assert made.exit_code == 0, made.output
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    refused = runner.invoke(main, ["--database-url", other, "restore", str(tmp_path / "b.sqlite3")], input="n\n")
    assert refused.exit_code != 0
    done = runner.invoke(main, ["--database-url", other, "restore", "--yes", str(tmp_path / "b.sqlite3")])
    assert done.exit_code == 0, done.output
    assert "3 dossiers, 3 open steps" in done.output
    missing = runner.invoke(main, ["--database-url", other, "restore", "--yes", str(tmp_path / "nope.sqlite3")])
    assert missing.exit_code != 0


@pytest.fixture
def pg() -> Iterator[Engine]:
    yield from _postgres_engine()


def test_a_broken_backup_file_is_a_clear_error(pg: Engine, tmp_path: Path) -> None:
    junk = tmp_path / "junk.backup"
    junk.write_bytes(b"not a dump")
    url = _empty_like(pg, tmp_path)
    try:
        with pytest.raises(backup.BackupError, match="pg_restore failed"):
            backup.restore(junk, url)
    finally:
        _drop(url)
