"""``python -m storage.migrate`` run by several processes at once (web units starting together,
each with its ``ExecStartPre``): every one succeeds, and the schema is migrated once."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage.models import Base
from storage.settings import async_database_url
from tests.conftest import POSTGRES_MISSING, POSTGRES_URL
from tests.support.databases import create_postgres_database, drop_postgres_database
from teststack.processes import PROJECT_ROOT


def _migrate_at_once(database_url: str, processes: int) -> list[str]:
    """Start ``processes`` migrations of ``database_url`` together: the output of each that
    failed."""
    env = {**os.environ, "DATABASE_URL": database_url}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "storage.migrate"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(processes)
    ]
    results = [run.communicate(timeout=120) for run in runs]
    return [
        output.decode(errors="replace")[-1500:]
        for run, (output, _) in zip(runs, results, strict=True)
        if run.returncode
    ]


@pytest.mark.skipif(POSTGRES_URL is None, reason=POSTGRES_MISSING)
def test_migrations_started_together_on_postgresql_all_succeed() -> None:
    assert POSTGRES_URL is not None
    url = create_postgres_database(POSTGRES_URL, migrated=False)
    try:
        failed = _migrate_at_once(async_database_url(url), 4)
    finally:
        drop_postgres_database(POSTGRES_URL, url)

    assert failed == [], failed[0] if failed else ""


def test_migrations_started_together_on_a_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """Six at once on a new file, three times (without a lock, one or two of six failed on
    "already exists" each time); then the schema is the models' own."""
    for attempt in range(3):
        database = tmp_path / f"attempt-{attempt}" / "service.db"
        failed = _migrate_at_once(f"sqlite:///{database}", 6)
        assert failed == [], failed[0]
        with sqlite3.connect(database) as connection:
            tables = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            }
        assert set(Base.metadata.tables) <= tables
