"""``task-progress`` events: an agent task's progress where Flower shows it.

An agent task stores its ``PROGRESS`` state itself (with its event, in one round trip), so Celery
sends no event for it, and Flower, which knows tasks only from events, would show a running task
as ``STARTED``. While the worker's task events are on (Flower turns them on), each progress
report also becomes a ``task-progress`` event: Flower shows the task as ``PROGRESS`` with
``{'progress': …, 'stage': …}`` as its result until it ends.

A report is handed to a thread of its own (it publishes on a broker connection of its own, never
from the event loop); with events off it costs one look at the worker's dispatcher. Reports come
from the shared loop of the threads pool; a prefork child's tasks send none (the dispatcher is
its parent's).
"""

import logging
import queue
import threading
from typing import Any

from celery import Celery

from worker.observability.logs import ThrottledLog

logger = logging.getLogger("agent_service.worker.events")
#: A broker that refuses every event is said once a minute, not once per report.
SEND_FAILURES = ThrottledLog(logger)
#: Reports waiting to be sent at most; more are dropped (progress is superseded anyway).
BACKLOG = 10_000


class ProgressEvents:
    def __init__(self, app: "Celery[Any]") -> None:
        self._app = app
        self._consumer_dispatcher: Any = None
        self._hostname = ""
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, consumer: Any) -> None:
        """Follow the worker's own event dispatcher (its ``task`` group says whether task
        events are on)."""
        self._consumer_dispatcher = getattr(consumer, "event_dispatcher", None)
        self._hostname = str(getattr(consumer, "hostname", ""))

    @property
    def enabled(self) -> bool:
        dispatcher = self._consumer_dispatcher
        return bool(
            dispatcher is not None
            and dispatcher.enabled
            and (not dispatcher.groups or "task" in dispatcher.groups)
        )

    def report(self, task_id: str, meta: dict[str, Any]) -> None:
        """Send ``meta`` as ``task_id``'s progress, if task events are on (any thread)."""
        if not self.enabled:
            return
        if self._thread is None:
            self._start()
        if self._queue.qsize() < BACKLOG:
            self._queue.put((task_id, meta))

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send_forever, name="progress-events", daemon=True
                )
                self._thread.start()

    def _send_forever(self) -> None:
        try:
            self._send_all()
        except Exception as exc:  # the connection itself: the reports are given up
            logger.warning("task-progress events stopped: %r", exc)

    def _send_all(self) -> None:
        with self._app.connection_for_write() as connection:
            dispatcher = self._app.events.Dispatcher(connection, hostname=self._hostname)
            try:
                while (item := self._queue.get()) is not None:
                    task_id, meta = item
                    try:
                        dispatcher.send(
                            "task-progress",
                            uuid=task_id,
                            result=repr(meta),
                            progress=meta.get("progress"),
                            stage=meta.get("stage"),
                        )
                    except Exception as exc:  # never stop: the next report may go through
                        SEND_FAILURES.log(
                            logging.WARNING,
                            "task_progress_not_sent",
                            key=type(exc).__name__,
                            error=repr(exc)[:300],
                        )
            finally:
                dispatcher.close()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=5)
