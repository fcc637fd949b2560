"""Cancel requests, from whoever asks (the web process, ``revoke_task``) to the running task.

A request is two writes in one round trip: a key the task checks when it starts (so a queued
task that is cancelled never calls the LLM) and a message on the control channel for the worker
running it. Each worker process has one ``CancelWatcher``: a daemon thread subscribed to the
control channel that calls the callback a running task registered, which cancels that task's
scope inside its event loop (closing its LLM stream).
"""

import logging
import threading
from collections.abc import Callable

import redis
from redis.asyncio import Redis

from contract import keys

logger = logging.getLogger("agent_service.streaming.cancellation")


async def request_cancel(client: "Redis", task_id: str, *, ttl: int) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.task_cancel(task_id), b"1", ex=ttl)
        pipe.publish(keys.CONTROL_CHANNEL, task_id)
        await pipe.execute()


def request_cancel_blocking(
    client: "redis.Redis", task_id: str, *, ttl: int, announce: bool = True
) -> None:
    """The same from blocking code; without ``announce`` only a task not yet started stops."""
    with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.task_cancel(task_id), b"1", ex=ttl)
        if announce:
            pipe.publish(keys.CONTROL_CHANNEL, task_id)
        pipe.execute()


async def cancel_requested(client: "Redis", task_id: str) -> bool:
    return bool(await client.exists(keys.task_cancel(task_id)))


class CancelWatcher:
    """Delivers cancel requests to the tasks this process runs; one per worker process."""

    def __init__(self, client: "redis.Redis", *, reconnect_delay: float = 0.5) -> None:
        self._client = client
        self._reconnect_delay = reconnect_delay
        #: Every callback registered for a task: one process may hold two deliveries of it (a
        #: redelivery waiting for the run it holds), and a cancel must reach the one running.
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-watcher", daemon=True)

    def start(self, *, timeout: float = 5.0) -> None:
        """Start listening; returns once subscribed (or after ``timeout``)."""
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()

    def register(self, task_id: str, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.setdefault(task_id, []).append(callback)

    def unregister(self, task_id: str, callback: Callable[[], None]) -> None:
        """Forget ``callback`` (only it: another delivery of the task keeps its own)."""
        with self._lock:
            callbacks = self._callbacks.get(task_id, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._callbacks.pop(task_id, None)

    def _run(self) -> None:
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(keys.CONTROL_CHANNEL)
                self._ready.set()
                self._deliver_missed()
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._deliver(message["data"].decode(errors="replace"))
            except Exception as exc:  # the thread must outlive anything: cancels depend on it
                logger.warning("cancel watcher lost Redis (%s); reconnecting", exc)
                self._stopping.wait(self._reconnect_delay)
            finally:
                pubsub.close()

    def _deliver_missed(self) -> None:
        """Requests sent while we were not subscribed (start-up, a lost connection)."""
        with self._lock:
            running = list(self._callbacks)
        for task_id in running:
            if self._client.exists(keys.task_cancel(task_id)):
                self._deliver(task_id)

    def _deliver(self, task_id: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(task_id, ()))
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("cancelling task %s failed", task_id)
