"""Cancel requests reaching the tasks a worker process runs, against a real Redis server."""

import threading
import uuid

import redis

from contract import keys
from scripts.embedded_redis import EmbeddedRedis
from streaming.cancellation import CancelWatcher, request_cancel_blocking


def test_a_cancel_reaches_every_delivery_of_the_task_this_process_holds(
    redis_server: EmbeddedRedis,
) -> None:
    """A redelivery of a running task registers beside the run; neither hides the other, and
    the one that ends first takes only its own registration away."""
    client = redis.Redis.from_url(redis_server.url)
    watcher = CancelWatcher(client)
    watcher.start()
    task_id = uuid.uuid4().hex
    running, waiting = threading.Event(), threading.Event()
    try:
        watcher.register(task_id, running.set)
        watcher.register(task_id, waiting.set)
        watcher.unregister(task_id, waiting.set)

        request_cancel_blocking(client, task_id, ttl=60)

        assert running.wait(5), "the running delivery was cancelled"
        assert not waiting.is_set(), "a callback taken away is not called"
    finally:
        watcher.stop()
        client.delete(keys.task_cancel(task_id))
        client.close()
