"""The HTTP edge of the web process, as the Procfile runs it, against real sockets.

The web process here is started from the Procfile's own ``web:`` line (through ``sh``, as honcho
does), with short timeouts so that the tests are quick: a huge request head is refused without
the process's memory growing, silent and slow sockets are closed, an idle connection is let go,
connections beyond the limit get 503, and an event stream outlives all of it.
"""

import os
import re
import select
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from scripts.embedded_redis import EmbeddedRedis, free_port
from tests.support import redis_databases
from teststack.polling import accept
from teststack.processes import PROJECT_ROOT, ManagedProcess, wait_for
from teststack.stack import WebServer, api_keys_setting, base_env, headers_for, redis_db_url

#: A Redis database of this module's own: its tasks stay queued (no worker), nothing else reads it.
EDGE_DB = redis_databases.EDGE
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
#: Above uvicorn's default (5 s), so that a web not given the Procfile's setting fails.
KEEP_ALIVE_TIMEOUT = 6
#: The documented default (README, "Deploying"), which this module's web keeps.
MAX_HEADER_BYTES = 32 * 1024
#: However busy the machine, a deadline is met within this much more time.
SLACK = 15.0
ALICE_KEY = headers_for("alice")["X-API-Key"]


def procfile_web_command() -> str:
    text = (PROJECT_ROOT / "Procfile").read_text()
    match = re.search(r"^web:\s*(.+)$", text, re.MULTILINE)
    assert match is not None, "the Procfile has no web process"
    return match[1]


def start_procfile_web(redis_url: str, *, env: dict[str, str]) -> WebServer:
    port = free_port()
    process = ManagedProcess(
        "procfile-web",
        ["sh", "-c", f"exec {procfile_web_command()}"],
        env={
            **base_env(redis_url),
            "API_KEYS": api_keys_setting(),
            "PORT": str(port),
            "WEB_HOST": "127.0.0.1",
            # The Procfile names bare commands: this interpreter's first, as `make dev` does.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            **env,
        },
    )
    process.start()
    web = WebServer(process=process, base_url=f"http://127.0.0.1:{port}")

    def ready() -> bool:
        try:
            return web.client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        process.wait_until(ready, timeout=20, what="/readyz to answer 200")
    except BaseException:
        web.stop()
        raise
    return web


@pytest.fixture(scope="module")
def edge(redis_server: EmbeddedRedis) -> Iterator[WebServer]:
    web = start_procfile_web(
        redis_db_url(redis_server.url, EDGE_DB),
        env={
            "HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "HTTP_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT),
            "SSE_HEARTBEAT_SECONDS": "0.5",
        },
    )
    try:
        yield web
    finally:
        web.stop()


def _port(web: WebServer) -> int:
    return int(web.base_url.rsplit(":", 1)[1])


