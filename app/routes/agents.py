"""``/api/v1/agents``: which agents exist, and submitting an invocation of one.

Submitting checks everything before anything is written: the caller, the agent, the body's shape
and sizes, and that a ``session_id`` names one of the caller's sessions. Then it records the
task's owner and opens its event log with ``status: queued``, and only then queues it, so a task
never runs without an owner record. The answer's ``stream_url``
carries a token that opens this task's stream only (for browsers' EventSource). With an
``Idempotency-Key``, a repeat of the same request answers the task the first one created. Each
submit that creates a task leaves an audit row (``task.submit``), failed ones too.
"""

import time
import uuid
from contextlib import suppress
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Path, Response, status
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.auth import Principal
from app.caps import CapReachedError
from app.deps import CurrentUser, ServicesDep
from app.errors import (
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    error_responses,
)
from app.idempotency import MAX_KEY_LENGTH, fingerprint
from app.schemas import AgentInfo, AgentList, InvokeRequest, TaskAccepted
from app.services import Services
from app.storable import printable
from app.submission import SubmissionError
from app.task_records import new_record
from contract.tasks import (
    AGENT_QUEUE,
    INVOKE_AGENT_ASYNC,
    INVOKE_AGENT_WITH_STREAMING,
    agent_task_kwargs,
)
from storage.audit import AuditAction, AuditOutcome

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

#: Longest agent id a path may name; agents' ids are short names.
MAX_AGENT_ID_LENGTH = 128

AgentId = Annotated[
    str, Path(min_length=1, max_length=MAX_AGENT_ID_LENGTH, description="An id from GET /agents.")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[ -~]+$",
        description="Retry-safe submit: the same key and body within 24 h is one task "
        f"(1 to {MAX_KEY_LENGTH} printable ASCII characters).",
    ),
]


def task_urls(task_id: str, *, stream_token: str) -> tuple[str, str]:
    base = f"/api/v1/agents/tasks/{task_id}"
    return base, f"{base}/events?token={stream_token}"


@router.get("", responses=error_responses(401, 503))
async def list_agents(_: CurrentUser, services: ServicesDep) -> AgentList:
    return AgentList(
        agents=[
            AgentInfo(id=spec.id, description=spec.description)
            for spec in await services.catalog.all()
        ]
    )


@router.post(
    "/{agent_id}/invoke-async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    responses=error_responses(401, 404, 409, 413, 422, 429, 503),
)
async def invoke_async(
    agent_id: AgentId,
    body: InvokeRequest,
    user: CurrentUser,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    if await services.catalog.get(agent_id) is None:
        raise NotFoundError(
            f"unknown agent {printable(agent_id, limit=64)!r}; GET /api/v1/agents lists them"
        )
    settings = services.settings
    if len(body.message.encode()) > settings.max_message_bytes:
        raise PayloadTooLargeError(loc=("body", "message"), limit=settings.max_message_bytes)
    if body.metadata is not None and len(orjson.dumps(body.metadata)) > settings.max_metadata_bytes:
        raise PayloadTooLargeError(loc=("body", "metadata"), limit=settings.max_metadata_bytes)
    if body.session_id is not None:
        await _check_session(services, body.session_id, user_id=user.user_id)

    task_id = str(uuid.uuid4())
    request_fingerprint = fingerprint({"agent_id": agent_id, **body.model_dump()})
    if idempotency_key is not None:
        claimed = await _claim(
            services, user.user_id, idempotency_key, request_fingerprint, task_id=task_id
        )
        if claimed != task_id:
            return _accepted(services, user=user, task_id=claimed, replayed=True)[0]
    audit = {
        "agent_id": agent_id,
        "session_id": body.session_id,
        "stream": body.stream,
        "priority": body.priority,
    }
    try:
        await _accept(services, user_id=user.user_id, agent_id=agent_id, body=body, task_id=task_id)
    except (CapReachedError, ServiceUnavailableError) as exc:
        if idempotency_key is not None:
            with suppress(RedisError, OSError):  # it expires anyway
                await services.idempotency.release(user_id=user.user_id, key=idempotency_key)
        if isinstance(exc, ServiceUnavailableError):
            await services.audit.record(
                AuditAction.TASK_SUBMIT,
                user_id=user.user_id,
                resource_type="task",
                resource_id=task_id,
                outcome=AuditOutcome.FAILURE,
                details={**audit, "error": str(exc)},
            )
        raise
    if idempotency_key is not None:
        await services.idempotency.mark_queued(
            user_id=user.user_id,
            key=idempotency_key,
            request_fingerprint=request_fingerprint,
            task_id=task_id,
        )
    accepted, stream_token_jti = _accepted(services, user=user, task_id=task_id)
    await services.audit.record(
        AuditAction.TASK_SUBMIT,
        user_id=user.user_id,
        resource_type="task",
        resource_id=task_id,
        details={**audit, "stream_token_jti": stream_token_jti},
    )
    return accepted


async def _check_session(services: Services, session_id: str, *, user_id: str) -> None:
    try:
        owned = await services.sessions.exists(session_id, user_id=user_id)
    except (SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailableError("session store unavailable; nothing was queued") from exc
    if not owned:
        raise NotFoundError(
            f"unknown session {printable(session_id, limit=64)!r}; "
            "POST /api/v1/sessions creates one"
        )


async def _claim(
    services: Services, user_id: str, key: str, request_fingerprint: str, *, task_id: str
) -> str:
    try:
        return await services.idempotency.claim(
            user_id=user_id, key=key, request_fingerprint=request_fingerprint, task_id=task_id
        )
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError("task store unavailable; nothing was queued") from exc


async def _accept(
    services: Services, *, user_id: str, agent_id: str, body: InvokeRequest, task_id: str
) -> None:
    """Record, count and queue the task (``app.acceptance``); nothing is left when it fails."""
    task_name = INVOKE_AGENT_WITH_STREAMING if body.stream else INVOKE_AGENT_ASYNC
    kwargs = agent_task_kwargs(
        agent_id=agent_id,
        message=body.message,
        user_id=user_id,
        session_id=body.session_id,
        metadata=body.metadata,
    )
    record = new_record(
        task_id=task_id,
        owner=user_id,
        agent_id=agent_id,
        task_name=task_name,
        queue=AGENT_QUEUE,
        kwargs=kwargs,
        priority=body.priority,
    )
    try:
        await services.acceptance.accept(record, priority=body.priority)
    except SubmissionError as exc:
        raise ServiceUnavailableError(f"{exc}; nothing was queued") from exc
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError("task store unavailable; nothing was queued") from exc


def _accepted(
    services: Services, *, user: Principal, task_id: str, replayed: bool = False
) -> tuple[Response, str]:
    """The 202 response, with a fresh stream token, and that token's ``jti`` (for the audit
    row). Encoded here, once: FastAPI would validate the model again and encode it with the
    standard library's ``json`` (bench/README.md, "Shared round trips").

    The stream token never outlives the credential of the submit (an access token's expiry).
    """
    ttl = services.settings.stream_token_ttl
    if user.expires_at is not None:
        ttl = max(1, min(ttl, user.expires_at - int(time.time())))
    issued = services.tokens.issue(user_id=user.user_id, task_id=task_id, ttl=ttl)
    status_url, stream_url = task_urls(task_id, stream_token=issued.token)
    accepted = TaskAccepted(task_id=task_id, status_url=status_url, stream_url=stream_url)
    headers = {"Location": status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    response = Response(
        accepted.model_dump_json(),
        status_code=status.HTTP_202_ACCEPTED,
        headers=headers,
        media_type="application/json",
    )
    return response, issued.claims.jti
