"""``/api/v1/agents/tasks/{task_id}``: polling a task the caller owns.

Unknown ids, malformed ids and other users' tasks all get the same 404, never a made-up PENDING.
"""

import re

from fastapi import APIRouter

from app.deps import CurrentUser, ServicesDep
from app.errors import NotFoundError, ServiceUnavailableError
from app.schemas import TaskStatus
from app.task_status import read_task_status

router = APIRouter(prefix="/api/v1/agents/tasks", tags=["tasks"])

_TASK_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@router.get("/{task_id}")
async def get_task(task_id: str, user: CurrentUser, services: ServicesDep) -> TaskStatus:
    if not _TASK_ID.match(task_id):
        raise NotFoundError("task not found")
    try:
        record = await services.records.get_owned(task_id, owner=user.user_id)
        state = None if record is None else await read_task_status(services.backend, task_id)
    except Exception as exc:
        raise ServiceUnavailableError("task store unavailable") from exc
    if state is None:
        raise NotFoundError("task not found")
    return state
