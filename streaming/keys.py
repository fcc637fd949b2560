"""Every Redis key and channel name agent-service reads or writes, in one place.

Keeping them here means a reader can see the whole Redis footprint of the service at a glance,
and a rename cannot leave a reader and a writer disagreeing. Keys that belong to Celery are named
here too (read-only for us) so that nothing else spells them out.
"""

PREFIX = "agent-service"

#: Celery's result backend stores a task's state under this key (see
#: ``celery.backends.base.KeyValueStoreBackend.task_keyprefix``). The web process reads it directly
#: so that polling is one async GET instead of a blocking call into Celery.
CELERY_TASK_META_PREFIX = "celery-task-meta-"


def task_record(task_id: str) -> str:
    """Hash written by the web process on submit: who owns the task, which agent, when."""
    return f"{PREFIX}:task:{task_id}"


def celery_task_meta(task_id: str) -> str:
    """Celery's result-backend entry for ``task_id`` (state, result or error, traceback)."""
    return f"{CELERY_TASK_META_PREFIX}{task_id}"
