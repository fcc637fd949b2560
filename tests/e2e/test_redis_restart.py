"""The service rides out a Redis restart: Redis is SIGKILLed (no shutdown) and started again on
the same port, from its append-only file, or empty when it has no persistence. And a Redis that
stops answering (frozen), or answers but refuses writes (its memory full, or a failover made it
a replica).

Each test starts its own Redis (``teststack.redis_server``), never the session's, since it
kills it; and its own worker, web or beat, since a restart is felt by every process at once. The
outage lasts until the processes under test have noticed it (the worker logs the lost broker,
the web's ``/readyz`` answers 503), and, where a worker is under test, at least the couple of
seconds a restart takes (``OUTAGE_SECONDS``), so that its reconnect attempts meet a closed port.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from contract.events import EventType
from contract.tasks import CLEANUP_QUEUE
from streaming.event_log import APPEND_SCRIPT, NewEvent, script_call
from streaming.events import parse_event_id
from tests.e2e.conftest import _llm_worker_env
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.polling import TERMINAL, invoke, poll_until_done, submit
from teststack.processes import ManagedProcess, wait_for
from teststack.redis_server import RedisServer
from teststack.sse import Received, content_of, events_path, read_stream
from teststack.stack import (
    WebServer,
    headers_for,
    queued,
    start_beat,
    start_web,
    start_worker,
)
from teststack.task_log import log_entries

ALICE = headers_for("alice")
LOST_BROKER = "Connection to broker lost"
#: Seconds a test waits for what should follow Redis's return; generous for a busy machine.
RECOVERY_TIMEOUT = 90.0
#: How long Redis stays away: a restart of a few seconds, as a supervisor or a failover does it.
OUTAGE_SECONDS = 2.0
#: How long a frozen Redis stays silent: past the clients' socket timeouts (5 s), within the
#: worker's REDIS_OUTAGE_LIMIT (30 s by default).
FROZEN_SECONDS = 12.0
#: How long Redis's memory stays full: past several retries of every write, within the worker's
#: REDIS_OUTAGE_LIMIT (30 s by default).
FULL_SECONDS = 8.0
#: What a worker logs when Redis refused its broker bookkeeping (a full memory, a replica).
BROKER_WRITE_REFUSED = "broker_write_refused"
#: Seconds the tasks that ran through the restart get to end once Redis is back.
ENDING_TIMEOUT = 60.0
#: Which of the stream's events ends it, for each final status of polling.
TERMINAL_EVENT = {"completed": "result", "failed": "error", "cancelled": "cancelled"}


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", persistence="aof") as server:
        yield server


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", persistence="none") as server:
        yield server


def _concurrency(pool: str) -> int:
    return 100 if pool == "threads" else 4


def _stop_all(*processes: ManagedProcess | WebServer | None) -> None:
    for process in processes:
        if process is not None:
            process.stop()


def _readyz(web: WebServer) -> int:
    try:
        return web.client.get("/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


class BackgroundStream:
    """A client reading ``task_id``'s stream to its end on a connection of its own."""

    def __init__(self, pool: ThreadPoolExecutor, web: WebServer, task_id: str) -> None:
        self.first_event = threading.Event()
        self.events: Future[list[Received]] = pool.submit(self._read, web, task_id)

    def _read(self, web: WebServer, task_id: str) -> list[Received]:
        def note(received: list[Received]) -> bool:
            self.first_event.set()
            return False

        with httpx.Client(base_url=web.base_url, timeout=10.0) as client:
            return read_stream(
                client, events_path(task_id), headers=ALICE, stop=note, timeout=RECOVERY_TIMEOUT
            )

    def wait_open(self, *, timeout: float = 30.0) -> None:
        """Until the first event has arrived: the stream is open and subscribed."""
        assert self.first_event.wait(timeout), "the stream sent nothing"


def _append(server: RedisServer, task_id: str, events: list[NewEvent]) -> None:
    """Append ``events`` to the task's log the way a worker does (the log's own script)."""
    client = server.client()
    try:
        task_keys, args = script_call(task_id, events, maxlen=1000, ttl=3600)
        client.register_script(APPEND_SCRIPT)(keys=task_keys, args=args)
    finally:
        client.close()


def _unacked(server: RedisServer) -> int:
    """Deliveries the broker holds for a worker: an idle worker holds none (polling may show a
    task completed a moment before the worker acknowledged it)."""
    client = server.client()
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


