"""Where the SQL database is, for the web, worker and beat processes alike.

SQLite (a file under ``./var/``) needs nothing installed; PostgreSQL is one ``DATABASE_URL``
away. A PaaS hands out ``postgres://...?sslmode=require``; SQLAlchemy's asyncio API needs the
driver in the scheme and asyncpg spells the TLS option ``ssl``, so the URL is translated here once.
"""

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/agent-service.db"

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_database_url(url: str) -> str:
    """``url`` with an asyncio driver (asyncpg, aiosqlite) and asyncpg's spelling of TLS."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    parsed = parsed.set(drivername=driver)
    if driver == "postgresql+asyncpg" and "sslmode" in parsed.query:
        query = dict(parsed.query)
        query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


class DatabaseSettings(BaseSettings):
    """Connection settings of the SQL database; the web and worker settings extend this."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://... "
        "(postgres:// is accepted).",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)

    @property
    def database_url_async(self) -> str:
        return async_database_url(self.database_url)

    def production_problem(self) -> str | None:
        """Why this database would not do in production, or None.

        A SQLite file given relative to the working directory (the development default) is one
        per checkout, per container, per dyno: the web process and the workers would each keep
        their own sessions, and a PaaS would throw them away on restart.
        """
        parsed = make_url(self.database_url_async)
        if parsed.get_backend_name() != "sqlite":
            return None
        if parsed.database and parsed.database != ":memory:" and os.path.isabs(parsed.database):
            return None
        return (
            "DATABASE_URL is a SQLite file relative to the working directory: in production "
            "every process and machine would keep its own. Set DATABASE_URL to PostgreSQL "
            "(postgresql+asyncpg://...) or to an absolute path all processes share."
        )
