"""Reading and seeding the service's database from a synchronous test."""

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Executable, select

from storage.database import Database
from storage.models import AuditLogEntry, Base


def audit_rows(database_url: str, *, resource_id: str) -> list[dict[str, Any]]:
    """The audit rows about one resource, oldest first."""

    async def read() -> list[dict[str, Any]]:
        database = Database(database_url)
        try:
            async with database.session() as db:
                rows = await db.scalars(
                    select(AuditLogEntry)
                    .where(AuditLogEntry.resource_id == resource_id)
                    .order_by(AuditLogEntry.occurred_at, AuditLogEntry.id)
                )
                return [row.to_record() for row in rows]
        finally:
            await database.aclose()

    return asyncio.run(read())


def run_sql(database_url: str, work: Executable | Sequence[Base]) -> None:
    """Execute a statement, or add ORM rows, in one transaction (to seed or age data)."""

    async def run() -> None:
        database = Database(database_url)
        try:
            async with database.session() as db, db.begin():
                if isinstance(work, Sequence):
                    db.add_all(work)
                else:
                    await db.execute(work)
        finally:
            await database.aclose()

    asyncio.run(run())
