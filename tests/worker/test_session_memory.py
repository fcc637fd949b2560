"""Session memory as the agent task uses it, on a real database."""

import pytest

from scripts.embedded_redis import free_port
from storage.database import Database
from storage.sessions import SessionStore
from worker.agents.base import AgentRequest, ChatMessage
from worker.errors import StorageUnavailableError, UnknownSessionError
from worker.session_memory import load_history, remember_exchange

pytestmark = pytest.mark.anyio


def _request(session_id: str | None, *, user: str = "alice", message: str = "next") -> AgentRequest:
    return AgentRequest(agent_id="echo", message=message, user_id=user, session_id=session_id)


async def test_history_is_the_last_turns_oldest_first(database: Database) -> None:
    session = await SessionStore(database).create(user_id="alice")
    for n in range(3):
        await remember_exchange(
            database, _request(session.session_id, message=f"q{n}"), task_id=f"t{n}", answer=f"a{n}"
        )

    history = await load_history(database, _request(session.session_id), limit=4)

    assert history == [
        ChatMessage("user", "q1"),
        ChatMessage("assistant", "a1"),
        ChatMessage("user", "q2"),
        ChatMessage("assistant", "a2"),
    ]
    assert await load_history(database, _request(None), limit=4) == []


async def test_another_users_session_is_a_permanent_error(database: Database) -> None:
    session = await SessionStore(database).create(user_id="alice")

    with pytest.raises(UnknownSessionError):
        await load_history(database, _request(session.session_id, user="bob"), limit=10)
    with pytest.raises(UnknownSessionError):
        await load_history(database, _request(session.session_id, user="bob"), limit=0)


async def test_a_session_deleted_during_the_task_does_not_fail_it(database: Database) -> None:
    store = SessionStore(database)
    session = await store.create(user_id="alice")
    await store.delete(session.session_id, user_id="alice")

    await remember_exchange(database, _request(session.session_id), task_id="t", answer="a")


async def test_an_unreachable_database_is_a_transient_error() -> None:
    database = Database(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(StorageUnavailableError):
            await load_history(database, _request("some-session"), limit=10)
    finally:
        await database.aclose()
