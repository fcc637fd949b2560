"""Alembic's entry point: runs the migrations on the async engine of ``sqlalchemy.url`` (set by
``storage.migrate``) or of ``DATABASE_URL``."""

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from storage.database import Database
from storage.models import Base
from storage.settings import DatabaseSettings

config = context.config
target_metadata = Base.metadata
#: The PostgreSQL advisory lock migrations take: processes that migrate at once (web units
#: starting together, each with its ExecStartPre) wait for each other, and the later ones find
#: the schema migrated. Any constant does; this one is "agentsvc" in ASCII.
MIGRATION_LOCK = 0x6167656E74737663


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or DatabaseSettings().database_url_async


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Released when the transaction ends; taken before Alembic reads the schema's
            # version, so a process that waited reads the version the other one wrote.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


@contextlib.contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    """On a SQLite file, an exclusive lock on a file beside it for the whole migration: SQLite
    has no advisory lock, and its Python driver runs DDL outside a transaction, so processes
    migrating one file at once all found it unmigrated and the later ones failed on "already
    exists". Every process that migrates a SQLite file runs on the host that holds it."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migration-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


async def _run_online() -> None:
    database = Database(_url())
    try:
        async with database.engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await database.aclose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with _sqlite_migration_lock(_url()):
        asyncio.run(_run_online())
