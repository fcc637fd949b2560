"""Whether a database's schema is the one this code was written for.

The schema is brought up to date by ``python -m storage.migrate`` (the Procfile's ``release``).
A process started on a database that was not migrated would fail every write that needs the
missing tables or columns, each failure logged on its own; so the web's readiness probe and a
worker's start ask here once, and say why in one place: the database's revision against the
head of ``storage/migrations``.
"""

from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.migrate import MIGRATIONS, alembic_config


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    #: The revision the database is at (None: never migrated).
    current: str | None
    #: The newest revision of this code.
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.up_to_date:
            return f"at revision {self.head}"
        return (
            f"at revision {self.current or 'none (never migrated)'}, the code needs {self.head}: "
            "run `python -m storage.migrate`"
        )


def head_revision() -> str:
    config = alembic_config("sqlite://")  # the URL is not read to find the scripts
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "storage/migrations has no revision"
    return head


async def schema_status(engine: AsyncEngine) -> SchemaStatus:
    """The database's revision against the code's; raises what the connection raises."""
    async with engine.connect() as connection:
        current = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    return SchemaStatus(current=current, head=head_revision())
