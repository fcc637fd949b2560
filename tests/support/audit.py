"""Reading what the service wrote to its database, from a synchronous test."""

import asyncio
from typing import Any

from sqlalchemy import select

from storage.database import Database
from storage.models import AuditLogEntry


def audit_rows(database_url: str, *, resource_id: str) -> list[dict[str, Any]]:
    """The audit rows about one resource, oldest first."""

    async def read() -> list[dict[str, Any]]:
        database = Database(database_url)
        try:
            async with database.session() as db:
                rows = await db.scalars(
                    select(AuditLogEntry)
                    .where(AuditLogEntry.resource_id == resource_id)
                    .order_by(AuditLogEntry.id)
                )
                return [row.to_record() for row in rows]
        finally:
            await database.aclose()

    return asyncio.run(read())
