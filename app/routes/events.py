"""``/api/v1/agents/tasks/{task_id}/events``: a task's events as Server-Sent Events.

Everything that can refuse the request (auth, ownership, a malformed cursor, Redis unable to
subscribe) is decided before the stream starts, so a refusal is a plain JSON 4xx/5xx. Then the
client gets every event after its cursor (``Last-Event-ID``, or ``?last_event_id=`` for clients
that cannot set headers), heartbeat comments while nothing happens, and the stream closes after
the terminal event. Each event's frame is encoded once and shared by all its listeners, and what
a client has queued goes out in one write (``app.sse``).
"""

from typing import Annotated

from fastapi import APIRouter, Header, Query

from app.deps import ServicesDep, StreamUser
from app.errors import InvalidCursorError, ServiceUnavailableError
from app.sse import SubscriptionResponse
from app.task_records import find_owned_task
from streaming.events import InvalidEventIdError, parse_event_id
from streaming.hub import StreamUnavailableError

router = APIRouter(prefix="/api/v1/agents/tasks", tags=["tasks"])


@router.get(
    "/{task_id}/events",
    response_class=SubscriptionResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_task_events(
    task_id: str,
    user: StreamUser,
    services: ServicesDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(max_length=64)] = None,
) -> SubscriptionResponse:
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
    return services.relay.response(subscription, after=cursor, headers={"X-Accel-Buffering": "no"})
