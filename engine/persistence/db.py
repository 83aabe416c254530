"""Engines, sessions and schema migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy
timeout, so a web worker and a sweeper can share the file. PostgreSQL is used
when the URL names it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_session_factory", "migrate", "unit_of_work", "MIGRATIONS_PATH"]

T = TypeVar("T")

MIGRATIONS_PATH = Path(__file__).parent / "migrations"


def make_engine(url: str, echo: bool = False) -> Engine:
    """An engine for ``url``, tuned for the backend it names."""
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=10, max_overflow=20)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine.pool, "checkin", _note_checkin)
        event.listen(engine.pool, "checkout", _ping_if_idle)
    return engine


#: A pooled connection unused for longer than this is tested before use, in seconds.
PING_AFTER_IDLE = 5.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Test a connection that sat idle in the pool (the server may have closed it).

    Unlike ``pool_pre_ping`` this costs no round trip for a connection
    returned moments ago, as on a busy server; a dead one is replaced by the
    pool (``DisconnectionError``).
    """
    idle_since = record.info.get("checked_in_at")
    if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE and not getattr(dbapi_connection, "closed", False):
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()
    except Exception as err:
        raise DisconnectionError("the pooled connection is closed") from err


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine_or_url: Engine | str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    if isinstance(engine_or_url, str):
        config.set_main_option("sqlalchemy.url", engine_or_url.replace("%", "%%"))
    else:
        config.attributes["engine"] = engine_or_url
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic ``upgrade``)."""
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def unit_of_work(function: Callable[..., T]) -> Callable[..., T]:
    """Roll the session (first argument) back when a use case fails, so it stays usable."""

    @functools.wraps(function)
    def wrapper(session: Session, *args: Any, **kwargs: Any) -> T:
        try:
            return function(session, *args, **kwargs)
        except BaseException:
            session.rollback()
            raise

    return wrapper
