"""A session's memory as the agent task sees it: earlier turns in, the new exchange out.

The task reads the session's last ``SESSION_HISTORY_MESSAGES`` turns before the call (they go to
the LLM ahead of the new message) and appends its question and answer once it has the answer,
before its outcome is stored. Appending is idempotent per task, so a redelivered task does not
repeat itself in the history; and a delivery that finds the task's answer already in the session
(its worker died between the two) takes that answer as its result instead of calling the LLM
again, so the session and the result agree.
Database errors leave here as ``worker.errors``: unreachable is transient (the task is retried);
a session that is not the user's, or data the database refuses, is permanent. A session deleted
while its task ran (by its owner, or by expiry) does not fail the task: the answer stands, and
there is nothing left to append to.
"""

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from storage.database import SessionSource
from storage.sessions import SessionNotFoundError, SessionStore
from worker.agents.base import AgentRequest, ChatMessage
from worker.errors import SessionStorageError, StorageUnavailableError, UnknownSessionError
from worker.observability.logs import log_event

logger = logging.getLogger("agent_service.worker.sessions")

T = TypeVar("T")
_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
}


async def _translated(session_id: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except SessionNotFoundError:
        raise UnknownSessionError(
            f"session {session_id!r} does not exist for this user (or has expired)"
        ) from None
    except (OperationalError, InterfaceError, PoolTimeoutError, OSError) as exc:
        raise StorageUnavailableError(f"session store unavailable: {exc!r}") from exc
    except SQLAlchemyError as exc:  # the database refused this data: trying again won't help
        raise SessionStorageError(f"session store refused the exchange: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class SessionContext:
    #: The session's last turns, oldest first, without this task's own exchange.
    history: list[ChatMessage]
    #: This task's answer, if an earlier delivery appended it already.
    earlier_answer: str | None = None


async def load_history(
    database: SessionSource, request: AgentRequest, *, task_id: str, limit: int
) -> SessionContext:
    """The session's last ``limit`` turns (none without a session), leaving out this task's own
    exchange, which a delivery after the append committed finds as ``earlier_answer``."""
    if request.session_id is None:
        return SessionContext(history=[])
    store = SessionStore(database)
    view = await _translated(
        request.session_id,
        store.get(request.session_id, user_id=request.user_id, last=limit, exclude_task=task_id),
    )
    earlier = await _translated(
        request.session_id, store.answer_of(request.session_id, task_id=task_id)
    )
    history = [
        ChatMessage(role=_ROLES[turn.role], content=turn.content)
        for turn in view.turns
        if turn.role in _ROLES
    ]
    return SessionContext(history=history, earlier_answer=earlier)


async def remember_exchange(
    database: SessionSource, request: AgentRequest, *, task_id: str, answer: str
) -> None:
    """Append the task's question and answer to its session (no-op without one)."""
    if request.session_id is None:
        return
    try:
        await _translated(
            request.session_id,
            SessionStore(database).append_exchange(
                request.session_id,
                user_id=request.user_id,
                task_id=task_id,
                message=request.message,
                answer=answer,
            ),
        )
    except UnknownSessionError:
        log_event(
            logger,
            logging.WARNING,
            "session_gone_before_append",
            task_id=task_id,
            session_id=request.session_id,
        )
