"""The Celery application, the signals that open and close each worker process's resources, and
two helpers for callers.

``celery -A worker.celery_app worker`` finds ``celery_app`` here. Importing this module reads no
settings: the configuration (``worker.config``) is loaded when Celery first needs it. Each worker
process's clients, loop, cancel watcher and lease belong to its ``WorkerProcess``
(``worker.process``), which the signals below open when the worker starts (and in each prefork
child) and close when it stops.
"""

import sys
from typing import Any

from celery import Celery, signals
from celery.result import AsyncResult

from contract.log_format import format_as_json_lines
from worker.agents.plugins import AgentModuleError, load_agent_modules, module_names
from worker.broker_connection import BROKER_AMQP
from worker.config import celery_config
from worker.observability.logs import install_answer_redaction, quiet_celery_task_lines
from worker.observability.sentry import init_sentry
from worker.pool_guard import EXIT_STATUS as CONFIG_EXIT_STATUS
from worker.pool_guard import refuse_green_pool
from worker.process import WorkerProcess
from worker.revocation import install_revoke_command, request_revoke
from worker.settings import WorkerSettings, get_settings
from worker.tasks.base_task import BaseTask

celery_app = Celery(
    "agent_service",
    include=["worker.tasks.agent_tasks", "worker.tasks.cleanup_tasks"],
    task_cls=BaseTask,
    amqp=BROKER_AMQP,
)


@celery_app.on_configure.connect
def _configure(sender: "Celery[Any]", **_: Any) -> None:
    settings = get_settings()
    settings.align_celery_environment()
    sender.conf.update(celery_config(settings))


def create_celery_app(settings: WorkerSettings) -> "Celery[Any]":
    """A Celery app configured from ``settings``, for a program that sends tasks or reads their
    results (the worker, beat and ``celery`` commands use ``celery_app``)."""
    settings.align_celery_environment()
    app: Celery[Any] = Celery("agent_service", task_cls=BaseTask, amqp=BROKER_AMQP)
    app.conf.update(celery_config(settings))
    return app


@signals.celeryd_init.connect
@signals.worker_process_init.connect
@signals.beat_init.connect
def _start_error_reporting(**_: Any) -> None:
    init_sentry(get_settings())


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _log_format(logger: Any = None, **_: Any) -> None:
    """``LOG_FORMAT=json``: the handlers Celery just set up (the worker's and beat's root
    logger, the task logger) write JSON lines (``contract.log_format``)."""
    if logger is not None and get_settings().log_format == "json":
        format_as_json_lines(logger)


@signals.worker_init.connect
def _open_worker_process(sender: Any = None, **_: Any) -> None:
    """The process's resources; loading ``AGENT_MODULES`` now makes a bad one stop the worker
    before it takes a task."""
    refuse_green_pool(getattr(sender, "pool_cls", ""))  # exits: the loops need real threads
    # One result backend, and one connection pool to it, for every pool thread: Celery builds
    # one per thread otherwise, at each thread's first task (the tracer touches it even for
    # ``ignore_result`` tasks). Sharing it is unsafe only for callers that wait on results
    # (its pub/sub consumer); this process's tasks never do.
    celery_app.conf.result_backend_thread_safe = True
    settings = get_settings()
    install_answer_redaction()
    install_revoke_command()
    if not settings.celery_task_log_lines:
        quiet_celery_task_lines()
    try:
        load_agent_modules(module_names(settings.agent_modules))
    except AgentModuleError as exc:
        # Celery logs and ignores a signal handler's Exception: the worker would run without
        # the agents it was given. A SystemExit stops it, naming the module.
        print(f"agent-service worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(CONFIG_EXIT_STATUS) from exc
    pool = getattr(sender, "pool_cls", "")
    pool_name = pool if isinstance(pool, str) else getattr(pool, "__module__", str(pool))
    WorkerProcess.open(
        WorkerProcess(
            settings,
            app=celery_app,
            node_name=str(getattr(sender, "hostname", "")),
            pool_name=pool_name,
        )
    )


@signals.worker_process_init.connect
def _open_child_process(**_: Any) -> None:
    """A prefork child: resources of its own (the parent's threads did not survive the fork)."""
    parent = WorkerProcess.current()
    WorkerProcess.open(
        WorkerProcess(
            parent.settings,
            app=celery_app,
            node_name=parent.incarnation.split("/", 1)[0],
            pool_name=parent.pool_name,
            exporter=parent.exporter,
        )
    )


@signals.worker_ready.connect
def _start_lease(sender: Any = None, **_: Any) -> None:
    """Renew this worker's deliveries and recover dead workers' (``worker.recovery.lease``);
    serve the metrics; follow the consumer's task events for the progress events."""
    process = WorkerProcess.current()
    process.progress.watch(sender)
    process.lease  # noqa: B018 (started on first use)
    process.publish_agents()
    process.check_database()
    process.check_redis()
    process.serve_metrics()


@signals.task_received.connect
def _hold_delivery(request: Any = None, **_: Any) -> None:
    if request is not None:
        WorkerProcess.current().lease.holding(request.id)


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _close_worker_process(**_: Any) -> None:
    """Once the pool has finished its tasks: close the loop's clients and stop the threads."""
    WorkerProcess.close_current()


def get_task_info(task_id: str, *, app: "Celery[Any] | None" = None) -> dict[str, Any]:
    """A task's state as plain data: ``task_id, state, ready, successful, result``.

    ``result`` is the return value once successful, the error's text once failed, and the
    progress metadata (``{"progress", "stage"}``) while running.
    """
    chosen: Celery[Any] = app or celery_app
    result: AsyncResult[Any] = AsyncResult(task_id, app=chosen)
    ready = result.ready()
    successful = result.successful() if ready else False
    value: Any = result.result
    if isinstance(value, BaseException):
        value = f"{type(value).__name__}: {value}"
    return {
        "task_id": task_id,
        "state": result.state,
        "ready": ready,
        "successful": successful,
        "result": value,
    }


def revoke_task(
    task_id: str,
    *,
    terminate: bool = False,
    settings: WorkerSettings | None = None,
) -> None:
    """Make sure ``task_id`` does not run; with ``terminate``, also stop it if it is running.

    Celery's own ``terminate`` kills a prefork child mid-stream (no terminal event) and raises
    NotImplementedError in the threads pool, so a running task is stopped the way
    ``POST /tasks/{id}/cancel`` stops it, in every pool: its LLM stream closed, its stream ended
    with ``cancelled``. A task not yet started ends ``cancelled`` without calling the LLM either
    way. Our workers give Celery's ``control.revoke`` (Flower's revoke and terminate buttons) the
    same meaning (``worker.revocation``).
    """
    request_revoke([task_id], terminate=terminate, settings=settings)
