"""Audit rows, one at a time and batched into shared transactions."""

from functools import partial

import anyio
import pytest
from sqlalchemy import event, func, select

from storage.audit import AuditAction, AuditLog
from storage.database import Database
from storage.models import AuditLogEntry

pytestmark = pytest.mark.anyio


async def _count(database: Database) -> int:
    async with database.session() as db:
        return int(await db.scalar(select(func.count()).select_from(AuditLogEntry)) or 0)


def _commits(database: Database) -> list[int]:
    commits: list[int] = []
    event.listen(database.engine.sync_engine, "commit", lambda _: commits.append(1))
    return commits


async def test_rows_recorded_together_share_one_commit(database: Database) -> None:
    log = AuditLog(database, batch_window=0.05)
    commits = _commits(database)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(
                partial(
                    log.record,
                    AuditAction.TASK_COMPLETE,
                    user_id="u",
                    resource_type="task",
                    resource_id=f"t{n}",
                )
            )

    assert await _count(database) == 20
    assert len(commits) == 1


async def test_without_a_window_each_row_commits_alone(database: Database) -> None:
    log = AuditLog(database)
    commits = _commits(database)

    for n in range(3):
        await log.record(
            AuditAction.TASK_SUBMIT, user_id="u", resource_type="task", resource_id=f"t{n}"
        )

    assert await _count(database) == 3
    assert len(commits) == 3


async def test_every_caller_of_a_failed_batch_gets_the_error(database: Database) -> None:
    log = AuditLog(database, batch_window=0.05)
    errors: list[BaseException] = []

    async def record(details: dict[str, object]) -> None:
        try:
            await log.record(
                AuditAction.TASK_FAIL,
                user_id="u",
                resource_type="task",
                resource_id="t",
                details=details,
            )
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        fine: dict[str, object] = {"fine": 1}
        tg.start_soon(record, fine)
        tg.start_soon(record, {"not json": object()})  # the whole transaction fails

    assert len(errors) == 2
    assert await _count(database) == 0
