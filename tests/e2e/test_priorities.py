"""Priorities (0-9, 9 the most urgent) on Redis and RabbitMQ alike: a priority-9 task overtakes a
worker's backlog of low-priority work."""

import redis

from tests.support import redis_databases
from teststack.polling import poll_until_done, submit
from teststack.stack import start_web, start_worker
from teststack.task_log import log_entries

BACKLOG = 8
BROKER_TEST_DB = redis_databases.PRIORITY


def _started_at(raw: redis.Redis, task_id: str) -> int:
    for entry in log_entries(raw, task_id):
        if entry.event == b"status" and b'"running"' in entry.data:
            return entry.written_ms
    raise AssertionError(f"task {task_id} never ran")


def test_a_priority_9_task_overtakes_a_backlog_of_low_priority_work(
    broker: dict[str, str],
) -> None:
    url = broker["REDIS_URL"]
    web = start_web(url, env=broker)
    raw = redis.Redis.from_url(url)
    worker = None
    try:
        # Queued before any worker runs: the broker holds the whole backlog.
        backlog = [submit(web.client, "echo", "slow low work", priority=1) for _ in range(BACKLOG)]
        urgent = submit(web.client, "echo", "urgent", priority=9)
        worker = start_worker(
            url,
            env={**broker, "ECHO_WORD_DELAY": "0.2", "AGENT_TASK_RATE_LIMIT": ""},
            concurrency=1,
        )
        for task_id in [*backlog, urgent]:
            poll_until_done(web.client, task_id, timeout=60)
        order = sorted([*backlog, urgent], key=lambda t: _started_at(raw, t))
    finally:
        raw.close()
        if worker is not None:
            worker.stop()
        web.stop()

    position = order.index(urgent)
    print(f"the urgent task started {position + 1} of {BACKLOG + 1}")
    # The worker may have taken one backlog task before the urgent one was in reach.
    assert position <= 1
