from storage.settings import async_database_url


def test_paas_postgres_url_gets_the_asyncpg_driver_and_its_tls_spelling() -> None:
    url = async_database_url("postgres://u:p%40ss@db.example:5432/app?sslmode=require")

    assert url == "postgresql+asyncpg://u:p%40ss@db.example:5432/app?ssl=require"


def test_sqlite_url_gets_the_aiosqlite_driver_and_keeps_its_path() -> None:
    assert async_database_url("sqlite:///./var/x.db") == "sqlite+aiosqlite:///./var/x.db"
    assert async_database_url("sqlite:////abs/x.db") == "sqlite+aiosqlite:////abs/x.db"
    assert async_database_url("sqlite+aiosqlite:///y.db") == "sqlite+aiosqlite:///y.db"
