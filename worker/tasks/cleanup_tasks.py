"""The four maintenance tasks, under the names existing producers and beat schedules use.

Each runs on the ``cleanup-tasks`` queue, is safe to run twice (a second run finds nothing left
to do) and returns counts of what it did, which Celery stores as the result:

- ``cleanup_expired_sessions``: sessions idle longer than ``SESSION_EXPIRY_HOURS``, and their
  turns;
- ``archive_old_audit_logs``: audit rows older than ``AUDIT_LOG_RETENTION_DAYS`` to gzipped
  NDJSON under ``AUDIT_ARCHIVE_URL`` (``storage.archive``: written and flushed before deleted);
- ``cleanup_token_blacklist``: revocation entries of tokens that have expired anyway;
- ``cleanup_temp_files(temp_dir=None, max_age_hours=24)``: old files under ``TEMP_DIR``
  (``worker.maintenance.temp_files``: never outside it).

``worker.maintenance.schedule`` puts them on beat. Database work runs on the process's runtime,
like the agent tasks (the cleanup worker's solo pool gives each task a loop of its own).
"""

import logging
from contextlib import suppress
from datetime import timedelta
from typing import Any, TypeVar

import anyio.to_thread
from redis.exceptions import LockError

from contract.keys import ARCHIVE_LOCK
from contract.tasks import (
    ARCHIVE_OLD_AUDIT_LOGS,
    CLEANUP_EXPIRED_SESSIONS,
    CLEANUP_TEMP_FILES,
    CLEANUP_TOKEN_BLACKLIST,
)
from storage.archive import ArchiveStore, AuditArchiver
from storage.models import utcnow
from storage.revocations import RevocationList
from storage.sessions import SessionStore
from worker.celery_app import celery_app
from worker.maintenance.temp_files import sweep_old_files
from worker.observability.logs import log_event
from worker.process import WorkerProcess
from worker.runtime.loop import LoopResources, TaskCall
from worker.settings import WorkerSettings
from worker.tasks.base_task import BaseTask

logger = logging.getLogger("agent_service.maintenance")
T = TypeVar("T")

#: Hard time limits come from the settings (``worker.config``'s task annotations).
_task_options: dict[str, Any] = {"base": BaseTask, "acks_late": True, "ignore_result": False}


def _soft_limit(settings: WorkerSettings) -> float:
    """Inside-the-loop limit of a maintenance run; Celery's hard limit stays the backstop."""
    return settings.time_limits(settings.celery_task_time_limit)[0]


def _run(call: TaskCall[T]) -> T:
    process = WorkerProcess.current()
    return process.runtime.run(call, time_limit=_soft_limit(process.settings))


@celery_app.task(name=CLEANUP_EXPIRED_SESSIONS, **_task_options)
def cleanup_expired_sessions() -> dict[str, Any]:
    """Delete sessions idle longer than ``SESSION_EXPIRY_HOURS``."""
    settings = WorkerProcess.current().settings
    idle_since = utcnow() - timedelta(hours=settings.session_expiry_hours)

    async def run(loop: LoopResources) -> dict[str, Any]:
        expired = await SessionStore(loop.database.get()).delete_idle(idle_since=idle_since)
        return {"deleted_sessions": expired.sessions, "deleted_messages": expired.messages}

    counts = _run(run)
    counts["idle_since"] = idle_since.isoformat()
    log_event(logger, logging.INFO, "sessions_expired", **counts)
    return counts


@celery_app.task(name=ARCHIVE_OLD_AUDIT_LOGS, **_task_options)
def archive_old_audit_logs() -> dict[str, Any]:
    """Move audit rows older than ``AUDIT_LOG_RETENTION_DAYS`` to the archive, then delete them."""
    settings = WorkerProcess.current().settings
    cutoff = utcnow() - timedelta(days=settings.audit_log_retention_days)

    async def run(loop: LoopResources) -> dict[str, Any]:
        hard_limit = settings.time_limits(settings.celery_task_time_limit)[1]
        lock = loop.redis.lock(ARCHIVE_LOCK, timeout=hard_limit + 60, blocking=False)
        if not await lock.acquire():
            return {"skipped": "another archive run is in progress"}
        try:
            return await archive(loop)
        finally:
            with suppress(LockError):  # expired: the run outlived its limit
                await lock.release()

    async def archive(loop: LoopResources) -> dict[str, Any]:
        store = await anyio.to_thread.run_sync(
            lambda: ArchiveStore(settings.audit_archive_url, settings.audit_archive_storage_options)
        )
        archiver = AuditArchiver(
            loop.database.get(), store, batch_size=settings.audit_archive_batch_size
        )
        report = await archiver.archive_before(cutoff)
        return {
            "archived_rows": report.archived_rows,
            "deleted_rows": report.deleted_rows,
            "files_written": report.files_written,
            "files_resumed": report.files_resumed,
        }

    counts = _run(run)
    counts["cutoff"] = cutoff.isoformat()
    log_event(logger, logging.INFO, "audit_logs_archived", **counts)
    return counts


@celery_app.task(name=CLEANUP_TOKEN_BLACKLIST, **_task_options)
def cleanup_token_blacklist() -> dict[str, Any]:
    """Forget revoked tokens that have expired anyway."""

    async def run(loop: LoopResources) -> dict[str, Any]:
        removed, remaining = await RevocationList(loop.redis).remove_expired()
        return {"removed": removed, "remaining": remaining}

    counts = _run(run)
    log_event(logger, logging.INFO, "token_blacklist_cleaned", **counts)
    return counts


@celery_app.task(name=CLEANUP_TEMP_FILES, **_task_options)
def cleanup_temp_files(temp_dir: str | None = None, max_age_hours: float = 24) -> dict[str, Any]:
    """Delete files older than ``max_age_hours`` under ``TEMP_DIR`` (or ``temp_dir`` inside it).

    A ``temp_dir`` outside ``TEMP_DIR`` fails the task with ``TempDirOutsideRootError`` before
    anything is deleted.
    """
    settings = WorkerProcess.current().settings
    sweep = sweep_old_files(settings.temp_dir, requested=temp_dir, max_age_hours=max_age_hours)
    counts = sweep.as_dict()
    log_event(logger, logging.INFO, "temp_files_cleaned", **counts)
    return counts