def _events_after(server: RedisServer, task_id: str, wall_ms: int) -> list[int]:
    """The timestamps (ms) of the task's log entries written at or after ``wall_ms``."""
    client = server.client()
    try:
        entries = log_entries(client, task_id, start=f"{wall_ms}-0")
    finally:
        client.close()
    return [parse_event_id(entry.id)[0] for entry in entries]


def _assert_stream_agrees(final: dict[str, Any], events: list[Received]) -> None:
    assert events, f"the stream of a {final['status']} task carried no event"
    assert events[-1].event == TERMINAL_EVENT[final["status"]], (final, events[-3:])
    if final["status"] == "completed":
        assert content_of(events) == final["result"]["content"]


@pytest.mark.e2e
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_idle_worker_runs_a_new_task_after_redis_restarts_from_aof(
    pool: str, aof_redis: RedisServer, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    key = f"after the restart {pool}"
    tokens = [f" w{i}" for i in range(5)]
    llm.script(key, tokens=tokens)
    url = aof_redis.url()
    worker = start_worker(url, env=_llm_worker_env(llm_server), pool=pool, concurrency=4)
    web = None
    try:
        web = start_web(url)
        # A task before: the worker's clients hold connections that the restart kills.
        before = submit(web.client, "simple_llm_agent", key, stream=True)
        assert poll_until_done(web.client, before, timeout=60)["status"] == "completed"
        wait_for(lambda: _unacked(aof_redis) == 0, timeout=30, message="the task is not acked")
        with aof_redis.outage(lasting=OUTAGE_SECONDS):
            worker.wait_for_output(LOST_BROKER, timeout=30)
        task_id = submit(web.client, "simple_llm_agent", key, stream=True)
        final = poll_until_done(web.client, task_id, timeout=RECOVERY_TIMEOUT)
        events = read_stream(web.client, events_path(task_id), headers=ALICE)
        took = time.monotonic() - aof_redis.ready_at
        alive = worker.alive()
        worker_log = worker.output(tail=20_000)
    finally:
        _stop_all(web, worker)

    print(f"\n[{pool}] Redis back -> new task completed: {took:.1f} s")
    assert alive, "the worker exited"
    assert final["status"] == "completed", (final.get("error"), worker_log)
    assert final["result"]["content"] == "".join(tokens)
    _assert_stream_agrees(final, events)


@pytest.mark.e2e
def test_cancel_reaches_a_running_task_after_redis_restarts_from_aof(
    aof_redis: RedisServer, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    """The worker's cancel watcher, subscribed before the restart, subscribes again: a task
    running after the restart is cancelled mid-stream (its key is checked only at its start)."""
    key = f"cancel after the restart {uuid.uuid4().hex[:6]}"
    llm.script(key, tokens=[f" c{i}" for i in range(200)], delay=0.05)
    url = aof_redis.url()
    # One process runs both tasks: the watcher that the first one started is the one tested.
    worker = start_worker(url, env=_llm_worker_env(llm_server), pool="prefork", concurrency=1)
    web = None
    try:
        web = start_web(url)
        llm.script("before the restart", tokens=["done"])
        before = submit(web.client, "simple_llm_agent", "before the restart", stream=True)
        assert poll_until_done(web.client, before, timeout=60)["status"] == "completed"
        wait_for(lambda: _unacked(aof_redis) == 0, timeout=30, message="the task is not acked")
        with aof_redis.outage(lasting=OUTAGE_SECONDS):
            worker.wait_for_output(LOST_BROKER, timeout=30)
        task_id = submit(web.client, "simple_llm_agent", key, stream=True)
        cancelled_at: list[float] = []

        def cancel_after_three_chunks(events: list[Received]) -> bool:
            if not cancelled_at and sum(e.event == "chunk" for e in events) == 3:
                cancelled_at.append(time.monotonic())
                answer = web.client.post(f"/api/v1/agents/tasks/{task_id}/cancel", headers=ALICE)
                assert answer.status_code == 202
            return False

        events = read_stream(
            web.client,
            events_path(task_id),
            headers=ALICE,
            stop=cancel_after_three_chunks,
            timeout=RECOVERY_TIMEOUT,
        )
        ended_after = time.monotonic() - cancelled_at[0]
        final = poll_until_done(web.client, task_id, timeout=30)
    finally:
        _stop_all(web, worker)
    print(f"\ncancel -> stream ended: {ended_after:.2f} s")
    assert events[-1].event == "cancelled"
    assert final["status"] == "cancelled"
    assert sum(e.event == "chunk" for e in events) < 200
    assert ended_after < 5.0  # the 200 chunks take 10 s: the cancel, not the end, stopped it


@pytest.mark.e2e
def test_beat_keeps_sending_jobs_after_redis_restarts_from_aof(
    aof_redis: RedisServer, tmp_path: Path
) -> None:
    """Beat sends a job every second onto the cleanup queue (no worker consumes it): after the
    restart, new messages keep arriving."""
    url = aof_redis.url()
    beat = start_beat(
        url,
        schedule_file=str(tmp_path / "beat-schedule"),
        env={
            "SCHEDULE_CLEANUP_TEMP_FILES": "1",
            "SCHEDULE_CLEANUP_EXPIRED_SESSIONS": "",
            "SCHEDULE_ARCHIVE_OLD_AUDIT_LOGS": "",
            "SCHEDULE_CLEANUP_TOKEN_BLACKLIST": "",
        },
    )
    client = aof_redis.client()
    try:
        beat.wait_until(lambda: queued(client, CLEANUP_QUEUE) >= 2, timeout=30, what="2 jobs")
        client.close()
        with aof_redis.outage():
            beat.wait_for_output("beat_skipped", timeout=30)
        client = aof_redis.client()
        queued_after_restart = queued(client, CLEANUP_QUEUE)
        beat.wait_until(
            lambda: queued(client, CLEANUP_QUEUE) >= queued_after_restart + 3,
            timeout=RECOVERY_TIMEOUT,
            what="3 jobs sent after the restart",
        )
        alive = beat.alive()
    finally:
        client.close()
        beat.stop()
    assert alive


@pytest.mark.e2e
def test_readyz_is_503_during_the_outage_and_200_after(aof_redis: RedisServer) -> None:
    web = start_web(aof_redis.url())
    try:
        assert _readyz(web) == 200
        with aof_redis.outage():
            wait_for(lambda: _readyz(web) == 503, timeout=30)
            body = web.client.get("/readyz", timeout=5).json()
        wait_for(lambda: _readyz(web) == 200, timeout=RECOVERY_TIMEOUT)
        took = time.monotonic() - aof_redis.ready_at
        # Every request after the return works, the first ones included.
        submitted = [invoke(web.client, "echo", "hi").status_code for _ in range(5)]
    finally:
        web.stop()
    print(f"\nRedis back -> /readyz 200: {took:.1f} s")
    assert body["redis"] == "unreachable"
    assert submitted == [202] * 5


@pytest.mark.e2e
def test_requests_are_503_not_hung_while_redis_is_frozen(volatile_redis: RedisServer) -> None:
    """A Redis that stops answering without closing its connections (SIGSTOP here; a network
    partition or a stalled host elsewhere): every request that needs it answers 503 within a
    bound instead of hanging."""
    web = start_web(volatile_redis.url())
    try:
        minted = web.client.post("/api/v1/auth/token", headers=ALICE)
        bearer = {"Authorization": f"Bearer {minted.json()['access_token']}"}
        invoke_path = "/api/v1/agents/{}/invoke-async"
        requests = {
            "bearer": ("echo", bearer, {}),
            "idempotency key": ("echo", ALICE, {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}),
            "unknown agent": ("no-such-agent", ALICE, {}),
            "plain": ("echo", ALICE, {}),
        }
        answers: dict[str, tuple[int, float]] = {}
        with volatile_redis.frozen():
            for name, (agent, credential, extra) in requests.items():
                started = time.monotonic()
                response = web.client.post(
                    invoke_path.format(agent),
                    json={"message": "hi"},
                    headers={**credential, **extra},
                    timeout=60,
                )
                answers[name] = (response.status_code, time.monotonic() - started)
    finally:
        web.stop()
    print(
        "\n"
        + ", ".join(f"{name}: {status} in {took:.1f} s" for name, (status, took) in answers.items())
    )
    # An agent id the catalogue cannot be read for is unknown (the built-in agents stay known).
    assert {name: status for name, (status, _) in answers.items()} == {
        "bearer": 503,
        "idempotency key": 503,
        "unknown agent": 404,
        "plain": 503,
    }
    # A command gives up after REQUEST_TIMEOUT (5 s), without trying again; generous bound.
    assert all(took < 30 for _, took in answers.values())


@pytest.mark.e2e
def test_first_requests_after_a_restart_succeed_when_nothing_probed_the_outage(
    aof_redis: RedisServer,
) -> None:
    """Connections pooled before the restart are dead: the first requests after it must not
    fail on them (nothing touched Redis during the outage to find out)."""
    web = start_web(aof_redis.url())
    try:
        first = submit(web.client, "echo", "before", stream=True)
        with aof_redis.outage():
            pass
        answers = [
            invoke(web.client, "echo", "hi").status_code,
            web.client.get(f"/api/v1/agents/tasks/{first}", headers=ALICE).status_code,
            _readyz(web),
        ]
    finally:
        web.stop()
    assert answers == [202, 200, 200]


@pytest.mark.e2e
def test_open_stream_resumes_and_ends_after_redis_restarts_from_aof(
    aof_redis: RedisServer,
) -> None:
    """A client streams a task while Redis restarts: the events written after the restart
    reach it, and the stream ends with the terminal one. (The events are written here, as a
    worker writes them, so that only the web's side is under test.)"""
    web = start_web(aof_redis.url())
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        task_id = submit(web.client, "echo", "no worker runs me", stream=True)
        _append(aof_redis, task_id, [(EventType.STATUS, {"status": "running"})])
        _append(aof_redis, task_id, [(EventType.CHUNK, {"text": "before ", "index": 0})])
        stream = BackgroundStream(pool, web, task_id)
        stream.wait_open()
        with aof_redis.outage():
            wait_for(lambda: _readyz(web) == 503, timeout=30)
        wait_for(lambda: _readyz(web) == 200, timeout=RECOVERY_TIMEOUT)
        _append(aof_redis, task_id, [(EventType.CHUNK, {"text": "after", "index": 1})])
        _append(aof_redis, task_id, [(EventType.RESULT, {"content": "before after"})])
        events = stream.events.result(timeout=RECOVERY_TIMEOUT)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        web.stop()
    kinds = [e.event for e in events]
    assert kinds[kinds.index("chunk") :] == ["chunk", "chunk", "result"], kinds
    assert len({e.id for e in events}) == len(events), "an event came twice"
    assert content_of(events) == "before after"


@dataclass
class RestartRun:
    """What ``count`` streaming tasks running through a Redis restart came to."""

    finals: list[dict[str, Any]]
    streams: list[list[Received]]
    #: Seconds from Redis's return (or the interruption's end) until every task that had not
    #: ended wrote an event again.
    resumed_in: float
    #: The LLM calls made for the tasks (a task run twice calls it twice).
    llm_calls: int
    #: The final poll of a task submitted once the others had ended.
    after: dict[str, Any]
    #: Whether the worker was still running after that task.
    alive: bool


def _run_tasks_through_a_restart(
    *,
    pool: str,
    server: RedisServer,
    llm_server: LLMServerProcess,
    llm: LLMControl,
    count: int,
    interrupt: Callable[[ManagedProcess], None] | None = None,
) -> RestartRun:
    """``count`` streaming tasks, each read by a streaming client, running while Redis restarts
    (or while ``interrupt(worker)`` does something else to it); then, once they ended and the
    worker acknowledged them, one more task."""
    key = f"through a restart {uuid.uuid4().hex[:6]}"
    tokens = [f" r{i}" for i in range(60)]
    llm.script(key, tokens=tokens, delay=0.1)
    url = server.url()
    worker = start_worker(
        url, env=_llm_worker_env(llm_server), pool=pool, concurrency=_concurrency(pool)
    )
    web = None
    readers = ThreadPoolExecutor(max_workers=count)
    try:
        web = start_web(url)
        task_ids = [submit(web.client, "simple_llm_agent", key, stream=True) for _ in range(count)]
        streams = [BackgroundStream(readers, web, t) for t in task_ids]
        wait_for(lambda: len(llm.calls(key)) >= count, timeout=60)
        for stream in streams:
            stream.wait_open()
        if interrupt is None:
            with server.outage(lasting=OUTAGE_SECONDS):
                worker.wait_for_output(LOST_BROKER, timeout=30)
        else:
            interrupt(worker)
        back_at = time.monotonic()
        back_ms = int(time.time() * 1000)

        def running_again() -> bool:
            return all(_events_after(server, t, back_ms) or _ended(web, t) for t in task_ids)

        worker.wait_until(running_again, timeout=ENDING_TIMEOUT, what="every task writing again")
        resumed_in = time.monotonic() - back_at
        worker.wait_until(
            lambda: all(_ended(web, t) for t in task_ids),
            timeout=ENDING_TIMEOUT,
            what="every task ended",
        )
        finals = [poll_until_done(web.client, t, timeout=10) for t in task_ids]
        received = [s.events.result(timeout=30) for s in streams]
        worker.wait_until(lambda: _unacked(server) == 0, timeout=30, what="every delivery acked")
        llm.script("after the restart", tokens=["still here"])
        later = submit(web.client, "simple_llm_agent", "after the restart", stream=True)
        after = poll_until_done(web.client, later, timeout=RECOVERY_TIMEOUT)
        return RestartRun(
            finals=finals,
            streams=received,
            resumed_in=resumed_in,
            llm_calls=len(llm.calls(key)),
            after=after,
            alive=worker.alive(),
        )
    finally:
        readers.shutdown(wait=False, cancel_futures=True)
        _stop_all(web, worker)


def _assert_every_task_completed_once(run: RestartRun, count: int) -> None:
    """Every task ended completed, its stream agreeing with polling; none ran twice; the worker
    took a new task after the interruption and is still running."""
    for final, events in zip(run.finals, run.streams, strict=True):
        assert final["status"] in TERMINAL
        _assert_stream_agrees(final, events)
    outcomes = [(f["status"], (f.get("error") or {}).get("type")) for f in run.finals]
    assert outcomes == [("completed", None)] * count, "work that could go on did"
    assert run.llm_calls == count, "no task ran twice"
    assert run.after["status"] == "completed", "the worker takes new tasks after the interruption"
    assert run.alive, "the worker exited"


def _ended(web: WebServer, task_id: str) -> bool:
    response = web.client.get(f"/api/v1/agents/tasks/{task_id}", headers=ALICE)
    return response.status_code == 200 and response.json()["status"] in TERMINAL


@pytest.mark.e2e
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_streaming_tasks_running_through_a_redis_restart_all_end_agreeing(
    pool: str, aof_redis: RedisServer, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    # Fewer tasks than the pool has room for: the worker is waiting for more (a BRPOP in flight)
    # when the connection drops, as a worker with spare capacity is.
    count = 10 if pool == "threads" else 3
    run = _run_tasks_through_a_restart(
        pool=pool, server=aof_redis, llm_server=llm_server, llm=llm, count=count
    )
    print(f"\n[{pool}] Redis back -> every task running again: {run.resumed_in:.1f} s")
    _assert_every_task_completed_once(run, count)


#: What happens to Redis while tasks stream, how long, and what ends it (for the printed figure):
#: - frozen: it stops answering for longer than a client's socket timeout (SIGSTOP: connections
#:   stay open, nothing is lost);
#: - memory-full: it reaches ``maxmemory`` (``noeviction``) and refuses the tasks' events,
#:   outcomes and acknowledgements;
#: - demoted: a failover makes it a replica (every write refused with ``READONLY``, the worker's
#:   pending ``BRPOP`` ended with ``UNBLOCKED``) until the broker's address leads to a primary.
INTERRUPTIONS: dict[str, tuple[Callable[[RedisServer], Any], str]] = {
    "frozen": (lambda server: server.frozen(lasting=FROZEN_SECONDS), "answering again"),
    "memory-full": (lambda server: server.memory_full(lasting=FULL_SECONDS), "with room again"),
    "demoted": (lambda server: server.demoted(lasting=FULL_SECONDS), "a primary again"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("interruption", list(INTERRUPTIONS))
def test_streaming_tasks_running_through_a_redis_interruption_all_end_agreeing(
    interruption: str,
    volatile_redis: RedisServer,
    llm_server: LLMServerProcess,
    llm: LLMControl,
) -> None:
    """Redis is frozen, full or demoted for a while (``INTERRUPTIONS``) while tasks stream,
    then serves again: every task goes on to the end its stream and polling agree on, none runs
    twice, and the worker is still there and takes new work."""
    interrupted, back = INTERRUPTIONS[interruption]

    def interrupt(_worker: ManagedProcess) -> None:
        with interrupted(volatile_redis):
            pass

    count = 10
    run = _run_tasks_through_a_restart(
        pool="threads",
        server=volatile_redis,
        llm_server=llm_server,
        llm=llm,
        count=count,
        interrupt=interrupt,
    )
    print(f"\nRedis {back} -> every task running again: {run.resumed_in:.1f} s")
    _assert_every_task_completed_once(run, count)


@pytest.mark.e2e
def test_a_task_taken_while_redis_memory_is_full_is_run_not_lost(
    volatile_redis: RedisServer, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    """The worker takes a message off its queue (``BRPOP``) just as Redis's memory fills: it
    cannot record it as taken (kombu's unacknowledged record, a write), and the message is
    then nowhere in Redis. The worker keeps it and records it once Redis has room, then runs
    it; it neither exits nor loses the task."""
    key = "taken while full"
    llm.script(key, tokens=["kept", " and", " run"])
    url = volatile_redis.url()
    worker = start_worker(url, env=_llm_worker_env(llm_server), concurrency=4)
    web = None
    try:
        web = start_web(url)
        # Frozen, the worker cannot read what its pending BRPOP is handed, nor send the next.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            task_id = submit(web.client, "simple_llm_agent", key, stream=True)
        finally:
            with volatile_redis.memory_full(lasting=FULL_SECONDS / 2):
                os.kill(worker.pid, signal.SIGCONT)
                worker.wait_for_output(BROKER_WRITE_REFUSED, timeout=30)
                refused = invoke(web.client, "echo", "no room", stream=True)
        final = poll_until_done(web.client, task_id, timeout=RECOVERY_TIMEOUT)
        events = read_stream(web.client, events_path(task_id), headers=ALICE)
        alive = worker.alive()
        worker_log = worker.output(tail=20_000)
    finally:
        _stop_all(web, worker)

    assert refused.status_code == 503, refused.text
    assert "nothing was queued" in refused.json()["detail"]
    assert alive, "the worker exited"
    assert "recording a delivery" in worker_log
    assert final["status"] == "completed", (final.get("error"), worker_log[-3000:])
    assert final["result"]["content"] == "kept and run"
    _assert_stream_agrees(final, events)
    assert len(llm.calls(key)) == 1


@pytest.mark.e2e
def test_the_worker_and_the_web_warn_of_a_redis_that_evicts_keys(
    volatile_redis: RedisServer,
) -> None:
    """A Redis that deletes keys when full (any policy but ``noeviction``) loses tasks and
    results without an error: the worker and the web say so when they start."""
    admin = volatile_redis.client()
    try:
        admin.config_set("maxmemory", 512 * 1024 * 1024)
        admin.config_set("maxmemory-policy", "allkeys-lru")
    finally:
        admin.close()
    worker = start_worker(volatile_redis.url(), concurrency=2)
    web = None
    try:
        web = start_web(volatile_redis.url())
        worker.wait_for_output("redis_evicts_keys", timeout=30)
        web.process.wait_for_output("redis_evicts_keys", timeout=30)
        warnings = [worker.output(tail=20_000), web.process.output(tail=20_000)]
    finally:
        _stop_all(web, worker)

    for warning in warnings:
        assert "allkeys-lru" in warning
        assert "noeviction" in warning


@pytest.mark.e2e
def test_tasks_lost_with_a_redis_without_persistence_get_a_clear_answer(
    volatile_redis: RedisServer,
) -> None:
    """Redis comes back empty: queues, results and logs are gone. Polling a task that vanished
    says so (404 with a JSON detail) and its open stream ends instead of waiting forever."""
    web = start_web(volatile_redis.url())
    readers = ThreadPoolExecutor(max_workers=1)
    try:
        task_id = submit(web.client, "echo", "lost", stream=True)  # no worker: it stays queued
        _append(volatile_redis, task_id, [(EventType.STATUS, {"status": "running"})])
        stream = BackgroundStream(readers, web, task_id)
        stream.wait_open()
        with volatile_redis.outage():
            wait_for(lambda: _readyz(web) == 503, timeout=30)
        wait_for(lambda: _readyz(web) == 200, timeout=RECOVERY_TIMEOUT)
        polled = web.client.get(f"/api/v1/agents/tasks/{task_id}", headers=ALICE)
        reopened = web.client.get(events_path(task_id), headers=ALICE)
        ended = _stream_outcome(stream)
    finally:
        readers.shutdown(wait=False, cancel_futures=True)
        web.stop()
    assert polled.status_code == 404, polled.text
    assert polled.json()["detail"]
    assert reopened.status_code == 404, reopened.text
    assert ended != "still open", "the stream of a vanished task never ends"


def _stream_outcome(stream: BackgroundStream) -> str:
    try:
        events = stream.events.result(timeout=60)
    except TimeoutError:
        return "still open"
    except httpx.HTTPError as exc:
        return f"closed: {exc!r}"
    return f"ended after {[e.event for e in events]}"
