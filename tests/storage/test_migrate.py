"""``python -m storage.migrate`` run by several processes at once (web units starting together,
each with its ``ExecStartPre``): every one succeeds, and the schema is migrated once."""

import os
import subprocess
import sys

import pytest

from storage.settings import async_database_url
from tests.conftest import POSTGRES_MISSING, POSTGRES_URL
from tests.support.databases import create_postgres_database, drop_postgres_database
from teststack.processes import PROJECT_ROOT


@pytest.mark.skipif(POSTGRES_URL is None, reason=POSTGRES_MISSING)
def test_migrations_started_together_on_postgresql_all_succeed() -> None:
    assert POSTGRES_URL is not None
    url = create_postgres_database(POSTGRES_URL, migrated=False)
    try:
        env = {**os.environ, "DATABASE_URL": async_database_url(url)}
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "storage.migrate"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(4)
        ]
        results = [run.communicate(timeout=120) for run in runs]
        statuses = [run.returncode for run in runs]
    finally:
        drop_postgres_database(POSTGRES_URL, url)

    failed = [
        output.decode(errors="replace")[-1500:]
        for status, (output, _) in zip(statuses, results, strict=True)
        if status
    ]
    assert failed == [], failed[0] if failed else ""
