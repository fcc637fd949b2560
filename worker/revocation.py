"""Revoking a task, with this service's meaning, whoever asks: ``revoke_task``, Flower's revoke
and terminate buttons, ``celery control revoke``.

Celery's own revoke would break an agent task's promises: a worker marks a queued task REVOKED
and discards it without running it (its stream never gets its ``cancelled`` event), and
``terminate`` raises in the threads pool and kills a prefork child mid-stream. So a revoke of an
agent task is a cancel request (``streaming.cancellation``): a task not yet started ends
``cancelled`` when its delivery claims it, without calling the LLM; with ``terminate`` a running
one is stopped as the cancel endpoint stops it, its LLM stream closed.

``install_revoke_command`` replaces Celery's ``revoke`` control command in a worker (Flower and
``celery control`` broadcast it to every worker; each makes the same idempotent request). Other
tasks (maintenance) keep Celery's meaning: flagged as revoked, discarded when they arrive.
``AgentRevocation`` is the request's side: an agent task flagged as revoked is not discarded
(it runs, and ends at its claim) and is never terminated by Celery.
"""

import logging
from collections.abc import Iterable
from typing import Any

import redis
from celery.utils.functional import maybe_list
from celery.worker import state as worker_state
from celery.worker.control import control_command
from celery.worker.request import Request

from contract.tasks import AGENT_TASK_PREFIX
from streaming.cancellation import request_cancel_blocking
from worker.settings import WorkerSettings, get_settings

logger = logging.getLogger("agent_service.worker.control")
CLIENT_NAME = "agent-service:ops"
#: Seconds a revoke's Redis call may take.
REDIS_TIMEOUT = 5.0


def request_revoke(
    task_ids: Iterable[str], *, terminate: bool, settings: WorkerSettings | None = None
) -> None:
    """Ask that ``task_ids`` do not run (with ``terminate``: stop them if they are running)."""
    settings = settings or get_settings()
    # Called in Celery's consumer thread: a Redis that stops answering must not hang it.
    client = redis.Redis.from_url(
        settings.redis_url_normalised,
        client_name=CLIENT_NAME,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
    )
    try:
        for task_id in task_ids:
            request_cancel_blocking(client, task_id, ttl=settings.task_data_ttl, announce=terminate)
    finally:
        client.close()


def _is_agent_task(request: Request) -> bool:
    return str(request.name).startswith(AGENT_TASK_PREFIX)


def revoke(state: Any, task_id: Any, terminate: bool = False, signal: Any = None, **_: Any) -> Any:
    """Celery's ``revoke`` control command, with an agent task's revoke a cancel request."""
    task_ids = {str(t) for t in maybe_list(task_id) or []}
    try:
        request_revoke(task_ids, terminate=bool(terminate))
    except (redis.RedisError, OSError) as exc:
        logger.warning("revoke: the cancel request did not reach Redis: %r", exc)
    # Maintenance tasks: discarded when they arrive (``AgentRevocation.revoked`` lets agent
    # tasks through), and terminated the way Celery does if asked.
    worker_state.revoked.update(task_ids)
    if terminate:
        for request in list(worker_state.active_requests):
            if request.id in task_ids and not _is_agent_task(request):
                request.terminate(state.consumer.pool, signal=signal)
    logger.info("Tasks flagged as revoked: %s", ", ".join(sorted(task_ids)))
    return {"ok": f"tasks {sorted(task_ids)} flagged as revoked"}


def install_revoke_command() -> None:
    """Make this worker's ``revoke`` control command ours (call it before the worker consumes)."""
    control_command(
        name="revoke",
        signature="[id1 [id2 [... [idN]]]]",
        help="Revoke tasks: an agent task ends cancelled (with terminate: stopped if running).",
    )(revoke)


class AgentRevocation(Request):
    """The request's side of ``revoke`` for agent tasks."""

    def revoked(self) -> bool:
        """An agent task flagged as revoked runs all the same: its claim finds the cancel
        request and ends it ``cancelled``, with the stream's event (Celery would discard it)."""
        if _is_agent_task(self) and not self.expires:
            return False
        return bool(super().revoked())

    def terminate(self, pool: Any, signal: Any = None) -> None:
        """Never kill an agent task: the cancel request stops it."""
        if not _is_agent_task(self):
            super().terminate(pool, signal=signal)
