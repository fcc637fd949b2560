"""An async SQLAlchemy engine and its session factory, opened by whoever owns an event loop.

An engine's connections belong to the loop that opened them, so the web process opens one in its
lifespan and the worker one per event loop (``LazyDatabase``: only a loop that touches the
database pays for an engine). SQLite gets the settings that make it a fair multi-process store:
WAL (readers never wait for the writer) with ``synchronous=NORMAL``, a busy timeout (writers
queue instead of failing with "database is locked"), and enforced foreign keys.
"""

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

#: Milliseconds a SQLite writer waits for another process's write to end.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def _prepare_sqlite(engine: AsyncEngine, database: str | None) -> None:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode, NORMAL syncs at checkpoints instead of at every commit: a crash of the
        # process loses nothing, a power cut may lose the last commits (SQLite's documentation).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


class SessionSource(Protocol):
    """Anything that opens ORM sessions and plain connections: a ``Database``, or a
    ``LazyDatabase``."""

    def session(self) -> AsyncSession: ...

    def single_statement(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


class Database:
    """One engine and the session factory bound to it."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        parsed = make_url(url)
        # A statement's values are users' messages and answers: an error (logged, sent to
        # Sentry) says "[SQL parameters hidden]" instead of quoting them.
        options: dict[str, Any] = {"hide_parameters": True}
        if parsed.get_backend_name() == "sqlite":
            # No ping before each checkout: a file has no server to drop the connection, and on
            # aiosqlite each ping is more hand-offs to its thread.
            options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            options.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine = create_async_engine(parsed, **options)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        if parsed.get_backend_name() == "sqlite":
            _prepare_sqlite(self.engine, parsed.database)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> AsyncSession:
        return self.sessions()

    def single_statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for a write of one Core statement (an INSERT of many rows is one),
        which is atomic by itself: on PostgreSQL in autocommit, without the BEGIN and COMMIT
        round trips of a transaction around it; on SQLite in a transaction committed when the
        block ends, since switching aiosqlite's connection to autocommit and back costs more
        hand-offs to its thread than the COMMIT does."""
        if self.dialect == "sqlite":
            return self.engine.begin()
        return self._autocommit.connect()

    async def aclose(self) -> None:
        await self.engine.dispose()


class LazyDatabase:
    """A ``Database`` created on first use, so a loop that never needs one never opens one."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self._url = url
        self._pool_size = pool_size
        self._database: Database | None = None

    def get(self) -> Database:
        if self._database is None:
            self._database = Database(self._url, pool_size=self._pool_size)
        return self._database

    def session(self) -> AsyncSession:
        return self.get().session()

    def single_statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.get().single_statement()

    async def aclose(self) -> None:
        database, self._database = self._database, None
        if database is not None:
            await database.aclose()
