"""Audit rows, one at a time and batched into shared writes."""

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


def _inserts(database: Database) -> list[str]:
    """The INSERT statements sent to the database (one for many rows counts once)."""
    inserts: list[str] = []

    def sent(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", sent)
    return inserts


async def test_rows_recorded_together_share_one_insert(database: Database) -> None:
    log = AuditLog(database, batch_window=0.05)
    inserts = _inserts(database)
    commits: list[object] = []
    event.listen(database.engine.sync_engine, "commit", commits.append)

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
    assert len(inserts) == 1
    # PostgreSQL: in autocommit, without a BEGIN and a COMMIT around it; SQLite: one transaction.
    assert len(commits) == (1 if database.dialect == "sqlite" else 0)


async def test_without_a_window_each_row_is_written_alone(database: Database) -> None:
    log = AuditLog(database)
    inserts = _inserts(database)

    for n in range(3):
        await log.record(
            AuditAction.TASK_SUBMIT, user_id="u", resource_type="task", resource_id=f"t{n}"
        )

    assert await _count(database) == 3
    assert len(inserts) == 3


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
        tg.start_soon(record, {"not json": object()})  # the whole statement fails

    assert len(errors) == 2
    assert await _count(database) == 0


async def test_a_row_the_database_refuses_writes_none_of_its_batch(database: Database) -> None:
    """The batch is one statement outside a transaction on PostgreSQL: all of it or nothing."""
    if database.dialect == "sqlite":
        pytest.skip("SQLite does not enforce a column's length")
    log = AuditLog(database, batch_window=0.05)
    errors: list[BaseException] = []

    async def record(resource_id: str) -> None:
        try:
            await log.record(
                AuditAction.TASK_FAIL, user_id="u", resource_type="task", resource_id=resource_id
            )
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(record, f"t{n}")
        tg.start_soon(record, "x" * 300)  # longer than the column's 255

    assert len(errors) == 6
    assert await _count(database) == 0
