"""A database whose schema is behind the code is said once, clearly, not once per task."""

from pathlib import Path

from scripts.embedded_redis import EmbeddedRedis
from storage.migrate import upgrade
from storage.schema import head_revision
from tests.support import redis_databases
from teststack.polling import poll_until_done, submit
from teststack.stack import redis_db_url, start_web, start_worker

SCHEMA_DB = redis_databases.SCHEMA


def test_a_worker_on_an_unmigrated_database_says_so_once_and_still_runs_tasks(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    url = redis_db_url(redis_server.url, SCHEMA_DB)
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}"}
    worker = start_worker(url, env={**env, "ECHO_WORD_DELAY": "0"})
    web = start_web(url)
    try:
        finals = [
            poll_until_done(web.client, submit(web.client, "echo", f"task {n}")) for n in range(3)
        ]
        log = worker.output(tail=10**7)
    finally:
        web.stop()
        worker.stop()

    assert [f["status"] for f in finals] == ["completed"] * 3
    assert log.count("database_schema_behind") == 1
    assert "run `python -m storage.migrate`" in log
    assert log.count("audit_write_failed") == 1  # the next ones within a minute are counted


def test_the_web_is_not_ready_until_its_database_is_migrated(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'migrated-later.db'}"
    web = start_web(
        redis_db_url(redis_server.url, SCHEMA_DB),
        env={"DATABASE_URL": database},
        ready_path="/healthz",
    )
    try:
        behind = web.client.get("/readyz")
        upgrade(database)  # the release's migration, run while the web process is up
        migrated = web.client.get("/readyz")
    finally:
        web.stop()

    assert behind.status_code == 503
    assert behind.json()["database_schema"] == "behind"
    assert behind.json()["detail"] == (
        f"database at revision none (never migrated), the code needs {head_revision()}: "
        "run `python -m storage.migrate`"
    )
    assert migrated.status_code == 200
    assert migrated.json()["database_schema"] == "ok"
