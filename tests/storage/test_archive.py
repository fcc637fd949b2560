"""Archiving audit rows: exactly the old rows go, to files that read back, and a crash between
the file and the delete neither loses nor duplicates a row."""

import gzip
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from scripts.embedded_redis import free_port
from storage.archive import ArchiveStore, AuditArchiver, archive_name
from storage.audit import AuditAction
from storage.database import Database
from storage.models import AuditLogEntry, utcnow

pytestmark = pytest.mark.anyio


async def _seed(database: Database, *, old: int, recent: int) -> list[int]:
    """``old`` rows 100 days old and ``recent`` rows from yesterday; returns the old ids."""
    now = utcnow()
    async with database.session() as db, db.begin():
        rows = [
            AuditLogEntry(
                occurred_at=now - timedelta(days=100, minutes=i),
                user_id=f"user-{i}",
                action=AuditAction.TASK_SUBMIT.value,
                resource_type="task",
                resource_id=f"old-{i}",
                outcome="success",
                details={"n": i, "text": "ünïcode"},
            )
            for i in range(old)
        ] + [
            AuditLogEntry(
                occurred_at=now - timedelta(days=1),
                user_id="user",
                action=AuditAction.TASK_COMPLETE.value,
                resource_type="task",
                resource_id=f"recent-{i}",
                outcome="success",
            )
            for i in range(recent)
        ]
        db.add_all(rows)
    async with database.session() as db:
        return list(
            (
                await db.scalars(
                    select(AuditLogEntry.id).where(AuditLogEntry.resource_id.like("old-%"))
                )
            ).all()
        )


async def _remaining(database: Database) -> list[str]:
    remaining: list[str] = []
    async with database.session() as db:
        for resource_id in (await db.scalars(select(AuditLogEntry.resource_id))).all():
            assert resource_id is not None, "every seeded row names its resource"
            remaining.append(resource_id)
    return sorted(remaining)


def _read_all(store: ArchiveStore) -> list[dict[str, Any]]:
    return [record for path in store.list() for record in store.read(path)]


async def test_archive_moves_exactly_the_old_rows(database: Database, tmp_path: Path) -> None:
    old_ids = await _seed(database, old=7, recent=3)
    store = ArchiveStore(str(tmp_path / "archive"))
    archiver = AuditArchiver(database, store, batch_size=3)

    report = await archiver.archive_before(utcnow() - timedelta(days=90))

    assert (report.archived_rows, report.deleted_rows, report.files_written) == (7, 7, 3)
    assert await _remaining(database) == ["recent-0", "recent-1", "recent-2"]
    records = _read_all(store)
    assert sorted(r["id"] for r in records) == sorted(old_ids)
    assert {r["resource_id"] for r in records} == {f"old-{i}" for i in range(7)}
    first = next(r for r in records if r["resource_id"] == "old-0")
    assert first["details"] == {"n": 0, "text": "ünïcode"}
    assert first["action"] == "task.submit"
    # Plain gzip + NDJSON, readable without us:
    path = Path(store.list()[0])
    lines = gzip.decompress(path.read_bytes()).splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == sorted(old_ids)[:3]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


async def test_crash_after_the_file_and_before_the_delete_loses_and_repeats_nothing(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_ids = await _seed(database, old=5, recent=2)
    store = ArchiveStore(str(tmp_path / "archive"))
    cutoff = utcnow() - timedelta(days=90)

    async def crash(self: AuditArchiver, ids: list[int]) -> int:
        raise SystemExit("worker killed between the archive file and the delete")

    with monkeypatch.context() as patch:
        patch.setattr(AuditArchiver, "_delete_rows", crash)
        with pytest.raises(SystemExit):
            await AuditArchiver(database, store, batch_size=3).archive_before(cutoff)
    assert len(store.list()) == 1
    assert len(await _remaining(database)) == 7  # nothing deleted yet

    report = await AuditArchiver(database, store, batch_size=3).archive_before(cutoff)

    assert report.files_resumed == 1
    assert report.archived_rows == 2  # the rows the first run had not reached
    assert report.deleted_rows == 5
    assert await _remaining(database) == ["recent-0", "recent-1"]
    archived = [r["id"] for r in _read_all(store)]
    assert sorted(archived) == sorted(old_ids)
    assert len(archived) == len(set(archived))  # none archived twice


async def test_nothing_old_writes_nothing(database: Database, tmp_path: Path) -> None:
    await _seed(database, old=0, recent=2)
    store = ArchiveStore(str(tmp_path / "archive"))

    report = await AuditArchiver(database, store).archive_before(utcnow() - timedelta(days=90))

    assert (report.archived_rows, report.files_written) == (0, 0)
    assert store.list() == []


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3 server (moto), with a bucket named ``audit``."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def test_archive_to_s3(
    database: Database, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"audit-{database.dialect}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    old_ids = await _seed(database, old=4, recent=1)
    store = ArchiveStore(
        f"s3://{bucket}/audit-logs", {"endpoint_url": s3_endpoint, "use_listings_cache": False}
    )

    report = await AuditArchiver(database, store, batch_size=3).archive_before(
        utcnow() - timedelta(days=90)
    )

    assert (report.archived_rows, report.files_written) == (4, 2)
    assert await _remaining(database) == ["recent-0"]
    assert sorted(r["id"] for r in _read_all(store)) == sorted(old_ids)
    keys = [
        item["Key"]
        for item in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)[
            "Contents"
        ]
    ]
    assert all(key.startswith("audit-logs/audit-") for key in keys)
    assert len(keys) == 2


async def test_a_file_of_another_database_with_the_same_ids_deletes_nothing(
    database: Database, tmp_path: Path
) -> None:
    old_ids = await _seed(database, old=3, recent=0)
    store = ArchiveStore(str(tmp_path / "archive"))
    foreign = [
        {
            "id": row_id,
            "occurred_at": "2020-01-01T00:00:00+00:00",
            "user_id": "someone-else",
            "action": "task.submit",
            "resource_type": "task",
            "resource_id": "theirs",
            "outcome": "success",
            "details": {},
        }
        for row_id in old_ids
    ]
    store.write(archive_name(old_ids[0], old_ids[-1]), foreign)

    report = await AuditArchiver(database, store).archive_before(utcnow() - timedelta(days=90))

    assert (report.files_resumed, report.files_written, report.archived_rows) == (0, 1, 3)
    assert await _remaining(database) == []
    ours = [r for r in _read_all(store) if r["resource_id"] != "theirs"]
    assert sorted(r["id"] for r in ours) == sorted(old_ids)


def test_temporaries_of_crashed_runs_are_removed_a_day_later(tmp_path: Path) -> None:
    store = ArchiveStore(str(tmp_path / "archive"))
    now = time.time()
    stale = tmp_path / "archive" / f".tmp-{int(now) - 90_000}-abc-audit-1-2.ndjson.gz"
    recent = tmp_path / "archive" / f".tmp-{int(now) - 60}-def-audit-3-4.ndjson.gz"
    stale.write_bytes(b"partial")
    recent.write_bytes(b"being written")

    assert store.remove_stale_temporaries(now=now) == 1

    assert not stale.exists()
    assert recent.exists()
