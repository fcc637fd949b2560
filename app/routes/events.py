"""``/api/v1/agents/tasks/{task_id}/events``: a task's events as Server-Sent Events.

Everything that can refuse the request (auth, ownership, a cursor that is not an event of the
task's log, Redis unable to subscribe) is decided before the stream starts, so a refusal is a
plain JSON 4xx/5xx. Then the client gets every event after its cursor (``Last-Event-ID``, or
``?last_event_id=`` for clients that cannot set headers), heartbeat comments while nothing
happens, and the stream closes after the terminal event. Each event's frame is encoded once and
shared by all its listeners, and what a client has queued goes out in one write (``app.sse``).

A cursor after the log's newest event was never sent by this task: waiting for events after it
would skip everything up to it (the outcome included) and never end, so it is refused.
"""

from typing import Annotated

from fastapi import APIRouter, Header, Query
from redis.exceptions import RedisError

from app.deps import ServicesDep, StreamUser
from app.errors import InvalidCursorError, ServiceUnavailableError, error_responses
from app.services import Services
from app.sse import SubscriptionResponse
from app.task_records import find_owned_task
from streaming.event_log import EventLogReader
from streaming.events import InvalidEventIdError, parse_event_id
from streaming.hub import StreamUnavailableError

router = APIRouter(prefix="/api/v1/agents/tasks", tags=["tasks"])

#: An event id as the stream sends it (``<milliseconds>-<sequence>``), or nothing.
EVENT_ID_PATTERN = r"^([0-9]{1,20}-[0-9]{1,20})?$"
#: One event of the stream (heartbeats are comments, not events).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]{1,20}-[0-9]{1,20}$"},
        "event": {
            "type": "string",
            "description": "status, progress, chunk, reset, result, error or cancelled; the last "
            "three end the stream. Ignore types you do not know: new ones may be added.",
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


@router.get(
    "/{task_id}/events",
    status_code=200,
    response_class=SubscriptionResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"itemSchema": EVENT_SCHEMA}},
            "description": "The task's events after the cursor, until a terminal one.",
        },
        **error_responses(401, 404, 422, 429, 503),
    },
)
async def stream_task_events(
    task_id: str,
    user: StreamUser,
    services: ServicesDep,
    last_event_id_header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=41,
            pattern=EVENT_ID_PATTERN,
            description="Resume after this event (the id of the last one received).",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(
            max_length=41,
            pattern=EVENT_ID_PATTERN,
            description="The same, for clients that cannot set headers.",
        ),
    ] = None,
) -> SubscriptionResponse:
    await find_owned_task(services.records, task_id, owner=user.user_id)
    cursor = last_event_id_header or last_event_id or None
    if cursor is not None:
        await _check_cursor(services, task_id, cursor, in_query=not last_event_id_header)
    try:
        subscription = await services.hub.subscribe(task_id)
    except StreamUnavailableError as exc:
        raise ServiceUnavailableError(str(exc)) from exc
    return services.relay.response(subscription, after=cursor, headers={"X-Accel-Buffering": "no"})


async def _check_cursor(services: Services, task_id: str, cursor: str, *, in_query: bool) -> None:
    """Refuse a cursor that is not an event id, or is after the task's newest event."""
    try:
        order = parse_event_id(cursor)
    except InvalidEventIdError as exc:
        raise InvalidCursorError(str(exc), in_query=in_query) from exc
    try:
        newest = await EventLogReader(services.redis).last(task_id)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError("task store unavailable") from exc
    if newest is None or order > newest.order:
        raise InvalidCursorError(
            f"{cursor!r} is after this task's newest event: resume from an id the stream sent",
            in_query=in_query,
        )
