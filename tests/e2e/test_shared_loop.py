"""Many tasks on one shared event loop: each keeps its own time limit, cancellation and result;
and a task that blocks the loop is named in the worker's log. The test agents come in through
``AGENT_MODULES`` (``tests.support.agents``), as a user's own would."""

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from contract.tasks import INVOKE_AGENT_WITH_STREAMING
from scripts.embedded_redis import EmbeddedRedis
from tests.e2e.conftest import Stack, _llm_worker_env, _stack
from tests.support import redis_databases
from tests.support.agents import BLOCK_SECONDS
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.polling import TERMINAL, poll_until_done, submit
from teststack.processes import wait_for
from teststack.stack import headers_for, redis_db_url, start_worker

SHARED_DB, CROWD_DB = redis_databases.SHARED, redis_databases.CROWD
STREAMING = INVOKE_AGENT_WITH_STREAMING
SOFT_LIMIT = 3
AGENT_MODULES = "tests.support.agents"


@pytest.fixture(scope="module")
def shared_stack(redis_server: EmbeddedRedis, llm_server: LLMServerProcess) -> Iterator[Stack]:
    worker_env = {
        **_llm_worker_env(llm_server),
        "AGENT_EVENT_LOOP": "shared",
        "CELERY_TASK_SOFT_TIME_LIMIT": str(SOFT_LIMIT),
        "AGENT_MODULES": AGENT_MODULES,
    }
    yield from _stack(
        redis_db_url(redis_server.url, SHARED_DB),
        worker_env=worker_env,
        web_env={"AGENT_MODULES": AGENT_MODULES},
    )


def test_fifty_tasks_on_one_loop_end_on_their_own_terms(
    shared_stack: Stack, llm: LLMControl
) -> None:
    client = shared_stack.web.client
    short = [f" t{i}" for i in range(10)]
    long = [f" w{i}" for i in range(200)]
    for i in range(48):
        llm.script(f"one of fifty #{i}", tokens=short, delay=0.05)
    llm.script("the one that runs out of time", tokens=long, delay=0.05)
    llm.script("the one that is cancelled", tokens=long, delay=0.05)
    messages = [f"one of fifty #{i}" for i in range(48)]
    messages += ["the one that runs out of time", "the one that is cancelled"]

    started = time.monotonic()
    task_ids = {}
    for message in messages:
        task_ids[message] = submit(client, "simple_llm_agent", message, stream=True)
    wait_for(lambda: len(llm.calls("the one that is cancelled")) == 1, timeout=10)
    cancel = client.post(
        f"/api/v1/agents/tasks/{task_ids['the one that is cancelled']}/cancel",
        headers=headers_for("alice"),
    )
    assert cancel.status_code == 202

    final: dict[str, dict[str, Any]] = {}

    def all_done() -> bool:
        for message, task_id in task_ids.items():
            if message not in final:
                status = client.get(
                    f"/api/v1/agents/tasks/{task_id}", headers=headers_for("alice")
                ).json()
                if status["status"] in TERMINAL:
                    final[message] = status
        return len(final) == len(task_ids)

    wait_for(all_done, timeout=30, interval=0.2)
    elapsed = time.monotonic() - started

    for message in messages[:48]:
        assert final[message]["status"] == "completed", final[message]
        assert final[message]["result"]["content"] == "".join(short)
    timed_out = final["the one that runs out of time"]
    assert timed_out["status"] == "failed"
    error = timed_out["error"]
    assert error["type"] == "AgentTimeoutError"
    assert error["reason"] == "timeout"
    assert "".join(long).startswith(error["content"])
    assert 0 < len(error["content"]) < len("".join(long))
    assert final["the one that is cancelled"]["status"] == "cancelled"
    assert llm.calls("the one that is cancelled")[0]["disconnected"] is True
    # Side by side, not one after another (48 x 0.5 s alone would take 24 s).
    assert elapsed < SOFT_LIMIT + 10


def test_a_blocking_call_is_logged_with_its_task_and_the_lag(shared_stack: Stack) -> None:
    client = shared_stack.web.client
    worker = shared_stack.worker
    assert worker is not None
    task_id = submit(client, "blocking_agent", "hold the loop")

    status = poll_until_done(client, task_id)

    assert status["result"]["content"] == "unblocked"

    def blocked_lines() -> list[str]:
        # ``tasks=`` names every task running then, sorted: an earlier test's may be among them
        return [
            line
            for line in worker.output(tail=10**7).splitlines()
            if "event_loop_blocked" in line
            and task_id in line.split("tasks=")[-1].split()[0].split(",")
        ]

    wait_for(lambda: bool(blocked_lines()), timeout=10, message=worker.output)
    [line] = blocked_lines()
    lag_ms = int(line.split("lag_ms=")[1].split()[0])
    assert BLOCK_SECONDS * 1000 * 0.8 <= lag_ms < BLOCK_SECONDS * 1000 + 500


def test_agents_of_agent_modules_are_listed_and_run(shared_stack: Stack) -> None:
    client = shared_stack.web.client

    listed = client.get("/api/v1/agents", headers=headers_for("alice")).json()["agents"]
    task_id = submit(client, "shouting_agent", "quiet please")

    assert {"id": "shouting_agent", "description": "Answers in capitals."} in listed
    assert poll_until_done(client, task_id)["result"]["content"] == "QUIET PLEASE"


def test_more_tasks_at_once_than_a_default_redis_pool_holds_all_complete(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    """300 calls streaming at once on one loop: redis-py's default pool stops at 100
    connections and failed the rest with MaxConnectionsError; ours lets a command wait."""
    key = "three hundred at once"
    tokens = [f" c{i}" for i in range(20)]
    llm.script(key, tokens=tokens, delay=0.02)
    url = redis_db_url(redis_server.url, CROWD_DB)
    worker = start_worker(
        url, env={**_llm_worker_env(llm_server), "AGENT_EVENT_LOOP": "shared"}, concurrency=300
    )
    producer = Celery(broker=url, backend=url)
    try:
        results = [
            producer.send_task(
                STREAMING,
                kwargs={"agent_id": "simple_llm_agent", "message": key, "user_id": "u"},
                queue="agent-tasks",
            )
            for _ in range(300)
        ]
        wait_for(lambda: all(r.ready() for r in results), timeout=90, interval=0.5)
        states = Counter(
            r.state if r.state == "SUCCESS" else f"{r.state}:{r.result!r}" for r in results
        )
        contents = {_content(r) for r in results if r.state == "SUCCESS"}
    finally:
        producer.close()
        worker.stop()

    assert states == {"SUCCESS": 300}
    assert contents == {"".join(tokens)}


def _content(result: AsyncResult[Any]) -> str:
    """The answer of an agent task that succeeded."""
    value = result.result
    assert isinstance(value, dict), value
    content: str = value["content"]
    return content
