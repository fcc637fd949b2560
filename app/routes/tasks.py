"""``/api/v1/agents/tasks/{task_id}``: polling, and cancelling, a task the caller owns.

Unknown ids, malformed ids and other users' tasks all get the same 404, never a made-up PENDING.
"""

import orjson
from fastapi import APIRouter, status
from redis.exceptions import RedisError

from app.deps import CurrentUser, ServicesDep
from app.errors import ServiceUnavailableError, error_responses
from app.schemas import TaskStatus
from app.services import Services
from app.task_records import find_owned_task
from app.task_status import read_task_status
from storage.audit import AuditAction
from streaming.cancellation import request_cancel

router = APIRouter(prefix="/api/v1/agents/tasks", tags=["tasks"])

_FINAL = {"completed", "failed", "cancelled"}


#: What an unreachable or failing Redis raises, and a record in it that is not JSON (written by
#: something else than Celery's JSON backend): the store's trouble, a 503. Anything else is a bug
#: of ours and must surface as one (a 500, reported to Sentry), not hide behind a 503.
_STORE_ERRORS = (RedisError, OSError, TimeoutError, orjson.JSONDecodeError)


async def _status(services: Services, task_id: str) -> TaskStatus:
    try:
        return await read_task_status(services.backend, services.redis, task_id)
    except _STORE_ERRORS as exc:
        raise ServiceUnavailableError("task store unavailable") from exc


@router.get("/{task_id}", responses=error_responses(401, 404, 503))
async def get_task(task_id: str, user: CurrentUser, services: ServicesDep) -> TaskStatus:
    await find_owned_task(services.records, task_id, owner=user.user_id)
    return await _status(services, task_id)


@router.post(
    "/{task_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 404, 413, 503),
)
async def cancel_task(task_id: str, user: CurrentUser, services: ServicesDep) -> TaskStatus:
    """Ask the task to stop; answers its status at once (``cancelled`` follows when it stops).

    A queued task never calls the LLM; a running one has its LLM stream closed and ends with a
    ``cancelled`` event carrying the partial answer. Cancelling a finished task changes nothing
    (and is audited as such: ``details.requested`` is false).
    """
    await find_owned_task(services.records, task_id, owner=user.user_id)
    current = await _status(services, task_id)
    requested = current.status not in _FINAL
    if requested:
        try:
            await request_cancel(services.redis, task_id, ttl=services.settings.task_data_ttl)
        except _STORE_ERRORS as exc:
            raise ServiceUnavailableError("cancel could not be sent; try again") from exc
    await services.audit.record(
        AuditAction.TASK_CANCEL,
        user_id=user.user_id,
        resource_type="task",
        resource_id=task_id,
        details={"requested": requested, "status": current.status},
    )
    return current
