"""How an SSE response ends when its client stops reading, or when the web process stops."""

import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import submit
from teststack.sse import content_of, events_path, read_stream
from teststack.stack import WebServer, headers_for, start_web

ALICE = headers_for("alice")


@pytest.fixture
def impatient_web(raw_stack: Stack) -> Iterator[WebServer]:
    """A second web process beside ``raw_stack``'s (same Redis, same worker) that drops a client
    whose sends stay blocked for one second."""
    web = start_web(raw_stack.redis_url, env={"SSE_SEND_TIMEOUT": "1"})
    try:
        yield web
    finally:
        web.stop()


def _open_without_reading(web: WebServer, task_id: str) -> socket.socket:
    """A stream request on a socket with a tiny receive buffer that is then not read."""
    host, port = web.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    request = (
        f"GET {events_path(task_id)} HTTP/1.1\r\nHost: {host}\r\n"
        f"X-API-Key: {ALICE['X-API-Key']}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def _read_to_eof(sock: socket.socket, *, timeout: float) -> bytes:
    sock.settimeout(timeout)
    received = bytearray()
    while chunk := sock.recv(1 << 20):
        received += chunk
    return bytes(received)


def test_a_client_that_stops_reading_is_dropped_and_others_are_served(
    impatient_web: WebServer, llm: LLMControl
) -> None:
    key = "ten megabytes nobody reads"
    tokens = [f"<{i:05d}>" + "x" * 1993 for i in range(5000)]
    llm.script(key, tokens=tokens)
    task_id = submit(impatient_web.client, "simple_llm_agent", key)

    sock = _open_without_reading(impatient_web, task_id)
    try:
        impatient_web.process.wait_for_output(
            "stream closed: the client read nothing for 1 s", timeout=30
        )
        # The connection is closed once what the server had written is read: the stream never
        # reaches its end for this client.
        received = _read_to_eof(sock, timeout=10)
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert b"event: chunk" in received
    assert b"event: result" not in received

    # The process still serves everyone else, the whole answer.
    with httpx.Client(base_url=impatient_web.base_url, timeout=60) as client:
        events = read_stream(client, events_path(task_id), headers=ALICE)
    assert content_of(events) == "".join(tokens)
    assert events[-1].event == "result"


def test_web_shutdown_ends_open_streams_so_clients_reconnect_elsewhere(idle_web: Stack) -> None:
    web = start_web(idle_web.redis_url)
    try:
        task_id = submit(web.client, "echo", "never runs: no worker consumes this database")
        started = time.monotonic()
        with (
            httpx.Client(base_url=web.base_url, timeout=30) as client,
            client.stream("GET", events_path(task_id), headers=ALICE) as response,
        ):
            lines = response.iter_lines()
            assert next(lines).startswith("id: ")
            web.process.signal(signal.SIGTERM)
            rest = list(lines)  # ends without an error: the response was completed
        ended = time.monotonic()
        assert web.process.process is not None
        # uvicorn re-raises the signal it handled once it has shut down
        assert web.process.process.wait(timeout=10) in (0, -signal.SIGTERM)
        assert "Application shutdown complete." in web.process.output()
    finally:
        web.stop()
    assert not any(line.startswith("event: result") for line in rest)
    assert ended - started < 5, "the stream held the server's shutdown up"
