"""Rate limits mean per deployment: two worker processes together start tasks at the rate the
setting names, within 10%, and a task over the limit waits its turn in the queue; on Redis and
RabbitMQ alike (the schedule lives in Redis either way; a deferred task goes back to the broker)."""

import itertools

import redis

from scripts.embedded_redis import EmbeddedRedis
from tests.e2e.conftest import _llm_worker_env
from tests.support import redis_databases
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.polling import poll_until_done, submit
from teststack.stack import redis_db_url, start_web, start_worker
from teststack.task_log import log_entries

RATE_PER_SECOND = 4
TASKS = 40
BROKER_TEST_DB = redis_databases.RATE_LIMIT


def _started_at(raw: redis.Redis, task_id: str) -> float:
    """When the task started running: the id of its log's ``running`` status (milliseconds)."""
    for entry in log_entries(raw, task_id):
        if entry.event == b"status" and b'"running"' in entry.data:
            return entry.written_ms / 1000
    raise AssertionError(f"task {task_id} never ran")


def test_two_workers_together_hold_the_deployment_wide_rate(broker: dict[str, str]) -> None:
    url = broker["REDIS_URL"]
    env = {
        **broker,
        "AGENT_TASK_RATE_LIMIT": f"{RATE_PER_SECOND * 60}/m",
        "ECHO_WORD_DELAY": "0",
        "WORKER_CONCURRENCY": "20",
    }
    workers = [start_worker(url, env=env, concurrency=20) for _ in range(2)]
    web = start_web(url, env=broker)
    raw = redis.Redis.from_url(url)
    try:
        task_ids = [submit(web.client, "echo", f"task {n}") for n in range(TASKS)]
        finals = [poll_until_done(web.client, t, timeout=60) for t in task_ids]
        starts = sorted(_started_at(raw, t) for t in task_ids)
        logs = [worker.output(tail=10**7) for worker in workers]
    finally:
        raw.close()
        web.stop()
        for worker in workers:
            worker.stop()

    assert [f["status"] for f in finals] == ["completed"] * TASKS
    rate = (TASKS - 1) / (starts[-1] - starts[0])
    ran = [sum(f"task_succeeded task_id={t}" in log for t in task_ids) for log in logs]
    print(f"{rate:.2f} starts/s for a limit of {RATE_PER_SECOND}/s; tasks per worker: {ran}")
    assert abs(rate - RATE_PER_SECOND) <= 0.1 * RATE_PER_SECOND
    assert all(count > 0 for count in ran), "both workers took part"


def test_a_retry_of_a_task_that_waited_for_its_turn_waits_for_a_new_one(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    """A task that waited for its rate-limit turn carries it in a header; its retry (an LLM's
    503) must ask for a turn of its own, not start at once on the old one."""
    url = redis_db_url(redis_server.url, BROKER_TEST_DB)
    raw = redis.Redis.from_url(url)
    raw.flushdb()
    rate = 2
    messages = [f"rate-limited retry {n}" for n in range(5)]
    for message in messages:
        llm.script(message, tokens=["ok"], failures=[{"status": 503, "retry_after": 0}])
    env = {
        **_llm_worker_env(llm_server),
        "CELERY_RESULT_BACKEND": url,
        "AGENT_TASK_RATE_LIMIT": f"{rate * 60}/m",
    }
    worker = start_worker(url, env=env, concurrency=20)
    web = start_web(url)
    try:
        task_ids = [submit(web.client, "simple_llm_agent", message) for message in messages]
        finals = [poll_until_done(web.client, t, timeout=60) for t in task_ids]
        starts = sorted(
            entry.written_ms / 1000
            for t in task_ids
            for entry in log_entries(raw, t)
            if entry.event == b"status" and b'"running"' in entry.data
        )
    finally:
        raw.close()
        web.stop()
        worker.stop()

    assert [f["status"] for f in finals] == ["completed"] * len(messages)
    assert len(starts) == 2 * len(messages), "every task ran twice: the 503, then the answer"
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    print(f"gaps between starts: {[round(g, 2) for g in gaps]} for a limit of {rate}/s")
    assert min(gaps) >= 0.8 / rate, "no start, first or retry, came sooner than the limit allows"
