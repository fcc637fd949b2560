"""Session memory as the agent task uses it, on a real database."""

import pytest

from scripts.embedded_redis import free_port
from storage.database import Database
from storage.sessions import SessionStore
from worker.agents.base import AgentRequest, ChatMessage
from worker.agents.session_memory import load_history, remember_exchange
from worker.errors import SessionStorageError, StorageUnavailableError, UnknownSessionError

pytestmark = pytest.mark.anyio


def _request(session_id: str | None, *, user: str = "alice", message: str = "next") -> AgentRequest:
    return AgentRequest(agent_id="echo", message=message, user_id=user, session_id=session_id)


async def test_history_is_the_last_turns_oldest_first(database: Database) -> None:
    session = await SessionStore(database).create(user_id="alice")
    for n in range(3):
        await remember_exchange(
            database, _request(session.session_id, message=f"q{n}"), task_id=f"t{n}", answer=f"a{n}"
        )

    history = (
        await load_history(database, _request(session.session_id), task_id="t-new", limit=4)
    ).history

    assert history == [
        ChatMessage("user", "q1"),
        ChatMessage("assistant", "a1"),
        ChatMessage("user", "q2"),
        ChatMessage("assistant", "a2"),
    ]
    assert (await load_history(database, _request(None), task_id="t-new", limit=4)).history == []


async def test_another_users_session_is_a_permanent_error(database: Database) -> None:
    session = await SessionStore(database).create(user_id="alice")

    with pytest.raises(UnknownSessionError):
        await load_history(
            database, _request(session.session_id, user="bob"), task_id="t-new", limit=10
        )
    with pytest.raises(UnknownSessionError):
        await load_history(
            database, _request(session.session_id, user="bob"), task_id="t-new", limit=0
        )


async def test_a_session_deleted_during_the_task_does_not_fail_it(database: Database) -> None:
    store = SessionStore(database)
    session = await store.create(user_id="alice")
    history = (
        await load_history(database, _request(session.session_id), task_id="t", limit=5)
    ).history
    await store.delete(session.session_id, user_id="alice")  # while the LLM answers

    await remember_exchange(database, _request(session.session_id), task_id="t", answer="a")

    assert history == []
    assert not await store.exists(session.session_id, user_id="alice")


async def test_a_redelivered_task_finds_its_answer_apart_from_the_history(
    database: Database,
) -> None:
    session = await SessionStore(database).create(user_id="alice")
    await remember_exchange(
        database, _request(session.session_id, message="q0"), task_id="t0", answer="a0"
    )
    await remember_exchange(
        database, _request(session.session_id, message="q1"), task_id="t1", answer="a1"
    )

    context = await load_history(database, _request(session.session_id), task_id="t1", limit=10)

    assert context.history == [ChatMessage("user", "q0"), ChatMessage("assistant", "a0")]
    assert context.earlier_answer == "a1"


async def test_data_the_database_refuses_is_a_permanent_error(database: Database) -> None:
    session = await SessionStore(database).create(user_id="alice")
    too_long_task_id = "t" * 100  # the column holds 64 (PostgreSQL enforces it)
    if database.dialect == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths")

    with pytest.raises(SessionStorageError):
        await remember_exchange(
            database, _request(session.session_id), task_id=too_long_task_id, answer="a"
        )


async def test_an_unreachable_database_is_a_transient_error() -> None:
    database = Database(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(StorageUnavailableError):
            await load_history(database, _request("some-session"), task_id="t-new", limit=10)
    finally:
        await database.aclose()
