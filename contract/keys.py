"""Every Redis key and channel name agent-service reads or writes, in one place.

Keeping them here means a reader can see the whole Redis footprint of the service at a glance,
and a rename cannot leave a reader and a writer disagreeing. Keys that belong to Celery are named
here too so that nothing else spells them out.

Every key of one task carries the task's hash tag (``{<task id>}``), so the scripts that write
several of them at once stay valid on a Redis Cluster; Celery's own result key cannot (Celery
names it).
"""

PREFIX = "agent-service"

#: Celery's result backend stores a task's state under this key (see
#: ``celery.backends.base.KeyValueStoreBackend.task_keyprefix``), and publishes it on a channel
#: of the same name. The worker writes it and the web reads it directly (``contract.celery_meta``).
CELERY_TASK_META_PREFIX = "celery-task-meta-"


def task_record(task_id: str) -> str:
    """Hash written by the web process on submit: who owns the task, which agent, when, and
    what was sent (``contract.task_record``)."""
    return f"{PREFIX}:task:{task_id}"


#: Tasks accepted and sent, not yet ended: a sorted set of task ids scored by when they were
#: sent. Workers look there for tasks whose message was lost, and drop a task when it ends.
OPEN_TASKS = f"{PREFIX}:open-tasks"


def celery_task_meta(task_id: str) -> str:
    """Celery's result-backend entry for ``task_id`` (state, result or error, traceback)."""
    return f"{CELERY_TASK_META_PREFIX}{task_id}"


def _task_tag(task_id: str) -> str:
    # The braces are a Redis Cluster hash tag: a task's keys live in one slot, so the script that
    # writes them together stays valid on a cluster.
    return f"{PREFIX}:{{{task_id}}}"


def task_events(task_id: str) -> str:
    """The task's event log: a capped Stream of ``{e: type, d: json}`` entries."""
    return f"{_task_tag(task_id)}:events"


def task_content(task_id: str) -> str:
    """The answer so far (chunk texts appended; replaced by a reset), for cursors the log lost."""
    return f"{_task_tag(task_id)}:content"


def task_attempt(task_id: str) -> str:
    """The attempt whose content ``task_content`` holds."""
    return f"{_task_tag(task_id)}:attempt"


def task_written(task_id: str) -> str:
    """``<run>:<n>``: the last batch of events the running attempt had applied (so a batch sent
    twice is applied once, and one whose predecessors Redis lost is noticed)."""
    return f"{_task_tag(task_id)}:written"


def task_channel(task_id: str) -> str:
    """Pub/sub channel on which each appended event is announced (a wake-up, not the truth)."""
    return f"{PREFIX}:live:{task_id}"


def task_cancel(task_id: str) -> str:
    """Set when a cancel was requested: checked by the task when it starts."""
    return f"{_task_tag(task_id)}:cancel"


#: Workers listen here for cancel requests of tasks they are running (message: the task id).
CONTROL_CHANNEL = f"{PREFIX}:control:cancel"


def idempotency(user_id: str, key_digest: str) -> str:
    """A client's ``Idempotency-Key`` (by digest), per user: which task it created."""
    return f"{PREFIX}:idempotency:{user_id}:{key_digest}"


def task_holder(task_id: str) -> str:
    """The worker process holding a delivery of the task (received, not yet acknowledged); it
    expires unless that process's lease renews it."""
    return f"{_task_tag(task_id)}:holder"


def task_runner(task_id: str) -> str:
    """The run executing the task; it expires unless its worker's lease renews it."""
    return f"{_task_tag(task_id)}:runner"


def task_starts(task_id: str) -> str:
    """How many times the task started running: across retries and redeliveries."""
    return f"{_task_tag(task_id)}:starts"


#: The agents added by workers' ``AGENT_MODULES``: a hash of agent id -> spec (JSON), written
#: by each worker when it starts (``contract.agents``).
AGENT_CATALOG = f"{PREFIX}:agents"


#: Held by the worker that is scanning for deliveries of dead workers, so only one scans at once.
RECOVERY_LOCK = f"{PREFIX}:recovery-lock"


#: Revoked tokens: a sorted set of ``jti`` scored by the token's expiry (Unix seconds), so the
#: entries of tokens that expired anyway can be trimmed by score.
REVOKED_TOKENS = f"{PREFIX}:revoked-tokens"


#: Held by the run of ``archive_old_audit_logs`` in progress: two runs at once could archive a
#: row twice.
ARCHIVE_LOCK = f"{PREFIX}:audit-archive-lock"


def beat_lock(job: str) -> str:
    """Held by the beat that sent ``job`` in its current period; a second beat skips it."""
    return f"{PREFIX}:beat:{job}"
