"""The beat schedule of the maintenance tasks, and a scheduler that sends each job once per
period even when two beats run by mistake.

Times follow the task contract (hourly; daily 02:00; every 6 h; daily 03:00, UTC) and can be
moved by the ``SCHEDULE_*`` settings: a cron line (``"0 2 * * *"``), a number of seconds, or
empty to switch a job off.

Exactly one beat should run per deployment, but a second one started by mistake (a scaled
``beat`` process, a deploy overlapping the old release) must not run every job twice.
``SingleRunScheduler`` takes a Redis lock per job before sending it (``SET NX``), held for most of
the time until the job's next run: the first beat to reach a run sends it, the others find the
lock and skip that period. A beat that cannot reach Redis skips too: a maintenance job missed for
one period is harmless, a job run twice at once is not.
"""

import logging
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery.beat import PersistentScheduler, ScheduleEntry
from celery.schedules import BaseSchedule, crontab, schedule

from contract.keys import beat_lock
from contract.tasks import (
    ARCHIVE_OLD_AUDIT_LOGS,
    CLEANUP_EXPIRED_SESSIONS,
    CLEANUP_TEMP_FILES,
    CLEANUP_TOKEN_BLACKLIST,
)
from worker.settings import WorkerSettings

logger = logging.getLogger("agent_service.beat")

JOBS = {
    "cleanup-expired-sessions": (CLEANUP_EXPIRED_SESSIONS, "schedule_cleanup_expired_sessions"),
    "archive-old-audit-logs": (ARCHIVE_OLD_AUDIT_LOGS, "schedule_archive_old_audit_logs"),
    "cleanup-token-blacklist": (CLEANUP_TOKEN_BLACKLIST, "schedule_cleanup_token_blacklist"),
    "cleanup-temp-files": (CLEANUP_TEMP_FILES, "schedule_cleanup_temp_files"),
}
#: The share of the time until a job's next run that its lock is held: long enough to cover
#: beats whose clocks disagree by minutes, short enough to be gone before the next run.
LOCK_SHARE = 0.9


class InvalidScheduleError(ValueError):
    """A ``SCHEDULE_*`` setting is neither a cron line, a number of seconds, nor empty."""


def parse_schedule(value: str, *, setting: str) -> BaseSchedule | None:
    text = value.strip()
    if not text or text.lower() == "off":
        return None
    try:
        seconds = float(text)
    except ValueError:
        fields = text.split()
        if len(fields) != 5:
            raise InvalidScheduleError(
                f"{setting.upper()}={value!r}: expected a cron line of 5 fields "
                "(minute hour day-of-month month day-of-week), a number of seconds, or empty"
            ) from None
        minute, hour, day_of_month, month, day_of_week = fields
        try:
            return crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month,
                day_of_week=day_of_week,
            )
        except ValueError as exc:
            raise InvalidScheduleError(f"{setting.upper()}={value!r}: {exc}") from exc
    if seconds <= 0:
        raise InvalidScheduleError(f"{setting.upper()}={value!r}: seconds must be above 0")
    return schedule(run_every=timedelta(seconds=seconds))


def beat_schedule(settings: WorkerSettings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule``: every maintenance job that is not switched off."""
    entries: dict[str, dict[str, Any]] = {}
    for name, (task, setting) in JOBS.items():
        when = parse_schedule(getattr(settings, setting), setting=setting)
        if when is not None:
            entries[name] = {"task": task, "schedule": when}
    return entries


class SingleRunScheduler(PersistentScheduler):
    """Celery's file-backed scheduler, sending each due job only if no other beat did."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis = redis.Redis.from_url(
            self.app.conf.broker_url, socket_timeout=5, client_name="agent-service:beat"
        )
        self._identity = f"{socket.gethostname()}:{id(self)}"

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        if self._claim(entry):
            super().apply_entry(entry, producer=producer)

    def _claim(self, entry: ScheduleEntry) -> bool:
        now = datetime.now(UTC)
        if entry.schedule is None or entry.name is None:
            return True
        until_next = entry.schedule.remaining_estimate(now).total_seconds()
        hold_ms = max(1000, int(until_next * LOCK_SHARE * 1000))
        try:
            claimed = self._redis.set(
                beat_lock(entry.name), f"{self._identity}@{now.isoformat()}", nx=True, px=hold_ms
            )
        except redis.RedisError as exc:
            logger.warning("beat_skipped job=%s reason=redis_unavailable error=%r", entry.name, exc)
            return False
        if not claimed:
            logger.info("beat_skipped job=%s reason=sent_by_another_beat", entry.name)
            return False
        return True

    def close(self) -> None:
        super().close()
        self._redis.close()
