"""Backup and restore of the engine's database.

SQLite is copied with its online backup API (a consistent snapshot while the
application keeps writing); PostgreSQL with ``pg_dump --format=custom`` and
``pg_restore``, the tools of the server's own version. After a restore the
schema is brought up to date (Alembic), so an older backup runs on a newer
release.
"""

from __future__ import annotations

import glob
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from .errors import EngineError
from .persistence.db import make_engine, migrate
from .persistence.models import Dossier, Task, TaskState

__all__ = ["BackupError", "Summary", "backup", "restore", "summary"]


class BackupError(EngineError):
    """A backup or restore that could not be done."""

    status = 500


@dataclass(frozen=True)
class Summary:
    """What a database holds, to compare a restored copy with its source."""

    dossiers: int
    open_tasks: int
    last_dossier: str | None


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("An in-memory SQLite database cannot be backed up.")
    return Path(database)


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string (no driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    """The newest installed ``pg_dump``/``pg_restore`` (Debian keeps one per server version)."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    found = candidates[-1] if candidates else shutil.which(name)
    if not found:
        raise BackupError(f"{name} is not installed (Debian package postgresql-client).")
    return found


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: {done.stderr.strip()[-2000:]}")


def backup(url: str, target: Path) -> Path:
    """Write a backup of the database at ``url`` to ``target``; return it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if make_url(url).get_backend_name() == "sqlite":
        source = sqlite3.connect(_sqlite_path(url))
        copy = sqlite3.connect(target)
        try:
            with copy:
                source.backup(copy)
        finally:
            copy.close()
            source.close()
    else:
        _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={target}", f"--dbname={_libpq(url)}"])
    return target


def restore(source: Path, url: str) -> Summary:
    """Restore ``source`` into the (empty or replaceable) database at ``url``; return what it holds."""
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"No backup file {source}.")
    if make_url(url).get_backend_name() == "sqlite":
        backup_db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        target = sqlite3.connect(_sqlite_path(url))
        try:
            with target:
                backup_db.backup(target)
        finally:
            target.close()
            backup_db.close()
    else:
        _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--exit-on-error",
              f"--dbname={_libpq(url)}", str(source)])
    engine = make_engine(url)
    try:
        migrate(engine)
        with Session(engine) as session:
            return summary(session)
    finally:
        engine.dispose()


def summary(session: Session) -> Summary:
    """Counts that a restored copy must share with its source."""
    return Summary(
        dossiers=session.scalar(select(func.count()).select_from(Dossier)) or 0,
        open_tasks=session.scalar(select(func.count()).select_from(Task).where(Task.state.in_(TaskState.OPEN))) or 0,
        last_dossier=session.scalar(select(Dossier.code).order_by(Dossier.id.desc()).limit(1)),
    )
