"""SessionStore against a real database (SQLite, and PostgreSQL where a server answers)."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from storage.database import Database
from storage.models import ConversationSession, SessionMessage, utcnow
from storage.sessions import SessionCapReachedError, SessionNotFoundError, SessionStore

pytestmark = pytest.mark.anyio


async def test_exchange_is_appended_once_per_task(database: Database) -> None:
    store = SessionStore(database)
    session = await store.create(user_id="alice")

    first = await store.append_exchange(
        session.session_id, user_id="alice", task_id="t1", message="hi", answer="hello"
    )
    repeat = await store.append_exchange(
        session.session_id, user_id="alice", task_id="t1", message="hi", answer="hello"
    )
    await store.append_exchange(
        session.session_id, user_id="alice", task_id="t2", message="again", answer="yes"
    )

    assert (first, repeat) == (True, False)
    view = await store.get(session.session_id, user_id="alice")
    assert [(t.role, t.content, t.task_id) for t in view.turns] == [
        ("user", "hi", "t1"),
        ("assistant", "hello", "t1"),
        ("user", "again", "t2"),
        ("assistant", "yes", "t2"),
    ]
    last_two = await store.get(session.session_id, user_id="alice", last=2)
    assert [t.content for t in last_two.turns] == ["again", "yes"]
    assert view.last_activity_at > session.last_activity_at


async def _held(database: Database, user: str) -> int | None:
    """How many sessions ``user`` holds, counted in the database."""
    async with database.session() as db:
        return await db.scalar(
            select(func.count())
            .select_from(ConversationSession)
            .where(ConversationSession.user_id == user)
        )


async def test_a_user_at_the_session_cap_is_refused_until_one_is_deleted(
    database: Database,
) -> None:
    store = SessionStore(database)
    user, other = f"capped-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    held = [await store.create(user_id=user, cap=3) for _ in range(3)]

    with pytest.raises(SessionCapReachedError) as refused:
        await store.create(user_id=user, cap=3)
    assert refused.value.held == 3
    await store.create(user_id=other, cap=3)  # the cap is per user
    await store.create(user_id=user)  # no cap given: none applies

    assert await store.delete(held[0].session_id, user_id=user)
    assert await store.delete(held[1].session_id, user_id=user)
    await store.create(user_id=user, cap=3)  # back under it
    assert await _held(database, user) == 3


async def test_concurrent_creates_at_the_cap_never_pass_it(database: Database) -> None:
    """Twenty creates at once for a user one short of the cap: exactly one gets the last slot,
    the others are refused (the count and the insert are one step per user)."""
    store = SessionStore(database)
    for attempt in range(5):  # the race is in a window between two statements: try it again
        user = f"racing-{attempt}-{uuid.uuid4().hex}"
        for _ in range(2):
            await store.create(user_id=user, cap=3)

        async def create(user: str = user) -> int | None:
            """None when created, else the count of sessions the refusal named."""
            try:
                await store.create(user_id=user, cap=3)
            except SessionCapReachedError as refused:
                return refused.held
            return None

        results = await asyncio.gather(*(create() for _ in range(20)))

        assert sorted(results, key=str) == [3] * 19 + [None], results
        assert await _held(database, user) == 3


async def test_another_users_session_reads_as_missing(database: Database) -> None:
    store = SessionStore(database)
    session = await store.create(user_id="alice")

    with pytest.raises(SessionNotFoundError):
        await store.get(session.session_id, user_id="bob")
    with pytest.raises(SessionNotFoundError):
        await store.append_exchange(
            session.session_id, user_id="bob", task_id="t", message="m", answer="a"
        )
    assert await store.exists(session.session_id, user_id="bob") is False
    assert await store.delete(session.session_id, user_id="bob") is False
    assert await store.exists(session.session_id, user_id="alice") is True


async def test_delete_idle_removes_exactly_the_idle_sessions(database: Database) -> None:
    store = SessionStore(database)
    now = utcnow()
    ids = {}
    for name, idle in [("old1", 30), ("old2", 25), ("fresh", 1), ("edge", 23)]:
        session = await store.create(user_id="alice")
        await store.append_exchange(
            session.session_id, user_id="alice", task_id=name, message=name, answer="a"
        )
        async with database.session() as db, db.begin():
            await db.execute(
                update(ConversationSession)
                .where(ConversationSession.id == session.session_id)
                .values(last_activity_at=now - timedelta(hours=idle))
            )
        ids[name] = session.session_id

    expired = await store.delete_idle(idle_since=now - timedelta(hours=24), batch=1)

    assert (expired.sessions, expired.messages) == (2, 4)
    for name in ("fresh", "edge"):
        assert await store.exists(ids[name], user_id="alice")
    for name in ("old1", "old2"):
        assert not await store.exists(ids[name], user_id="alice")
    async with database.session() as db:
        remaining = await db.scalar(select(func.count()).select_from(SessionMessage))
    assert remaining == 4
    again = await store.delete_idle(idle_since=now - timedelta(hours=24))
    assert (again.sessions, again.messages) == (0, 0)


async def test_a_nul_in_an_answer_is_kept_as_a_replacement_character(database: Database) -> None:
    """PostgreSQL refuses NUL in text; a plugin agent's answer may hold one."""
    store = SessionStore(database)
    session = await store.create(user_id="alice")

    await store.append_exchange(
        session.session_id, user_id="alice", task_id="t1", message="say nul", answer="a\x00b"
    )

    view = await store.get(session.session_id, user_id="alice")
    assert [t.content for t in view.turns] == ["say nul", "a\ufffdb"]
