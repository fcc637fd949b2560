"""Alembic's entry point: runs the migrations on the async engine of ``sqlalchemy.url`` (set by
``storage.migrate``) or of ``DATABASE_URL``."""

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

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
    asyncio.run(_run_online())
