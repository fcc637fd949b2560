"""``/api/v1/sessions``: conversations whose earlier turns an agent receives.

Create one, pass its ``session_id`` when invoking, and each completed task appends its question
and answer. A session belongs to its creator: anyone else gets 404, as for an unknown id. Sessions
idle longer than ``SESSION_EXPIRY_HOURS`` are deleted by the ``cleanup_expired_sessions`` task.
"""

import re

from fastapi import APIRouter, Response, status

from app.caps import CapReachedError
from app.deps import CurrentUser, ServicesDep
from app.errors import NotFoundError, error_responses
from app.schemas import SessionMessageOut, SessionOut
from storage.audit import AuditAction
from storage.sessions import SessionCapReachedError, SessionNotFoundError, SessionView

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])
#: Seconds a user refused a session is told to wait: a slot frees when they delete one.
SESSION_CAP_RETRY_AFTER = 60

#: Ids we issue are 32 hex digits; anything else (too long, a NUL, a slash) is not ours and gets
#: 404 without a query the database might refuse.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _out(view: SessionView) -> SessionOut:
    return SessionOut(
        session_id=view.session_id,
        created_at=view.created_at,
        last_activity_at=view.last_activity_at,
        messages=[
            SessionMessageOut(
                role=t.role, content=t.content, task_id=t.task_id, created_at=t.created_at
            )
            for t in view.turns
        ],
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses=error_responses(401, 413, 429, 503))
async def create_session(
    user: CurrentUser, services: ServicesDep, response: Response
) -> SessionOut:
    cap = services.settings.max_sessions_per_user
    try:
        view = await services.sessions.create(user_id=user.user_id, cap=cap)
    except SessionCapReachedError as exc:
        raise CapReachedError(
            f"you have {exc.held} sessions, the most one user may have "
            "(MAX_SESSIONS_PER_USER); delete one first (idle ones expire)",
            cap="sessions",
            limit=cap,
            retry_after=SESSION_CAP_RETRY_AFTER,
        ) from exc
    await services.audit.record(
        AuditAction.SESSION_CREATE,
        user_id=user.user_id,
        resource_type="session",
        resource_id=view.session_id,
    )
    response.headers["Location"] = f"{router.prefix}/{view.session_id}"
    return _out(view)


@router.get("/{session_id}", responses=error_responses(401, 404, 503))
async def get_session(session_id: str, user: CurrentUser, services: ServicesDep) -> SessionOut:
    if not SESSION_ID.fullmatch(session_id):
        raise NotFoundError("session not found")
    try:
        view = await services.sessions.get(session_id, user_id=user.user_id)
    except SessionNotFoundError:
        raise NotFoundError("session not found") from None
    return _out(view)


@router.delete(
    "/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 503),
)
async def delete_session(session_id: str, user: CurrentUser, services: ServicesDep) -> Response:
    if not SESSION_ID.fullmatch(session_id) or not await services.sessions.delete(
        session_id, user_id=user.user_id
    ):
        raise NotFoundError("session not found")
    await services.audit.record(
        AuditAction.SESSION_DELETE,
        user_id=user.user_id,
        resource_type="session",
        resource_id=session_id,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
