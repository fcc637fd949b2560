"""A database whose schema is behind the code is said once, clearly, not once per task."""

from pathlib import Path

from scripts.embedded_redis import EmbeddedRedis
from tests.support.polling import poll_until_done, submit
from tests.support.stack import redis_db_url, start_web, start_worker

SCHEMA_DB = 11


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
