"""Per-user caps with real processes: each refuses with 429, Retry-After and a sentence naming
it, changes nothing, frees its slot when the task ends, and heals when a task vanished; and
one user's backlog does not starve another's task."""

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.settings import WebSettings
from contract import keys
from contract.task_record import TaskRecord, encode_record
from contract.tasks import AGENT_QUEUE, DEFAULT_PRIORITY, INVOKE_AGENT_ASYNC, agent_task_kwargs
from scripts.embedded_redis import EmbeddedRedis
from tests.e2e.conftest import Stack, _stack
from tests.support import redis_databases
from teststack.polling import TERMINAL, invoke, poll_until_done, submit
from teststack.processes import wait_for
from teststack.sse import events_path
from teststack.stack import headers_for, queued, redis_db_url, start_web, start_worker

CAPS = {
    "MAX_ACTIVE_TASKS_PER_USER": "3",
    "MAX_URGENT_TASKS_PER_USER": "1",
    "MAX_STREAMS_PER_USER": "2",
    "MAX_TOKEN_MINTS_PER_MINUTE": "3",
}
WORDS = " ".join(f"w{i}" for i in range(20))  # 20 words, ECHO_WORD_DELAY apart


@pytest.fixture(scope="module")
def capped(redis_server: EmbeddedRedis) -> Iterator[Stack]:
    worker_env = {"ECHO_WORD_DELAY": "0.1", "WORKER_LEASE_SECONDS": "2"}
    yield from _stack(
        redis_db_url(redis_server.url, redis_databases.CAPS), worker_env=worker_env, web_env=CAPS
    )


def _refused(response: httpx.Response, cap: str) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["cap"] == cap
    assert int(response.headers["Retry-After"]) >= 1
    assert "MAX_" in body["detail"]


def _wait_done(stack: Stack, task_ids: list[str]) -> None:
    for task_id in task_ids:
        poll_until_done(stack.web.client, task_id, timeout=60)


def test_active_tasks_cap_refuses_then_frees_a_slot_when_a_task_ends(capped: Stack) -> None:
    raw = redis.Redis.from_url(capped.redis_url)
    try:
        accepted = [submit(capped.web.client, "echo", WORDS) for _ in range(3)]
        queued_before = queued(raw, AGENT_QUEUE)
        refused = invoke(capped.web.client, "echo", WORDS)
        _refused(refused, "active_tasks")
        assert queued(raw, AGENT_QUEUE) <= queued_before  # nothing was queued for it
        assert "one too many" not in str(raw.keys("agent-service:task:*"))

        poll_until_done(capped.web.client, accepted[0], timeout=60)
        again: list[httpx.Response] = []
        wait_for(lambda: _accepted(again, invoke(capped.web.client, "echo", WORDS)), timeout=10)
    finally:
        raw.close()
    _wait_done(capped, [*accepted, again[-1].json()["task_id"]])


def _accepted(responses: list[httpx.Response], response: httpx.Response) -> bool:
    responses.append(response)
    return response.status_code == 202


def test_a_cancelled_task_and_a_failed_one_give_their_slots_back(capped: Stack) -> None:
    task_ids = [submit(capped.web.client, "echo", WORDS) for _ in range(2)]
    failing = submit(capped.web.client, "simple_llm_agent", "no LLM configured here")
    cancel = f"/api/v1/agents/tasks/{task_ids[0]}/cancel"
    assert capped.web.client.post(cancel, headers=headers_for("alice")).status_code == 202

    finals = [poll_until_done(capped.web.client, t, timeout=60) for t in [*task_ids, failing]]

    assert [f["status"] for f in finals] == ["cancelled", "completed", "failed"]
    fresh = [submit(capped.web.client, "echo", "three again") for _ in range(3)]
    _wait_done(capped, fresh)


def test_urgent_tasks_have_a_smaller_cap_of_their_own(capped: Stack) -> None:
    urgent = submit(capped.web.client, "echo", WORDS, priority=9)
    _refused(invoke(capped.web.client, "echo", WORDS, priority=8), "urgent_tasks")
    normal = submit(capped.web.client, "echo", WORDS, priority=3)  # still room among the three

    _wait_done(capped, [urgent, normal])


def test_stream_cap_counts_open_streams_and_frees_one_when_it_closes(capped: Stack) -> None:
    task_id = submit(capped.web.client, "echo", WORDS)
    path = events_path(task_id)
    alice = headers_for("alice")
    with (
        httpx.Client(base_url=capped.web.base_url, timeout=30) as one,
        httpx.Client(base_url=capped.web.base_url, timeout=30) as two,
    ):
        with (
            one.stream("GET", path, headers=alice) as first,
            two.stream("GET", path, headers=alice) as second,
        ):
            assert (first.status_code, second.status_code) == (200, 200)
            _refused(capped.web.client.get(path, headers=alice), "streams")
            assert capped.web.client.get(path, headers=headers_for("bob")).status_code == 404
        # Both closed: a new one opens.
        wait_for(
            lambda: _stream_status(capped, path) == 200,
            timeout=10,
            message="a closed stream's slot was not given back",
        )
    poll_until_done(capped.web.client, task_id, timeout=60)


def _stream_status(stack: Stack, path: str) -> int:
    with stack.web.client.stream("GET", path, headers=headers_for("alice")) as response:
        return response.status_code


