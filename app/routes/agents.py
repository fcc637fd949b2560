"""``/api/v1/agents``: which agents exist, and submitting an invocation of one.

Submitting checks everything before anything is written: the caller, the agent, the body's shape
and sizes. Then it records the task's owner and opens its event log with ``status: queued``, and
only then queues it, so a task never runs without an owner record. The answer's ``stream_url``
carries a token that opens this task's stream only (for browsers' EventSource).
"""

import uuid

import orjson
from fastapi import APIRouter, Response, status

from app.deps import CurrentUser, ServicesDep
from app.errors import NotFoundError, PayloadTooLargeError, ServiceUnavailableError
from app.schemas import AgentInfo, AgentList, InvokeRequest, TaskAccepted
from app.submission import INVOKE_AGENT_ASYNC, INVOKE_AGENT_WITH_STREAMING, SubmissionError
from app.task_records import new_record
from streaming.events import EventType
from worker.agents.catalog import AGENT_CATALOG

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])


def task_urls(task_id: str, *, stream_token: str) -> tuple[str, str]:
    base = f"/api/v1/agents/tasks/{task_id}"
    return base, f"{base}/events?token={stream_token}"


@router.get("")
async def list_agents(_: CurrentUser) -> AgentList:
    return AgentList(
        agents=[
            AgentInfo(id=spec.id, description=spec.description) for spec in AGENT_CATALOG.values()
        ]
    )


@router.post("/{agent_id}/invoke-async", status_code=status.HTTP_202_ACCEPTED)
async def invoke_async(
    agent_id: str,
    body: InvokeRequest,
    user: CurrentUser,
    services: ServicesDep,
    response: Response,
) -> TaskAccepted:
    if agent_id not in AGENT_CATALOG:
        raise NotFoundError(f"unknown agent {agent_id!r}; GET /api/v1/agents lists them")
    settings = services.settings
    if len(body.message.encode()) > settings.max_message_bytes:
        raise PayloadTooLargeError(loc=("body", "message"), limit=settings.max_message_bytes)
    if body.metadata is not None and len(orjson.dumps(body.metadata)) > settings.max_metadata_bytes:
        raise PayloadTooLargeError(loc=("body", "metadata"), limit=settings.max_metadata_bytes)

    task_id = str(uuid.uuid4())
    task_name = INVOKE_AGENT_WITH_STREAMING if body.stream else INVOKE_AGENT_ASYNC
    record = new_record(task_id=task_id, owner=user.user_id, agent_id=agent_id, task_name=task_name)
    kwargs = {
        "agent_id": agent_id,
        "message": body.message,
        "user_id": user.user_id,
        "session_id": body.session_id,
        "metadata": body.metadata,
    }
    try:
        await services.records.create(record)
        await services.events.append(task_id, [(EventType.STATUS, {"status": "queued"})])
    except Exception as exc:
        raise ServiceUnavailableError("task store unavailable; nothing was queued") from exc
    try:
        await services.submitter.submit(task_name, task_id=task_id, kwargs=kwargs)
    except SubmissionError as exc:
        await services.records.delete(task_id)
        raise ServiceUnavailableError(f"{exc}; nothing was queued") from exc

    token = services.tokens.issue(user_id=user.user_id, task_id=task_id)
    status_url, stream_url = task_urls(task_id, stream_token=token)
    response.headers["Location"] = status_url
    return TaskAccepted(task_id=task_id, status_url=status_url, stream_url=stream_url)
