"""Live streaming through the real processes: worker -> Redis log + pub/sub -> web hub -> SSE."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import accept, poll_until_done, submit
from teststack.processes import wait_for
from teststack.sse import Received, content_of, events_path, read_stream
from teststack.stack import headers_for

#: The agent task, streaming and control behave the same on either event-loop runtime.
RUN_IN_BOTH_LOOP_MODES = True
RUN_ON_BOTH_BROKERS = True

ALICE = headers_for("alice")


def _client(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.web.base_url, timeout=30)


def _status(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/agents/tasks/{task_id}", headers=ALICE)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_early_midway_and_late_clients_see_the_same_complete_sequence(
    stack: Stack, llm: LLMControl
) -> None:
    key = "stream this to three clients"
    tokens = [f" t{i}" for i in range(30)]
    llm.script(key, tokens=tokens, delay=0.05)
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)

    with ThreadPoolExecutor(2) as pool, _client(stack) as c1, _client(stack) as c2:
        early = pool.submit(read_stream, c1, events_path(task_id), headers=ALICE)
        wait_for(lambda: _status(c2, task_id)["stage"] == "generating", timeout=10)
        midway = pool.submit(read_stream, c2, events_path(task_id), headers=ALICE)
        early_events, midway_events = early.result(), midway.result()
    polled = poll_until_done(stack.web.client, task_id)
    late_events = read_stream(stack.web.client, events_path(task_id), headers=ALICE)

    assert early_events == midway_events == late_events
    kinds = [e.event for e in early_events]
    assert kinds[0] == "status"
    assert early_events[0].data == {"status": "queued"}
    assert {"status": "running", "attempt": 1} in [e.data for e in early_events]
    assert "progress" in kinds
    assert kinds[-1] == "result"
    assert kinds.count("result") == 1
    assert early_events[-1].data == polled["result"]
    assert content_of(early_events) == "".join(tokens) == polled["result"]["content"]
    indexes = [e.data["index"] for e in early_events if e.event == "chunk"]
    assert indexes == list(range(len(indexes)))
    ids = [e.id for e in early_events]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnect_with_last_event_id_gets_exactly_the_events_after_it(
    stack: Stack, llm: LLMControl, how: str
) -> None:
    key = f"resume me ({how})"
    llm.script(key, tokens=[f" r{i}" for i in range(20)], delay=0.03)
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)

    first = read_stream(
        stack.web.client,
        events_path(task_id),
        headers=ALICE,
        stop=lambda got: sum(e.event == "chunk" for e in got) == 5,
    )
    cursor = first[-1].id
    if how == "header":
        rest = read_stream(
            stack.web.client, events_path(task_id), headers={**ALICE, "Last-Event-ID": cursor}
        )
    else:
        rest = read_stream(
            stack.web.client, f"{events_path(task_id)}?last_event_id={cursor}", headers=ALICE
        )
    whole = read_stream(stack.web.client, events_path(task_id), headers=ALICE)

    assert first + rest == whole
    assert content_of(whole) == "".join(f" r{i}" for i in range(20))


def test_finished_task_replays_and_ends(stack: Stack, llm: LLMControl) -> None:
    task_id = submit(stack.web.client, "echo", "already done", stream=True)
    polled = poll_until_done(stack.web.client, task_id)

    events = read_stream(stack.web.client, events_path(task_id), headers=ALICE)

    assert [e.event for e in events][-1] == "result"
    assert events[-1].data == polled["result"]
    assert content_of(events) == "already done"


def test_failed_task_stream_ends_with_the_error_polling_shows(
    stack: Stack, llm: LLMControl
) -> None:
    key = "stream of a rejected request"
    llm.script(key, tokens=["x"], failures=[{"status": 400, "body": "bad model"}])
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)

    events = read_stream(stack.web.client, events_path(task_id), headers=ALICE)
    polled = poll_until_done(stack.web.client, task_id)

    assert events[-1].event == "error"
    assert events[-1].data == polled["error"]
    assert events[-1].data["type"] == "LLMRequestRejectedError"


def test_retry_announces_itself_with_reset_and_the_content_is_whole(
    stack: Stack, llm: LLMControl
) -> None:
    key = "stream through a retry"
    llm.script(key, tokens=["a", "b"], failures=[{"status": 503, "retry_after": 0}])
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)

    events = read_stream(stack.web.client, events_path(task_id), headers=ALICE)

    kinds = [e.event for e in events]
    retrying = next(e for e in events if e.data.get("status") == "retrying")
    assert retrying.data["error"]["type"] == "LLMUnavailableError"
    reset = next(e for e in events if e.event == "reset")
    assert reset.data == {"attempt": 2, "content": ""}
    assert kinds.index("reset") > kinds.index("status")
    assert content_of(events) == "ab"
    assert events[-1].event == "result"
    assert events[-1].data["metadata"]["attempt"] == 2


def test_stream_token_from_the_submit_opens_the_stream_without_a_key(
    stack: Stack, llm: LLMControl
) -> None:
    accepted = accept(stack.web.client, "echo", "token please", stream=True)

    events = read_stream(stack.web.client, accepted.stream_url)

    assert content_of(events) == "token please"


def test_stream_token_cannot_open_another_task(stack: Stack) -> None:
    first = accept(stack.web.client, "echo", "mine", stream=True)
    second = accept(stack.web.client, "echo", "also mine", stream=True)

    response = stack.web.client.get(f"{events_path(second.task_id)}?token={first.stream_token}")

    assert response.status_code == 404
    assert response.json() == {"detail": "task not found"}


@pytest.mark.parametrize(
    "token", ["forged", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.x"], ids=["junk", "dots", "bad-sig"]
)
def test_bad_stream_token_is_401(stack: Stack, token: str) -> None:
    task_id = submit(stack.web.client, "echo", "guarded", stream=True)

    response = stack.web.client.get(f"{events_path(task_id)}?token={token}")

    assert response.status_code == 401
    assert response.json() == {"detail": "invalid, expired or revoked token"}


def test_stream_refusals_before_any_stream_starts(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "refusals", stream=True)
    client = stack.web.client

    assert client.get(events_path(task_id)).status_code == 401
    assert client.get(events_path(task_id), headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get(events_path(task_id), headers=headers_for("bob")).status_code == 404
    assert client.get(events_path("0" * 36), headers=ALICE).status_code == 404
    bad_cursor = client.get(events_path(task_id), headers={**ALICE, "Last-Event-ID": "nope"})
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]


def test_stream_response_headers(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "headers", stream=True)

    with stack.web.client.stream("GET", events_path(task_id), headers=ALICE) as response:
        response.read()

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["cache-control"] == "no-store"


def test_token_never_appears_in_the_access_log(stack: Stack) -> None:
    accepted = accept(stack.web.client, "echo", "quiet token", stream=True)
    token = accepted.stream_token
    with stack.web.client.stream("GET", accepted.stream_url) as response:
        response.read()

    wait_for(lambda: "token=[redacted]" in stack.web.process.output(tail=10**7), timeout=5)
    assert token not in stack.web.process.output(tail=10**7)


def test_two_hundred_clients_share_three_redis_connections(stack: Stack, llm: LLMControl) -> None:
    key = "one task, two hundred readers"
    tokens = [f" c{i}" for i in range(40)]
    llm.script(key, tokens=tokens, delay=0.05)
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)
    admin = redis.Redis.from_url(stack.redis_url)
    clients_ready = threading.Barrier(201)
    seen_connections: list[int] = []

    def stream_connections() -> int:
        return sum(1 for c in admin.client_list() if c.get("name") == "agent-service:web:stream")

    def reader() -> list[Received]:
        with httpx.Client(base_url=stack.web.base_url, timeout=30) as client:
            got = read_stream(
                client,
                events_path(task_id),
                headers=ALICE,
                stop=lambda events: len(events) == 1,
            )
            clients_ready.wait(timeout=30)
            cursor = got[-1].id
            return got + read_stream(
                client, events_path(task_id), headers={**ALICE, "Last-Event-ID": cursor}
            )

    try:
        with ThreadPoolExecutor(200) as pool:
            futures = [pool.submit(reader) for _ in range(200)]
            clients_ready.wait(timeout=30)
            seen_connections.append(stream_connections())
            results = [f.result() for f in futures]
        wait_for(lambda: stream_connections() == 0, timeout=15)
    finally:
        admin.close()

    assert all(r == results[0] for r in results)
    assert content_of(results[0]) == "".join(tokens)
    assert results[0][-1].event == "result"
    assert seen_connections[0] <= 3


def test_stream_survives_redis_cutting_the_relays_subscription(
    stack: Stack, llm: LLMControl
) -> None:
    key = "keep going after the cut"
    tokens = [f" k{i}" for i in range(40)]
    llm.script(key, tokens=tokens, delay=0.04)
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)
    admin = redis.Redis.from_url(stack.redis_url)
    cut = threading.Event()

    def cut_after_ten_chunks(events: list[Received]) -> bool:
        if not cut.is_set() and sum(e.event == "chunk" for e in events) == 10:
            # What Redis does to a subscriber over its client-output-buffer-limit, or on restart.
            relay = [
                c["id"]
                for c in admin.client_list()
                if c.get("name") == "agent-service:web:stream" and int(c.get("sub", 0)) > 0
            ]
            assert len(relay) == 1
            assert admin.client_kill_filter(_id=relay[0]) == 1
            cut_at.append(time.monotonic())
            cut.set()
        return False

    cut_at: list[float] = []
    try:
        events = read_stream(
            stack.web.client, events_path(task_id), headers=ALICE, stop=cut_after_ten_chunks
        )
        ended_at = time.monotonic()
    finally:
        admin.close()

    assert cut.is_set()
    # The remaining 30 tokens take ~1.2 s; a relay that only noticed at its 5 s idle re-read of
    # the log would take longer.
    assert ended_at - cut_at[0] < 4.0
    assert content_of(events) == "".join(tokens)
    assert events[-1].event == "result"
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert len(set(ids)) == len(ids)


def test_reconnect_after_the_terminal_event_ends_at_once(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "all done", stream=True)
    whole = read_stream(stack.web.client, events_path(task_id), headers=ALICE)

    started = time.monotonic()
    again = read_stream(
        stack.web.client, events_path(task_id), headers={**ALICE, "Last-Event-ID": whole[-1].id}
    )

    assert whole[-1].event == "result"
    assert again == []
    assert time.monotonic() - started < 2.0