def test_token_mints_are_capped_per_minute(capped: Stack) -> None:
    token = "/api/v1/auth/token"
    statuses = [
        capped.web.client.post(token, headers=headers_for("bob")).status_code for _ in range(4)
    ]
    refused = capped.web.client.post(token, headers=headers_for("bob"))

    # The minute may turn between two requests: then a fourth one is allowed.
    assert statuses[:3] == [200, 200, 200]
    if refused.status_code == 429:
        _refused(refused, "token_mints")
        assert int(refused.headers["Retry-After"]) <= 61


def test_a_slot_whose_task_vanished_is_freed_by_the_workers(capped: Stack) -> None:
    """A web process that died between taking a slot and recording its task: the slot would be
    held for ever. The workers' recovery frees it."""
    raw = redis.Redis.from_url(capped.redis_url)
    vanished = [str(uuid.uuid4()) for _ in range(3)]
    try:
        long_ago = time.time() - 3600
        raw.zadd(keys.user_active_tasks("bob"), {task_id: long_ago for task_id in vanished})
        raw.sadd(keys.USERS_WITH_ACTIVE_TASKS, "bob")
        _refused(invoke(capped.web.client, "echo", WORDS, user="bob"), "active_tasks")

        started = time.monotonic()
        wait_for(lambda: raw.zcard(keys.user_active_tasks("bob")) == 0, timeout=30)
        healed_in = time.monotonic() - started
    finally:
        raw.close()
    print(f"vanished tasks' slots freed in {healed_in:.1f} s")
    task_id = submit(capped.web.client, "echo", "room again", user="bob")
    assert poll_until_done(capped.web.client, task_id, timeout=30, user="bob")["status"] in TERMINAL


def test_a_task_its_web_process_accepted_and_never_sent_is_sent_by_the_workers(
    capped: Stack,
) -> None:
    """With the broker elsewhere, a web process that died between recording a task and sending
    its message left it queued for ever (and an idempotent replay hands out its id). The
    workers' recovery sends it: it runs, ends, and gives its slot back."""
    raw = redis.Redis.from_url(capped.redis_url)
    task_id = str(uuid.uuid4())
    never_sent = TaskRecord(
        task_id=task_id,
        owner="bob",
        agent_id="echo",
        task_name=INVOKE_AGENT_ASYNC,
        created_at=time.time() - 3600,
        queue=AGENT_QUEUE,
        kwargs=agent_task_kwargs(agent_id="echo", message="never sent", user_id="bob"),
        priority=DEFAULT_PRIORITY,
    )
    try:
        for name, value in encode_record(never_sent).items():
            raw.hset(keys.task_record(task_id), name, value)
        raw.expire(keys.task_record(task_id), 600)
        raw.zadd(keys.user_active_tasks("bob"), {task_id: time.time() - 3600})
        raw.sadd(keys.USERS_WITH_ACTIVE_TASKS, "bob")

        final = poll_until_done(capped.web.client, task_id, timeout=60, user="bob")
        wait_for(lambda: raw.zcard(keys.user_active_tasks("bob")) == 0, timeout=30)
    finally:
        raw.close()
    assert final["status"] == "completed"
    assert final["result"]["content"] == "never sent"


def test_one_users_backlog_does_not_starve_another_users_task(redis_server: EmbeddedRedis) -> None:
    """User A sends 300 tasks as fast as it can; user B then sends one: with the default caps,
    A has at most 20 queued or running, and B's answer comes within 10 s."""
    url = redis_db_url(redis_server.url, redis_databases.FAIRNESS)
    defaults = {name: str(WebSettings.model_fields[name.lower()].default) for name in CAPS}
    # A's tasks last 10 s (20 words 0.5 s apart): none ends and frees its slot while the 300
    # are sent, however busy the machine.
    worker = start_worker(url, env={"ECHO_WORD_DELAY": "0.5"})
    web = start_web(url, env=defaults)
    try:
        statuses = [invoke(web.client, "echo", WORDS).status_code for _ in range(300)]
        started = time.monotonic()
        bobs = submit(web.client, "echo", "my turn", user="bob")
        final = poll_until_done(web.client, bobs, timeout=30, user="bob")
        waited = time.monotonic() - started
    finally:
        web.stop()
        worker.stop(grace=1)  # A's tasks are of no more interest
    print(
        f"A: {statuses.count(202)} accepted, {statuses.count(429)} refused; B waited {waited:.1f} s"
    )
    assert statuses.count(202) == 20
    assert statuses.count(429) == 280
    assert final["status"] == "completed"
    assert waited < 10


def test_sessions_are_capped_per_user_until_one_is_deleted(capped: Stack) -> None:
    # A user of its own: the database is shared with the other tests of this process, whose users
    # may hold sessions already.
    user, key = f"sessions-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    web = start_web(
        capped.redis_url, env={"API_KEYS": f"{key}:{user}", "MAX_SESSIONS_PER_USER": "2"}
    )
    headers = {"X-API-Key": key}
    try:
        created = [web.client.post("/api/v1/sessions", headers=headers) for _ in range(2)]
        refused = web.client.post("/api/v1/sessions", headers=headers)
        deleted = web.client.delete(
            f"/api/v1/sessions/{created[0].json()['session_id']}", headers=headers
        )
        again = web.client.post("/api/v1/sessions", headers=headers)
    finally:
        web.stop()

    assert [r.status_code for r in created] == [201, 201]
    _refused(refused, "sessions")
    assert refused.json()["limit"] == 2
    assert deleted.status_code == 204
    assert again.status_code == 201, again.text
