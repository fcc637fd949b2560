"""The SQL databases of a test run: a migrated SQLite file always, a PostgreSQL database when
``TEST_DATABASE_URL`` names a server, or the local one answers.

On PostgreSQL the run creates a database of its own (``agent_service_test_<random>``), migrates it,
and drops it at the end: it never writes into the database the URL names.
"""

import asyncio
import shutil
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage.database import Database
from storage.migrate import upgrade
from storage.models import Base
from storage.settings import async_database_url


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def migrated_sqlite(path: Path) -> str:
    upgrade(sqlite_url(path))
    return sqlite_url(path)


def copy_sqlite(template: Path, path: Path) -> str:
    shutil.copyfile(template, path)
    return sqlite_url(path)


def _dsn(url: str, *, database: str | None = None) -> str:
    parsed = make_url(async_database_url(url)).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def postgres_server(url: str) -> tuple[str | None, str]:
    """(``url``, "") when a PostgreSQL server answers there, else (None, why not)."""

    async def probe() -> None:
        connection = await asyncpg.connect(_dsn(url), timeout=3)
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
    name = f"agent_service_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(async_database_url(server_url)).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    if migrated:
        upgrade(rendered)
    return rendered


def drop_postgres_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def empty_tables(database: Database) -> None:
    """Delete every row (children first), so a test on a shared database starts clean."""
    async with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(text(f'DELETE FROM "{table.name}"'))
