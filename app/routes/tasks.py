"""``/api/v1/agents/tasks/{task_id}``: polling a task the caller owns.

Unknown ids, malformed ids and other users' tasks all get the same 404, never a made-up PENDING.
"""

from fastapi import APIRouter

from app.deps import CurrentUser, ServicesDep
from app.errors import ServiceUnavailableError
from app.schemas import TaskStatus
from app.task_records import find_owned_task
from app.task_status import read_task_status

router = APIRouter(prefix="/api/v1/agents/tasks", tags=["tasks"])


@router.get("/{task_id}")
async def get_task(task_id: str, user: CurrentUser, services: ServicesDep) -> TaskStatus:
    await find_owned_task(services.records, task_id, owner=user.user_id)
    try:
        return await read_task_status(services.backend, task_id)
    except Exception as exc:
        raise ServiceUnavailableError("task store unavailable") from exc
