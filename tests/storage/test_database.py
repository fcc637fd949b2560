"""The database engine against a real database (SQLite, and PostgreSQL where a server answers)."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from storage.database import Database

pytestmark = pytest.mark.anyio


async def test_a_database_error_never_quotes_the_statements_values(database: Database) -> None:
    """Values are users' messages and answers: an error travels into logs and Sentry, and must
    not carry them along."""
    marker = "a user's message that must stay private"

    with pytest.raises(DBAPIError) as raised:
        async with database.session() as db:
            await db.execute(text("INSERT INTO no_such_table (content) VALUES (:v)"), {"v": marker})

    assert marker not in str(raised.value)
    assert "hidden" in str(raised.value)
