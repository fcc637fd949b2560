"""The SQL databases of a test run: a migrated SQLite file always, a PostgreSQL database when
``TEST_DATABASE_URL`` names a server, or the local one answers.

On PostgreSQL the run creates a database of its own (``agent_service_test_<random>``), migrates it,
and drops it at the end: it never writes into the database the URL names.
"""

import asyncio
import shutil
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage.database import Database
from storage.migrate import upgrade
from storage.models import Base
from teststack.postgres import admin_dsn, create_database, drop_database


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def migrated_sqlite(path: Path) -> str:
    upgrade(sqlite_url(path))
    return sqlite_url(path)


def copy_sqlite(template: Path, path: Path) -> str:
    shutil.copyfile(template, path)
    return sqlite_url(path)


def postgres_server(url: str) -> tuple[str | None, str]:
    """(``url``, "") when a PostgreSQL server answers there, else (None, why not)."""

    async def probe() -> None:
        connection = await asyncpg.connect(admin_dsn(url), timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        return None, f"no PostgreSQL answers at {shown} ({type(exc).__name__}: {exc})"
    return url, ""


def create_postgres_database(server_url: str, *, migrated: bool = True) -> str:
    """A new database on the server of ``server_url``, migrated unless told otherwise; returns
    its URL."""
    return create_database(server_url, prefix="agent_service_test", migrated=migrated)


def drop_postgres_database(server_url: str, url: str) -> None:
    drop_database(server_url, url)


async def empty_tables(database: Database) -> None:
    """Delete every row (children first), so a test on a shared database starts clean."""
    async with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(text(f'DELETE FROM "{table.name}"'))
