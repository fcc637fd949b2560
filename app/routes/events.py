"""``/api/v1/agents/tasks/{task_id}/events``: a task's events as Server-Sent Events.

Everything that can refuse the request (auth, ownership, a malformed cursor, Redis unable to
subscribe) is decided before the stream starts, so a refusal is a plain JSON 4xx/5xx. Then the
client gets every event after its cursor (``Last-Event-ID``, or ``?last_event_id=`` for clients
that cannot set headers), heartbeat comments while nothing happens, and the stream closes after
the terminal event. Each event's frame is encoded once and shared by all its listeners, and what
a client has queued goes out in one write.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from app.deps import ServicesDep, StreamUser
from app.errors import InvalidCursorError, ServiceUnavailableError
from app.task_records import find_owned_task
from streaming.events import InvalidEventIdError, parse_event_id
from streaming.hub import StreamUnavailableError
from streaming.subscription import Subscription

router = APIRouter(prefix="/api/v1/agents/tasks", tags=["tasks"])


async def _frames(subscription: Subscription, cursor: str | None) -> AsyncIterator[bytes]:
    async for batch in subscription.batches(after=cursor):
        yield b"".join(event.sse for event in batch)


class _SubscriptionStream(EventSourceResponse):
    """An SSE response that always closes its subscription, however the response ends: even when
    the client is gone before the first frame, when the body generator never starts."""

    def __init__(self, subscription: Subscription, cursor: str | None, **kwargs: Any) -> None:
        super().__init__(_frames(subscription, cursor), **kwargs)
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._subscription.close()


@router.get(
    "/{task_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_task_events(
    task_id: str,
    user: StreamUser,
    services: ServicesDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(max_length=64)] = None,
) -> EventSourceResponse:
    await find_owned_task(services.records, task_id, owner=user.user_id)
    cursor = last_event_id_header or last_event_id or None
    if cursor is not None:
        try:
            parse_event_id(cursor)
        except InvalidEventIdError as exc:
            raise InvalidCursorError(str(exc)) from exc
    try:
        subscription = await services.hub.subscribe(task_id)
    except StreamUnavailableError as exc:
        raise ServiceUnavailableError(str(exc)) from exc
    settings = services.settings
    return _SubscriptionStream(
        subscription,
        cursor,
        ping=settings.sse_heartbeat_seconds,
        send_timeout=settings.sse_send_timeout,
        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"},
    )
