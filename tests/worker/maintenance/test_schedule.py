"""The beat schedule: the contract's times, the settings that move them, and bad values refused."""

from datetime import timedelta

import pytest
from celery.schedules import crontab, schedule

# Registers the maintenance tasks with celery_app.
import worker.tasks.cleanup_tasks  # noqa: F401
from contract.tasks import (
    ARCHIVE_OLD_AUDIT_LOGS,
    CLEANUP_EXPIRED_SESSIONS,
    CLEANUP_TASK_PREFIX,
    CLEANUP_TEMP_FILES,
    CLEANUP_TOKEN_BLACKLIST,
)
from worker.celery_app import celery_app
from worker.maintenance.schedule import JOBS, InvalidScheduleError, beat_schedule, parse_schedule
from worker.settings import WorkerSettings

CLEANUP = CLEANUP_TASK_PREFIX


def test_default_schedule_follows_the_task_contract() -> None:
    entries = beat_schedule(WorkerSettings())

    by_task = {entry["task"]: entry["schedule"] for entry in entries.values()}
    assert by_task == {
        CLEANUP + "cleanup_expired_sessions": crontab(minute="0"),
        CLEANUP + "archive_old_audit_logs": crontab(minute="0", hour="2"),
        CLEANUP + "cleanup_token_blacklist": crontab(minute="0", hour="*/6"),
        CLEANUP + "cleanup_temp_files": crontab(minute="0", hour="3"),
    }


def test_a_job_can_be_moved_or_switched_off() -> None:
    settings = WorkerSettings(schedule_cleanup_token_blacklist="90", schedule_cleanup_temp_files="")

    entries = beat_schedule(settings)

    assert entries["cleanup-token-blacklist"]["schedule"] == schedule(timedelta(seconds=90))
    assert "cleanup-temp-files" not in entries
    assert len(entries) == 3


@pytest.mark.parametrize("value", ["every hour", "0 2 * *", "-5", "0", "99 * * * *"])
def test_bad_schedule_values_are_refused_with_the_setting_named(value: str) -> None:
    with pytest.raises(InvalidScheduleError, match="SCHEDULE_X"):
        parse_schedule(value, setting="schedule_x")


def test_every_scheduled_job_names_a_registered_maintenance_task() -> None:
    scheduled = {task for task, _ in JOBS.values()}

    assert scheduled == {
        CLEANUP_EXPIRED_SESSIONS,
        ARCHIVE_OLD_AUDIT_LOGS,
        CLEANUP_TOKEN_BLACKLIST,
        CLEANUP_TEMP_FILES,
    }
    assert scheduled <= set(celery_app.tasks)
