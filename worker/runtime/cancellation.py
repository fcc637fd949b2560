"""Cancel requests reaching a running task's cancel scope, on the worker's side.

One ``CancelWatcher`` per worker process (``streaming.cancellation``; owned by the process's
``WorkerProcess``, started with its first task) listens on the control channel. A task registers,
for the time it runs, a callback that cancels its own cancel scope inside its event loop
(scheduled from the watcher's thread), which closes its LLM stream at once. The task also checks
the cancel key when it starts, after registering, so a request made before it started, or while
the watcher was reconnecting, is not missed.
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import anyio
import redis

from streaming.cancellation import CancelWatcher
from worker.settings import WorkerSettings

CLIENT_NAME = "agent-service:worker:control"


def start_cancel_watcher(settings: WorkerSettings) -> CancelWatcher:
    """A watcher on the control channel, listening from now on (its own thread)."""
    client = redis.Redis.from_url(
        settings.redis_url_normalised,
        client_name=CLIENT_NAME,
        socket_timeout=None,
        socket_keepalive=True,
        health_check_interval=15,  # a half-open connection is found and replaced
    )
    watcher = CancelWatcher(client)
    # No waiting for the subscription: requests made meanwhile are found by the task's own key
    # check, or by the watcher's check once it is subscribed.
    watcher.start(timeout=0)
    return watcher


@contextmanager
def cancel_on_request(
    watcher: CancelWatcher, task_id: str, scope: anyio.CancelScope
) -> Iterator[None]:
    """While inside, a cancel request for ``task_id`` cancels ``scope`` (call it in the loop).

    The watcher schedules the cancel on the task's loop without waiting for it to run: waiting
    would make forty cancels arriving together queue behind each other's loop iterations.
    """
    loop = asyncio.get_running_loop()  # the runtimes run anyio on asyncio

    def cancel() -> None:
        with suppress(RuntimeError):  # the task's loop has already closed
            loop.call_soon_threadsafe(scope.cancel)

    watcher.register(task_id, cancel)
    try:
        yield
    finally:
        watcher.unregister(task_id, cancel)
