"""A PostgreSQL database of a test run's or a benchmark's own, on a server it is given: created
(and migrated) at the start, dropped at the end, so that nothing is written into the database the
server's URL names."""

import asyncio
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from storage.migrate import upgrade
from storage.settings import async_database_url


def admin_dsn(url: str, *, database: str | None = None) -> str:
    """``url`` as asyncpg connects to it (on ``database`` when given)."""
    parsed = make_url(async_database_url(url)).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(admin_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_database(server_url: str, *, prefix: str, migrated: bool = True) -> str:
    """A new database named ``<prefix>_<random>`` on the server of ``server_url``, migrated
    unless told otherwise; returns its URL (with the asyncio driver)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(async_database_url(server_url)).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    if migrated:
        upgrade(rendered)
    return rendered


def drop_database(server_url: str, url: str) -> None:
    """Drop the database of ``url`` (and close its connections: PostgreSQL 13 or later)."""
    name = make_url(url).database
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
