"""Conversation sessions: who owns one, its earlier turns, and appending a task's exchange.

Ownership is part of every query (``user_id = ...``): another user's session reads exactly like
one that does not exist, so the API can answer 404 without a separate check to forget.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from storage.database import SessionSource
from storage.models import ConversationSession, SessionMessage, utcnow


class SessionNotFoundError(LookupError):
    """No such session for this user (it may belong to someone else, or have expired)."""


class SessionCapReachedError(Exception):
    """The user holds as many sessions as one user may."""

    def __init__(self, held: int) -> None:
        super().__init__(f"{held} sessions held")
        self.held = held


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str
    task_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SessionView:
    session_id: str
    user_id: str
    created_at: datetime
    last_activity_at: datetime
    turns: list[Turn]


@dataclass(frozen=True, slots=True)
class ExpiredSessions:
    sessions: int
    messages: int


class SessionStore:
    def __init__(self, database: SessionSource) -> None:
        self._db = database

    async def create(self, *, user_id: str, cap: int = 0) -> SessionView:
        """A new empty session; with a ``cap`` (> 0), ``SessionCapReachedError`` instead when
        ``user_id`` holds that many already.

        The count and the insert are one statement (``INSERT ... SELECT ... WHERE count < cap``),
        so two creates at the same moment cannot both take the cap's last slot: SQLite takes its
        write lock when such a statement starts, and on PostgreSQL a user's creates first wait
        for each other on a transaction-scoped advisory lock (under READ COMMITTED, two
        statements at once would both count the rows committed before either)."""
        now = utcnow()
        view = SessionView(uuid.uuid4().hex, user_id, now, now, [])
        async with self._db.session() as db, db.begin():
            if cap <= 0:
                db.add(
                    ConversationSession(
                        id=view.session_id, user_id=user_id, created_at=now, last_activity_at=now
                    )
                )
                return view
            if db.get_bind().dialect.name == "postgresql":
                await db.execute(
                    select(
                        func.pg_advisory_xact_lock(func.hashtextextended(f"sessions:{user_id}", 0))
                    )
                )
            held = (
                select(func.count())
                .select_from(ConversationSession)
                .where(ConversationSession.user_id == user_id)
                .scalar_subquery()
            )
            connection = await db.connection()  # its result carries the rows inserted
            created = await connection.execute(
                insert(ConversationSession).from_select(
                    ["id", "user_id", "created_at", "last_activity_at"],
                    select(
                        literal(view.session_id, ConversationSession.id.type),
                        literal(user_id, ConversationSession.user_id.type),
                        literal(now, ConversationSession.created_at.type),
                        literal(now, ConversationSession.last_activity_at.type),
                    ).where(held < cap),
                )
            )
            if created.rowcount == 0:
                raise SessionCapReachedError(await db.scalar(select(held)) or 0)
        return view

    async def exists(self, session_id: str, *, user_id: str) -> bool:
        async with self._db.session() as db:
            found = await db.scalar(
                select(ConversationSession.id).where(
                    ConversationSession.id == session_id, ConversationSession.user_id == user_id
                )
            )
        return found is not None

    async def get(
        self,
        session_id: str,
        *,
        user_id: str,
        last: int | None = None,
        exclude_task: str | None = None,
    ) -> SessionView:
        """The session with its turns (the ``last`` ones when given, leaving out those of
        ``exclude_task``), oldest first."""
        async with self._db.session() as db:
            row = await db.scalar(
                select(ConversationSession).where(
                    ConversationSession.id == session_id, ConversationSession.user_id == user_id
                )
            )
            if row is None:
                raise SessionNotFoundError(session_id)
            query = (
                select(SessionMessage)
                .where(SessionMessage.session_id == session_id)
                .order_by(SessionMessage.id.desc())
            )
            if exclude_task is not None:
                query = query.where(SessionMessage.task_id != exclude_task)
            if last is not None:
                query = query.limit(last)
            messages = list(reversed((await db.scalars(query)).all()))
        turns = [Turn(m.role, m.content, m.task_id, m.created_at) for m in messages]
        return SessionView(row.id, row.user_id, row.created_at, row.last_activity_at, turns)

    async def answer_of(self, session_id: str, *, task_id: str) -> str | None:
        """The answer ``task_id`` appended to the session, if it did (a delivery of a task that
        got that far before its worker died)."""
        async with self._db.session() as db:
            return await db.scalar(
                select(SessionMessage.content).where(
                    SessionMessage.session_id == session_id,
                    SessionMessage.task_id == task_id,
                    SessionMessage.role == "assistant",
                )
            )

    async def append_exchange(
        self, session_id: str, *, user_id: str, task_id: str, message: str, answer: str
    ) -> bool:
        """Append a task's question and answer and touch the session; False if this task's
        exchange is already there (a redelivery). Raises ``SessionNotFoundError``.

        A NUL (which PostgreSQL refuses in text; a plugin agent's answer may hold one) is kept
        as U+FFFD, as the built-in LLM client keeps it, instead of failing the task."""
        now = utcnow()
        message, answer = _storable(message), _storable(answer)
        try:
            async with self._db.session() as db, db.begin():
                touched = await db.execute(
                    update(ConversationSession)
                    .where(
                        ConversationSession.id == session_id,
                        ConversationSession.user_id == user_id,
                    )
                    .values(last_activity_at=now)
                )
                if touched.rowcount == 0:  # type: ignore[attr-defined]
                    raise SessionNotFoundError(session_id)
                db.add_all(
                    [
                        SessionMessage(
                            session_id=session_id,
                            task_id=task_id,
                            role="user",
                            content=message,
                            created_at=now,
                        ),
                        SessionMessage(
                            session_id=session_id,
                            task_id=task_id,
                            role="assistant",
                            content=answer,
                            created_at=now,
                        ),
                    ]
                )
        except IntegrityError:
            return False
        return True

    async def delete(self, session_id: str, *, user_id: str) -> bool:
        async with self._db.session() as db, db.begin():
            owned = await db.scalar(
                select(ConversationSession.id).where(
                    ConversationSession.id == session_id, ConversationSession.user_id == user_id
                )
            )
            if owned is None:
                return False
            # The turns go with it: ON DELETE CASCADE.
            await db.execute(
                delete(ConversationSession).where(ConversationSession.id == session_id)
            )
        return True

    async def delete_idle(self, *, idle_since: datetime, batch: int = 500) -> ExpiredSessions:
        """Delete every session whose last activity is before ``idle_since``, with its turns.

        In batches (short transactions). Each batch locks its sessions (``FOR UPDATE``; SQLite
        locks the whole database for the write anyway), so a task appending to one of them waits,
        then finds it gone, instead of keeping a session whose turns were just deleted.
        """
        sessions = messages = 0
        while True:
            async with self._db.session() as db, db.begin():
                ids = list(
                    (
                        await db.scalars(
                            select(ConversationSession.id)
                            .where(ConversationSession.last_activity_at < idle_since)
                            .order_by(ConversationSession.id)
                            .limit(batch)
                            .with_for_update(skip_locked=True)
                        )
                    ).all()
                )
                if not ids:
                    return ExpiredSessions(sessions=sessions, messages=messages)
                turns = await db.execute(
                    delete(SessionMessage).where(SessionMessage.session_id.in_(ids))
                )
                removed = await db.execute(
                    delete(ConversationSession).where(ConversationSession.id.in_(ids))
                )
                messages += turns.rowcount or 0  # type: ignore[attr-defined]
                sessions += removed.rowcount or 0  # type: ignore[attr-defined]


def _storable(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
