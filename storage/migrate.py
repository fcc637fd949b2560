"""Bring the database's schema up to date: ``python -m storage.migrate`` (the Procfile's
``release``; ``make dev`` and the tests run it too).

Alembic is configured here rather than by an ``alembic.ini`` in the working directory, so the
command works from anywhere and reads the same ``DATABASE_URL`` as the processes. For new
revisions, ``alembic -c storage/alembic.ini revision --autogenerate -m "..."``.
"""

import argparse
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from storage.settings import DatabaseSettings, async_database_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's ini-style options interpolate '%'; a password may hold one.
    config.set_main_option("sqlalchemy.url", async_database_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    upgrade(DatabaseSettings().database_url, args.revision)


if __name__ == "__main__":
    main()
