"""Cancellation of running tasks, on the worker's side.

One ``CancelWatcher`` per worker process (started with its first task) listens on the control
channel. A task registers, for the time it runs, a callback that cancels its own cancel scope
inside its event loop (scheduled from the watcher's thread), which closes its LLM stream at
once. The task also checks the cancel key when it starts, after registering, so a
request made before it started, or while the watcher was reconnecting, is not missed.
"""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import anyio
import redis

from streaming.cancellation import CancelWatcher
from worker.settings import WorkerSettings

CLIENT_NAME = "agent-service:worker:control"

_watcher: CancelWatcher | None = None
_watcher_lock = threading.Lock()


def cancel_watcher(settings: WorkerSettings) -> CancelWatcher:
    """This process's watcher, started on first use."""
    global _watcher
    if _watcher is None:
        with _watcher_lock:
            if _watcher is None:
                client = redis.Redis.from_url(
                    settings.redis_url_normalised,
                    client_name=CLIENT_NAME,
                    socket_timeout=None,
                    socket_keepalive=True,
                    health_check_interval=15,  # a half-open connection is found and replaced
                )
                watcher = CancelWatcher(client)
                # No waiting for the subscription: requests made meanwhile are found by the
                # task's own key check, or by the watcher's check once it is subscribed.
                watcher.start(timeout=0)
                _watcher = watcher
    return _watcher


def stop_cancel_watcher() -> None:
    global _watcher
    with _watcher_lock:
        watcher, _watcher = _watcher, None
    if watcher is not None:
        watcher.stop()


@contextmanager
def cancel_on_request(
    settings: WorkerSettings, task_id: str, scope: anyio.CancelScope
) -> Iterator[None]:
    """While inside, a cancel request for ``task_id`` cancels ``scope`` (call it in the loop).

    The watcher schedules the cancel on the task's loop without waiting for it to run: waiting
    would make forty cancels arriving together queue behind each other's loop iterations.
    """
    loop = asyncio.get_running_loop()  # the runtimes run anyio on asyncio

    def cancel() -> None:
        with suppress(RuntimeError):  # the task's loop has already closed
            loop.call_soon_threadsafe(scope.cancel)

    watcher = cancel_watcher(settings)
    watcher.register(task_id, cancel)
    try:
        yield
    finally:
        watcher.unregister(task_id)
