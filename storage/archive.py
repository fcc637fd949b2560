"""Moving old audit rows to cold storage: gzipped NDJSON files, then the rows' deletion.

The order is what makes it safe. Each batch of rows (oldest ids first) is written to a temporary
name, flushed (and fsynced on a local disk), and renamed to
``audit-<first id>-<last id>-<random>.ndjson.gz``; only then are exactly those rows deleted. A
crash before the rename leaves a temporary file (removed by a later run once a day old) and every
row in the table; a crash after it leaves the file and the rows, and the next run, whose first
batch starts at the same id, finds that file, deletes the rows it holds and moves on instead of
archiving them twice. It deletes only rows identical to their archived record: a file left by
another database whose ids happen to coincide (a restore, a reset sequence) deletes nothing, and
the batch gets a file of its own. One run at a time: the task holds a lock.

``AUDIT_ARCHIVE_URL`` is anything fsspec opens: a local directory by default, ``s3://bucket/prefix``
through s3fs (options such as ``endpoint_url`` in ``AUDIT_ARCHIVE_STORAGE_OPTIONS``). Files are
written in a worker thread so the event loop is never blocked on disk or network.
"""

import gzip
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
import fsspec
import orjson
from sqlalchemy import delete, select

from storage.database import Database
from storage.models import AuditLogEntry

FILE_PREFIX = "audit-"
FILE_SUFFIX = ".ndjson.gz"
TEMP_PREFIX = ".tmp-"
#: Rows deleted per statement (bound parameters per query stay well under every database's cap).
DELETE_CHUNK = 500
#: Age after which a temporary file is a crashed run's leftover.
STALE_TEMPORARY_SECONDS = 86_400


def archive_name(first_id: int, last_id: int) -> str:
    return f"{FILE_PREFIX}{first_id:020d}-{last_id:020d}-{uuid.uuid4().hex[:8]}{FILE_SUFFIX}"


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    archived_rows: int  # written to a file by this run
    deleted_rows: int  # removed from the table by this run (with those of resumed files)
    files_written: int
    files_resumed: int


class ArchiveStore:
    """The archive directory or bucket prefix; blocking, call it from a thread."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self._fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/")
        self._local = "file" in self._fs.protocol
        self._fs.makedirs(self.root, exist_ok=True)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def find_starting_at(self, first_id: int) -> list[str]:
        """The archive files whose first row is ``first_id`` (listed afresh, not from a cache:
        another process may have written one)."""
        self._fs.invalidate_cache()
        return sorted(
            str(path)
            for path in self._fs.glob(self.path(f"{FILE_PREFIX}{first_id:020d}-*{FILE_SUFFIX}"))
        )

    def remove_stale_temporaries(self, *, now: float | None = None) -> int:
        """Delete temporary files of runs that crashed before their rename, a day later."""
        cutoff = (time.time() if now is None else now) - STALE_TEMPORARY_SECONDS
        removed = 0
        for path in self._fs.glob(self.path(f"{TEMP_PREFIX}*")):
            started = str(path).rsplit("/", 1)[-1][len(TEMP_PREFIX) :].split("-", 1)[0]
            if started.isdigit() and int(started) < cutoff:
                self._fs.rm(path)
                removed += 1
        return removed

    def write(self, name: str, records: Sequence[dict[str, Any]]) -> str:
        """Write ``records`` under ``name``, durably, by way of a temporary name."""
        final = self.path(name)
        temporary = self.path(f"{TEMP_PREFIX}{int(time.time())}-{uuid.uuid4().hex}-{name}")
        with self._fs.open(temporary, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", filename=name, mtime=0) as packed:
                for record in records:
                    packed.write(orjson.dumps(record) + b"\n")
            raw.flush()
            if self._local:
                os.fsync(raw.fileno())
        self._fs.mv(temporary, final)
        if self._local:
            directory = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return final

    def read(self, path: str) -> list[dict[str, Any]]:
        with self._fs.open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as packed:
            return [orjson.loads(line) for line in packed if line.strip()]

    def list(self) -> list[str]:
        return sorted(
            str(path) for path in self._fs.glob(self.path(f"{FILE_PREFIX}*{FILE_SUFFIX}"))
        )


class AuditArchiver:
    def __init__(self, database: Database, store: ArchiveStore, *, batch_size: int = 1000) -> None:
        self._db = database
        self._store = store
        self._batch_size = batch_size

    async def archive_before(self, cutoff: datetime) -> ArchiveReport:
        """Archive, then delete, every audit row that occurred before ``cutoff``."""
        rows = deleted = written = resumed = 0
        await anyio.to_thread.run_sync(lambda: self._store.remove_stale_temporaries())
        while True:
            async with self._db.session() as db:
                batch = list(
                    (
                        await db.scalars(
                            select(AuditLogEntry)
                            .where(AuditLogEntry.occurred_at < cutoff)
                            .order_by(AuditLogEntry.id)
                            .limit(self._batch_size)
                        )
                    ).all()
                )
            if not batch:
                return ArchiveReport(rows, deleted, written, resumed)
            finished = await self._finish_interrupted(batch[0].id)
            if finished:
                # A run crashed after writing a file of these rows and before deleting them.
                deleted += finished
                resumed += 1
                continue
            records = [entry.to_record() for entry in batch]
            name = archive_name(batch[0].id, batch[-1].id)
            await anyio.to_thread.run_sync(self._store.write, name, records)
            deleted += await self._delete_rows([entry.id for entry in batch])
            rows += len(batch)
            written += 1

    async def _finish_interrupted(self, first_id: int) -> int:
        """Delete the rows an earlier run archived but did not delete: those of a file starting
        at ``first_id`` that are identical to its records. The number deleted (0: none such)."""
        for path in await anyio.to_thread.run_sync(self._store.find_starting_at, first_id):
            records = await anyio.to_thread.run_sync(self._store.read, path)
            matching = await self._rows_matching({int(r["id"]): r for r in records})
            if matching:  # none: another database's file with the same ids, not ours
                return await self._delete_rows(matching)
        return 0

    async def _rows_matching(self, archived: dict[int, dict[str, Any]]) -> list[int]:
        ids = list(archived)
        matching: list[int] = []
        async with self._db.session() as db:
            for start in range(0, len(ids), DELETE_CHUNK):
                chunk = ids[start : start + DELETE_CHUNK]
                rows = (
                    await db.scalars(select(AuditLogEntry).where(AuditLogEntry.id.in_(chunk)))
                ).all()
                matching += [row.id for row in rows if archived[row.id] == row.to_record()]
        return matching

    async def _delete_rows(self, ids: Sequence[int]) -> int:
        deleted = 0
        async with self._db.session() as db, db.begin():
            for start in range(0, len(ids), DELETE_CHUNK):
                chunk = ids[start : start + DELETE_CHUNK]
                result = await db.execute(delete(AuditLogEntry).where(AuditLogEntry.id.in_(chunk)))
                deleted += result.rowcount or 0  # type: ignore[attr-defined]
        return deleted
