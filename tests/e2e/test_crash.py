"""Workers that die or stop lose nothing: a killed worker's tasks run again, promptly,
elsewhere; a stopped worker finishes what it runs; a repeated delivery does nothing."""

import signal
import time
from functools import partial

import redis
from celery import Celery

from contract import keys
from contract.tasks import AGENT_QUEUE, DEFAULT_PRIORITY, INVOKE_AGENT_ASYNC, redis_queue_list
from scripts.embedded_redis import EmbeddedRedis
from tests.e2e.conftest import Stack, _llm_worker_env
from tests.support import redis_databases
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.polling import poll_until_done, submit
from teststack.processes import ManagedProcess, wait_for
from teststack.sse import content_of, events_path, read_stream
from teststack.stack import headers_for, redis_db_url, start_web, start_worker

CRASH_DB, SHUTDOWN_DB = redis_databases.CRASH, redis_databases.SHUTDOWN

LEASE_SECONDS = 3


def _logged(process: ManagedProcess, text: str) -> bool:
    return text in process.output(tail=10**7)


def test_tasks_of_a_killed_worker_complete_on_another_with_a_reset(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    key = "an answer interrupted by a crash"
    tokens = [f" z{i}" for i in range(30)]
    llm.script(key, tokens=tokens, delay=0.1)
    url = redis_db_url(redis_server.url, CRASH_DB)
    env = {**_llm_worker_env(llm_server), "WORKER_LEASE_SECONDS": str(LEASE_SECONDS)}
    web = start_web(url)
    first = start_worker(url, env=env)
    second = None
    try:
        task_ids = []
        for _ in range(20):
            task_ids.append(submit(web.client, "simple_llm_agent", key, stream=True))
        wait_for(lambda: len(llm.calls(key)) == 20, timeout=20)

        first.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        second = start_worker(url, env=env)
        finals = [poll_until_done(web.client, t, timeout=60) for t in task_ids]
        recovered_in = time.monotonic() - killed_at
        streams = [
            read_stream(web.client, events_path(t), headers=headers_for("alice")) for t in task_ids
        ]
    finally:
        if second is not None:
            second.stop()
        first.stop()
        web.stop()

    whole = "".join(tokens)
    assert [f["status"] for f in finals] == ["completed"] * 20
    assert [f["result"]["content"] for f in finals] == [whole] * 20
    assert [f["result"]["metadata"]["attempt"] for f in finals] == [2] * 20
    for events in streams:
        resets = [e.data for e in events if e.event == "reset"]
        assert resets == [{"attempt": 2, "content": ""}]
        assert content_of(events) == whole
        assert events[-1].event == "result"
    assert len(llm.calls(key)) == 40, "each task ran once more, not more"
    # The lease lapses after 3 s and is checked every second; then ~3 s of answer.
    assert recovered_in < 30


def test_a_second_delivery_of_a_finished_task_does_not_call_the_llm(
    stack: Stack, llm: LLMControl
) -> None:
    key = "delivered twice"
    llm.script(key, tokens=["done"])
    task_id = submit(stack.web.client, "simple_llm_agent", key)
    before = poll_until_done(stack.web.client, task_id)
    client = Celery("redeliverer", broker=stack.redis_url, backend=stack.redis_url)
    try:
        # What the broker does when an acknowledgement was lost with its connection.
        client.send_task(
            INVOKE_AGENT_ASYNC,
            task_id=task_id,
            kwargs={"agent_id": "simple_llm_agent", "message": key, "user_id": "alice"},
            queue="agent-tasks",
        )
        worker = stack.worker
        assert worker is not None
        wait_for(
            lambda: (
                "delivery_skipped" in worker.output(tail=10**7)
                and task_id in worker.output(tail=10**7)
            ),
            timeout=20,
        )
    finally:
        client.close()

    assert len(llm.calls(key)) == 1
    assert poll_until_done(stack.web.client, task_id) == before


def test_sigterm_lets_running_tasks_finish_before_the_worker_exits(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    key = "finish me before you go"
    tokens = [f" s{i}" for i in range(20)]
    llm.script(key, tokens=tokens, delay=0.1)
    url = redis_db_url(redis_server.url, SHUTDOWN_DB)
    web = start_web(url)
    worker = start_worker(url, env=_llm_worker_env(llm_server))
    try:
        task_id = submit(web.client, "simple_llm_agent", key)
        wait_for(lambda: len(llm.calls(key)) == 1, timeout=20)

        worker.signal(signal.SIGTERM)
        assert worker.process is not None
        exit_code = worker.process.wait(timeout=30)
        final = poll_until_done(web.client, task_id, timeout=5)
    finally:
        worker.stop()
        web.stop()

    assert exit_code == 0
    assert final["status"] == "completed"
    assert final["result"]["content"] == "".join(tokens)
    assert llm.calls(key)[0]["disconnected"] is False


def test_a_delivery_after_the_outcome_was_stored_makes_the_state_agree_without_the_llm(
    stack: Stack, llm: LLMControl
) -> None:
    """An acknowledgement lost with a connection (or a worker that died after writing the log's
    outcome and before Celery's record, when that lives in another database): the next delivery
    must not call the LLM again, and Celery's record must end up saying what the stream said."""
    key = "stored, then delivered again"
    llm.script(key, tokens=["the", " first", " answer"])
    task_id = submit(stack.web.client, "simple_llm_agent", key)
    stored = poll_until_done(stack.web.client, task_id)["result"]
    client = Celery("redeliverer", broker=stack.redis_url, backend=stack.redis_url)
    raw = redis.Redis.from_url(stack.redis_url)
    try:
        raw.delete(keys.celery_task_meta(task_id))  # Celery's record never written
        llm.reset()
        llm.script(key, tokens=["a", " second", " call"])

        again = client.send_task(
            INVOKE_AGENT_ASYNC,
            task_id=task_id,
            kwargs={"agent_id": "simple_llm_agent", "message": key, "user_id": "alice"},
            queue="agent-tasks",
        )
        assert again.get(timeout=20) == stored  # AsyncResult reads the restored record
        events = read_stream(stack.web.client, events_path(task_id), headers=headers_for("alice"))
    finally:
        raw.close()
        client.close()

    assert events[-1].event == "result"
    assert events[-1].data == stored
    assert stored["content"] == "the first answer"
    assert [e.event for e in events].count("result") == 1
    assert llm.calls(key) == []


LOST_DB = redis_databases.LOST
RECOVERER_DB = redis_databases.RECOVERER
SAME_NAME_DB = redis_databases.SAME_NAME


def test_a_task_whose_message_was_lost_is_sent_again(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess
) -> None:
    """A worker killed between taking a message from the queue and recording it as delivered
    (kombu's two round trips) leaves it nowhere: the task is sent again from its record."""
    url = redis_db_url(redis_server.url, LOST_DB)
    env = {**_llm_worker_env(llm_server), "WORKER_LEASE_SECONDS": "2"}
    web = start_web(url)
    raw = redis.Redis.from_url(url)
    worker = None
    try:
        task_id = submit(web.client, "echo", "lost and found")  # no worker yet: it waits
        # Taken, as a dying worker's BRPOP takes it (from the list of the default priority).
        assert raw.rpop(redis_queue_list(AGENT_QUEUE, DEFAULT_PRIORITY)) is not None
        worker = start_worker(url, env=env)
        final = poll_until_done(web.client, task_id, timeout=60)
        log = worker.output(tail=10**7)
    finally:
        if worker is not None:
            worker.stop()
        raw.close()
        web.stop()

    assert final["status"] == "completed"
    assert final["result"]["content"] == "lost and found"
    assert f"task_resent task_id={task_id}" in log


def test_killing_the_workers_that_recover_a_dead_workers_tasks_loses_none(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    """The worker that puts a dead worker's deliveries back takes them itself, at once: killed
    right then, and its successor too, the third worker still ends every task, once each."""
    key = "recovered by a worker that dies too"
    tokens = [f" r{i}" for i in range(20)]
    llm.script(key, tokens=tokens, delay=0.1)
    url = redis_db_url(redis_server.url, RECOVERER_DB)
    env = {**_llm_worker_env(llm_server), "WORKER_LEASE_SECONDS": "2"}
    web = start_web(url)
    workers = [start_worker(url, env=env)]
    try:
        task_ids = [submit(web.client, "simple_llm_agent", key, stream=True) for _ in range(10)]
        wait_for(lambda: len(llm.calls(key)) == 10, timeout=30)
        for _ in range(2):  # kill the worker running them, then the one that recovers them
            workers[-1].signal(signal.SIGKILL)
            workers.append(start_worker(url, env=env))
            recoverer = workers[-1]
            wait_for(partial(_logged, recoverer, "task_recovered"), timeout=30)
        killed_at = time.monotonic()
        workers[-1].signal(signal.SIGKILL)  # at once: it is taking back what it put back
        workers.append(start_worker(url, env=env))
        finals = [poll_until_done(web.client, t, timeout=90) for t in task_ids]
        recovered_in = time.monotonic() - killed_at
        streams = [
            read_stream(web.client, events_path(t), headers=headers_for("alice")) for t in task_ids
        ]
    finally:
        for worker in workers:
            worker.stop()
        web.stop()

    whole = "".join(tokens)
    assert [f["status"] for f in finals] == ["completed"] * 10
    for events in streams:
        assert content_of(events) == whole
        assert [e.event for e in events].count("result") == 1
    print(f"last kill to every task done: {recovered_in:.1f} s")


def test_a_replacement_under_the_same_node_name_recovers_the_dead_workers_tasks(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    """A unit or container restarted in place reuses its node name: liveness belongs to the
    process, so the dead one's deliveries do not wait for the visibility timeout."""
    key = "restarted in place"
    tokens = [f" n{i}" for i in range(20)]
    llm.script(key, tokens=tokens, delay=0.1)
    url = redis_db_url(redis_server.url, SAME_NAME_DB)
    env = {**_llm_worker_env(llm_server), "WORKER_LEASE_SECONDS": "2"}
    web = start_web(url)
    first = start_worker(url, env=env, name="agents@fixed-host")
    second = None
    try:
        task_ids = [submit(web.client, "simple_llm_agent", key) for _ in range(5)]
        wait_for(lambda: len(llm.calls(key)) == 5, timeout=30)
        first.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        second = start_worker(url, env=env, name="agents@fixed-host")
        finals = [poll_until_done(web.client, t, timeout=60) for t in task_ids]
        recovered_in = time.monotonic() - killed_at
    finally:
        if second is not None:
            second.stop()
        first.stop()
        web.stop()

    assert [f["status"] for f in finals] == ["completed"] * 5
    assert [f["result"]["metadata"]["attempt"] for f in finals] == [2] * 5
    print(f"recovered under the same name in {recovered_in:.1f} s")
    assert recovered_in < 30