Connect = Callable[[WebServer], socket.socket]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Opens sockets to a web process; every one is closed after the test."""
    opened: list[socket.socket] = []

    def connect_to(web: WebServer) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", _port(web)), timeout=10)
        opened.append(sock)
        return sock

    yield connect_to
    for sock in opened:
        sock.close()


def _rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1]) * 1024


def _answer(sock: socket.socket, *, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def _one_response(sock: socket.socket) -> bytes:
    """One whole response (its head, then its body's ``Content-Length`` bytes), which may come
    in several reads."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_head_over_the_limit_is_431_with_a_json_body(edge: WebServer, connect: Connect) -> None:
    sock = connect(edge)
    padding = b"a" * (MAX_HEADER_BYTES + 1024)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Padding: " + padding + b"\r\n\r\n")

    answer = _answer(sock, timeout=10)

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert answer.endswith(b'{"detail":"the request head is larger than the limit"}')


def test_head_under_the_limit_is_served(edge: WebServer) -> None:
    padding = "a" * (MAX_HEADER_BYTES - 2048)

    response = edge.client.get("/healthz", headers={"X-Padding": padding})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "request_head",
    [
        b"FOO /healthz HTTP/1.1\r\nHost: edge\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: edge\r\nIdempotency-Key: a\x7fb\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: edge\r\nBad Header: x\r\n\r\n",
        b"GET /heal thz HTTP/1.1\r\nHost: edge\r\n\r\n",
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["unknown-method", "control-character", "space-in-name", "space-in-path", "bad-chunk"],
)
def test_request_that_is_not_http_is_400_with_a_json_body(
    edge: WebServer, connect: Connect, request_head: bytes
) -> None:
    sock = connect(edge)
    sock.sendall(request_head)

    answer = _answer(sock, timeout=10)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: application/json" in head.lower()
    assert b'"detail":"the request is not valid HTTP' in body
    assert edge.client.get("/healthz").status_code == 200


def test_websocket_upgrade_is_404_with_a_json_body(edge: WebServer, connect: Connect) -> None:
    sock = connect(edge)
    sock.sendall(
        b"GET /api/v1/agents HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )

    answer = _answer(sock, timeout=10)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert b"content-type: application/json" in head.lower()
    assert b"Server-Sent Events" in body


def test_many_small_headers_over_the_limit_are_431(edge: WebServer, connect: Connect) -> None:
    sock = connect(edge)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_BYTES // 8))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n" + headers + b"\r\n")

    assert _answer(sock, timeout=10).startswith(b"HTTP/1.1 431 ")


def test_huge_header_is_refused_without_growing_memory(edge: WebServer, connect: Connect) -> None:
    before = _rss_bytes(edge.process.pid)
    sock = connect(edge)
    sent = 0
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Big: ")
        for _ in range(64):  # 64 MB, as fast as the server takes it
            sock.sendall(b"a" * 1024 * 1024)
            sent += 1024 * 1024
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _answer(sock, timeout=10)
    grown = _rss_bytes(edge.process.pid) - before
    print(f"sent {sent / 2**20:.1f} MB of header; web RSS grew {grown / 2**20:.1f} MB")

    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert grown < 16 * 2**20
    assert edge.client.get("/healthz").status_code == 200


def test_silent_and_slow_sockets_are_closed_within_the_header_timeout(
    edge: WebServer, connect: Connect
) -> None:
    silent = [connect(edge) for _ in range(8)]
    slow = [connect(edge) for _ in range(8)]
    request_line = b"GET /healthz HTTP/1.1\r\nHost: edge\r\n"
    opened = time.monotonic()
    closed_after: dict[socket.socket, float] = {}
    answers: dict[socket.socket, bytes] = {sock: b"" for sock in silent + slow}
    sent = 0

    while len(closed_after) < 16 and time.monotonic() - opened < HEADER_TIMEOUT + SLACK:
        open_ones = [sock for sock in silent + slow if sock not in closed_after]
        readable, _, _ = select.select(open_ones, [], [], 0.5)
        for sock in readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            answers[sock] += chunk
            if not chunk:
                closed_after[sock] = time.monotonic() - opened
        for sock in slow:  # one byte every half second, never the end of the head
            if sock not in closed_after:
                try:
                    sock.send(request_line[sent % len(request_line) : sent % len(request_line) + 1])
                except OSError:
                    closed_after[sock] = time.monotonic() - opened
        sent += 1

    times = sorted(closed_after.values())
    print(f"closed after {times[0]:.1f}-{times[-1]:.1f} s" if times else "none closed")
    assert len(closed_after) == 16, "sockets still open well after the header timeout"
    assert times[0] >= HEADER_TIMEOUT * 0.9, "closed before the timeout: something else closed it"
    assert all(answers[sock] == b"" for sock in silent)
    assert all(answers[sock].startswith(b"HTTP/1.1 408 ") for sock in slow)


def test_slow_body_is_408_within_the_body_timeout(edge: WebServer, connect: Connect) -> None:
    sock = connect(edge)
    sock.sendall(
        b"POST /api/v1/agents/echo/invoke-async HTTP/1.1\r\nHost: edge\r\nX-API-Key: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" % ALICE_KEY.encode()
    )
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < BODY_TIMEOUT + SLACK:
        readable, _, _ = select.select([sock], [], [], 0.5)
        if readable:
            answer = _answer(sock, timeout=5)
            break
        sock.send(b" ")
    elapsed = time.monotonic() - started
    print(f"answered after {elapsed:.1f} s")

    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert elapsed >= BODY_TIMEOUT * 0.9


def test_idle_connection_is_closed_after_the_keep_alive_timeout(
    edge: WebServer, connect: Connect
) -> None:
    sock = connect(edge)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
    sock.settimeout(10)
    first = _one_response(sock)
    answered = time.monotonic()

    rest = _answer(sock, timeout=KEEP_ALIVE_TIMEOUT + SLACK)
    idle = time.monotonic() - answered
    print(f"closed {idle:.1f} s after the answer")

    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest == b""
    # Our clock starts when the answer reached us: later than the server's, on a busy machine.
    assert KEEP_ALIVE_TIMEOUT * 0.5 <= idle < KEEP_ALIVE_TIMEOUT + SLACK


def test_event_stream_outlives_every_edge_timeout(edge: WebServer, connect: Connect) -> None:
    # The task stays queued: no worker reads this database.
    stream_url = accept(edge.client, "echo", f"edge {uuid.uuid4()}").stream_url
    sock = connect(edge)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: edge\r\n\r\n" % stream_url.encode())
    held_for = max(HEADER_TIMEOUT, BODY_TIMEOUT, KEEP_ALIVE_TIMEOUT) + 2
    started = time.monotonic()
    received = b""
    while time.monotonic() - started < held_for:
        readable, _, _ = select.select([sock], [], [], 0.5)
        if readable:
            chunk = sock.recv(65536)
            assert chunk, f"the stream was closed after {time.monotonic() - started:.1f} s"
            received += chunk

    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"event: status" in received
    assert received.count(b": ping") >= 2


def test_connections_beyond_the_limit_get_503(
    redis_server: EmbeddedRedis, connect: Connect
) -> None:
    web = start_procfile_web(
        redis_db_url(redis_server.url, EDGE_DB),
        env={"HTTP_MAX_CONNECTIONS": "3", "SSE_HEARTBEAT_SECONDS": "0.5"},
    )
    try:
        stream_urls = [
            accept(web.client, "echo", f"edge {uuid.uuid4()}").stream_url for _ in range(2)
        ]
        web.client.close()  # its keep-alive connection counts too, until the server sees it go
        streams: list[socket.socket] = []

        def open_stream(url: str) -> bool:
            sock = connect(web)
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: edge\r\n\r\n" % url.encode())
            sock.settimeout(10)
            if sock.recv(65536).startswith(b"HTTP/1.1 200 "):
                streams.append(sock)
                return True
            return False

        for url in stream_urls:  # two connections held open by their streams
            wait_for(partial(open_stream, url), timeout=SLACK)
        with httpx.Client(base_url=web.base_url, timeout=10) as client:
            refused = client.get("/healthz")
            streams.pop().close()
            wait_for(lambda: client.get("/healthz").status_code == 200, timeout=SLACK)
    finally:
        web.stop()

    assert refused.status_code == 503
