"""The Celery task contract: the names producers send, the queues, and an agent task's kwargs.

The names are those existing clients already use (``send_task(name, kwargs=...)`` from any Celery
producer works), so they are spelled here once and every other module builds on these constants.
"""

from typing import Any, TypedDict

#: Every task's name starts with this (the module path of the deployment this one replaces).
TASK_PREFIX = "agent_service.workers.tasks."
AGENT_TASK_PREFIX = f"{TASK_PREFIX}agent_tasks."
CLEANUP_TASK_PREFIX = f"{TASK_PREFIX}cleanup_tasks."

INVOKE_AGENT_ASYNC = f"{AGENT_TASK_PREFIX}invoke_agent_async"
INVOKE_AGENT_WITH_STREAMING = f"{AGENT_TASK_PREFIX}invoke_agent_with_streaming"
AGENT_TASKS = (INVOKE_AGENT_ASYNC, INVOKE_AGENT_WITH_STREAMING)

CLEANUP_EXPIRED_SESSIONS = f"{CLEANUP_TASK_PREFIX}cleanup_expired_sessions"
ARCHIVE_OLD_AUDIT_LOGS = f"{CLEANUP_TASK_PREFIX}archive_old_audit_logs"
CLEANUP_TOKEN_BLACKLIST = f"{CLEANUP_TASK_PREFIX}cleanup_token_blacklist"
CLEANUP_TEMP_FILES = f"{CLEANUP_TASK_PREFIX}cleanup_temp_files"
CLEANUP_TASKS = (
    CLEANUP_EXPIRED_SESSIONS,
    ARCHIVE_OLD_AUDIT_LOGS,
    CLEANUP_TOKEN_BLACKLIST,
    CLEANUP_TEMP_FILES,
)

#: Agent work.
AGENT_QUEUE = "agent-tasks"
#: The default queue (``CELERY_TASK_DEFAULT_QUEUE``): tasks sent without a route.
DEFAULT_QUEUE = "agent-service"
#: Maintenance, consumed by a worker of its own so it never waits behind agent work.
CLEANUP_QUEUE = "cleanup-tasks"

#: A message header: when the producer sent the task (seconds since the epoch), for the worker's
#: time-queued figure.
SENT_AT_HEADER = "sent_at"

#: Priorities: 0-9, 9 the most urgent, on every broker. On Redis each has a list of its own
#: (kombu's priority steps, named ``<queue><separator><priority>``, the plain name for 0), and
#: the workers take from the most urgent first.
PRIORITIES = tuple(range(10))
#: The priority of a task sent without one: the middle.
DEFAULT_PRIORITY = 5
REDIS_PRIORITY_SEPARATOR = "\x06\x16"


def redis_queue_list(queue: str, priority: int) -> str:
    """The Redis list a message of ``priority`` waits in (kombu's ``_q_for_pri``)."""
    return f"{queue}{REDIS_PRIORITY_SEPARATOR}{priority}" if priority else queue


#: Hard time limits (seconds) of the agent tasks; the soft limit is 30 s less.
TIME_LIMITS = {INVOKE_AGENT_ASYNC: 600, INVOKE_AGENT_WITH_STREAMING: 900}


class AgentTaskKwargs(TypedDict):
    """The kwargs of both agent tasks, as every producer sends them."""

    agent_id: str
    message: str
    user_id: str
    session_id: str | None
    metadata: dict[str, Any] | None


def agent_task_kwargs(
    *,
    agent_id: str,
    message: str,
    user_id: str,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AgentTaskKwargs:
    return {
        "agent_id": agent_id,
        "message": message,
        "user_id": user_id,
        "session_id": session_id,
        "metadata": metadata,
    }
