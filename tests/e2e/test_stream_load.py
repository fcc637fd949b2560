"""The relay under pressure: slow clients, idle streams."""

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from httpx_sse import connect_sse

from contract.events import TERMINAL_TYPES
from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import submit
from teststack.sse import Received, content_of, events_path, is_heartbeat, read_stream
from teststack.stack import headers_for
from teststack.task_log import last_entry

ALICE = headers_for("alice")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_stalled(
    stack: Stack, task_id: str, *, stalled: threading.Barrier, fast_done: threading.Event
) -> tuple[list[Received], bool]:
    """Read one event through a small receive buffer, stop reading until the fast client is done
    (or two minutes have passed), then read the rest; say whether the fast client was done."""
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
    received: list[Received] = []
    fast_finished_first = False
    with (
        httpx.Client(base_url=stack.web.base_url, transport=transport, timeout=180) as client,
        connect_sse(client, "GET", events_path(task_id), headers=dict(ALICE)) as source,
    ):
        for sse in source.iter_sse():
            if is_heartbeat(sse):
                continue
            received.append(Received.of(sse))
            if len(received) == 1:
                # The behaviour under test: a client that stops reading while the stream flows.
                stalled.wait(timeout=60)
                fast_finished_first = fast_done.wait(timeout=120)
    return received, fast_finished_first


def test_slow_clients_get_everything_without_holding_back_others_or_memory(
    raw_stack: Stack, llm: LLMControl
) -> None:
    key = "five thousand big chunks"
    tokens = [f"<{i:05d}>" + "x" * 1993 for i in range(5000)]
    llm.script(key, tokens=tokens)
    pid = raw_stack.web.process.pid
    rss_before = _rss_bytes(pid)
    peak = [rss_before]
    all_chunks_out = threading.Event()
    fast_done = threading.Event()
    stalled = threading.Barrier(4)

    log = redis.Redis.from_url(raw_stack.redis_url)

    def sample() -> None:
        # While the chunks flow and the slow clients fall behind, until the fast client has
        # nine tenths of them or the task has ended: the final ``result`` event (the whole 10 MB
        # answer, as polling returns it), which a busy machine may have the web read (for the
        # slow clients' catch-up) before the fast client sees the last chunk, is not the relay's
        # buffering.
        while not all_chunks_out.wait(0.05):
            last = last_entry(log, task_id)
            if last is not None and last.event.decode() in TERMINAL_TYPES:
                return
            peak[0] = max(peak[0], _rss_bytes(pid))

    def last_chunk_seen(events: list[Received]) -> bool:
        if events[-1].event == "chunk" and events[-1].data["index"] >= len(tokens) * 9 // 10:
            all_chunks_out.set()
        return False

    task_id = submit(raw_stack.web.client, "simple_llm_agent", key, stream=True)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            slow = [
                pool.submit(_read_stalled, raw_stack, task_id, stalled=stalled, fast_done=fast_done)
                for _ in range(3)
            ]
            stalled.wait(timeout=60)  # every slow client has its first event and stopped reading
            try:
                with httpx.Client(base_url=raw_stack.web.base_url, timeout=60) as client:
                    fast = read_stream(
                        client, events_path(task_id), headers=ALICE, stop=last_chunk_seen
                    )
            finally:
                fast_done.set()
            slow_results = [f.result() for f in slow]
    finally:
        all_chunks_out.set()
        fast_done.set()
        sampler.join()
        log.close()

    expected = "".join(tokens)
    assert content_of(fast) == expected
    assert fast[-1].event == "result"
    for events, fast_finished_first in slow_results:
        assert fast_finished_first, "the fast client waited for the stalled ones"
        assert content_of(events) == expected
        chunk_indexes = [e.data["index"] for e in events if e.event == "chunk"]
        assert chunk_indexes == list(range(5000))
        assert events[-1] == fast[-1]
    # Three clients fell ~10 MB behind each (more than the kernel's socket buffers hold): a relay
    # that queued for them without bound would grow by ~24 MB; ours keeps 256 events each.
    print(f"web RSS grew {(peak[0] - rss_before) / 2**20:.1f} MB")
    assert peak[0] - rss_before < 12 * 1024 * 1024, f"web RSS grew {peak[0] - rss_before} B"


def test_heartbeat_comments_arrive_on_an_idle_stream(raw_stack: Stack, llm: LLMControl) -> None:
    key = "a long pause between two tokens"
    llm.script(key, tokens=["before", " after"], delay=1.6)
    task_id = submit(raw_stack.web.client, "simple_llm_agent", key, stream=True)

    lines: list[str] = []
    with raw_stack.web.client.stream("GET", events_path(task_id), headers=ALICE) as response:
        for line in response.iter_lines():
            lines.append(line)

    between = lines[lines.index("data: " + '{"text":"before","index":0}') :]
    assert any(line.startswith(": ping") for line in between), lines
    assert lines[-2].startswith("data: {") or lines[-1].startswith("data: {")
