"""The web as several processes on one port, the two ways the README gives: the Procfile's
``uvicorn`` line with ``WEB_CONCURRENCY`` processes, and gunicorn with the service's uvicorn
worker class. In both, SIGTERM ends every open event stream cleanly and at once (its clients
reconnect elsewhere with ``Last-Event-ID``), and the server exits."""

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from scripts.embedded_redis import EmbeddedRedis, free_port
from tests.e2e.test_http_edge import start_procfile_web
from tests.support import redis_databases
from tests.support.metrics import Scrape
from teststack.polling import submit
from teststack.processes import ManagedProcess, wait_for
from teststack.sse import events_path
from teststack.stack import WebServer, api_keys_setting, base_env, headers_for, redis_db_url

ALICE = headers_for("alice")
PROCESSES = 2
STREAMS = 6
#: However busy the machine, the streams end well within this (without the stop they never do).
ENDED_WITHIN = 5.0
OPEN_STREAMS = "agent_service_sse_open_streams"


def start_gunicorn_web(redis_url: str) -> WebServer:
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "gunicorn"),
        "app.main:create_app()",
        "--worker-class",
        "app.gunicorn_worker.AgentServiceWorker",
        "--workers",
        str(PROCESSES),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "30",
    ]
    process = ManagedProcess(
        "gunicorn-web", argv, env={**base_env(redis_url), "API_KEYS": api_keys_setting()}
    )
    process.start()
    web = WebServer(process=process, base_url=f"http://127.0.0.1:{port}")

    def ready() -> bool:
        try:
            return web.client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        process.wait_until(ready, timeout=30, what="/readyz to answer 200")
    except BaseException:
        web.stop()
        raise
    return web


@pytest.fixture(params=["uvicorn --workers", "gunicorn"])
def web(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> Iterator[WebServer]:
    # No worker consumes this database: the tasks stay queued, their streams open.
    url = redis_db_url(redis_server.url, redis_databases.WEB_PROCESSES)
    if request.param == "gunicorn":
        server = start_gunicorn_web(url)
    else:
        server = start_procfile_web(url, env={"WEB_CONCURRENCY": str(PROCESSES)})
    try:
        yield server
    finally:
        server.stop()


def test_sigterm_ends_every_open_stream_of_every_process_at_once(web: WebServer) -> None:
    with ExitStack() as streams:
        readers = []
        for n in range(STREAMS):
            task_id = submit(web.client, "echo", f"queued {n}")
            # A connection of its own each: the kernel spreads them over the processes.
            client = streams.enter_context(httpx.Client(base_url=web.base_url, timeout=30))
            response = streams.enter_context(
                client.stream("GET", events_path(task_id), headers=ALICE)
            )
            lines = response.iter_lines()
            assert next(lines).startswith("id: ")
            readers.append(lines)
        started = time.monotonic()
        web.process.signal(signal.SIGTERM)
        for lines in readers:
            rest = list(lines)  # ends without an error: each response was completed
            assert not any(line.startswith("event: result") for line in rest)
        ended = time.monotonic() - started
    assert web.process.process is not None
    assert web.process.process.wait(timeout=30) in (0, -signal.SIGTERM)
    print(f"{STREAMS} streams on {PROCESSES} processes ended {ended:.2f} s after SIGTERM")
    assert ended < ENDED_WITHIN, "open streams held the shutdown up"


def test_metrics_sum_every_web_process_that_shares_the_directory(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    url = redis_db_url(redis_server.url, redis_databases.WEB_PROCESSES)
    web = start_procfile_web(
        url, env={"WEB_CONCURRENCY": str(PROCESSES), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )

    def writers() -> set[str]:
        return {path.name.rsplit("_", 1)[1] for path in tmp_path.glob("counter_*.db")}

    try:
        sent = 0
        # A connection each, until both processes have answered some (the kernel spreads them).
        while sent < 20 or (len(writers()) < PROCESSES and sent < 1000):
            with httpx.Client(base_url=web.base_url, timeout=10) as client:
                assert client.get("/healthz").status_code == 200
            sent += 1
        scrapes = []
        for _ in range(4):  # whichever process answers, the same sum
            with httpx.Client(base_url=web.base_url, timeout=10) as client:
                scrapes.append(Scrape(client.get("/metrics").text))
    finally:
        web.stop()

    assert len(writers()) == PROCESSES
    counts = {s.value("agent_service_http_requests_total", {"route": "/healthz"}) for s in scrapes}
    assert counts == {float(sent)}


def _open_streams_of(directory: Path, pid: int) -> float:
    """What process ``pid`` alone reports as open streams, read from its own gauge file."""
    alone = directory / f"alone-{pid}"
    alone.mkdir()
    shutil.copy(directory / f"gauge_livesum_{pid}.db", alone)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
    value = Scrape(generate_latest(registry).decode()).value(OPEN_STREAMS)
    shutil.rmtree(alone)
    return value


def test_metrics_forget_the_open_streams_of_a_web_process_that_was_killed(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """uvicorn replaces a killed process without telling anyone: its gauges must not linger."""
    url = redis_db_url(redis_server.url, redis_databases.WEB_PROCESSES)
    web = start_procfile_web(
        url, env={"WEB_CONCURRENCY": str(PROCESSES), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )

    def open_streams() -> float:
        with httpx.Client(base_url=web.base_url, timeout=10) as client:
            return Scrape(client.get("/metrics").text).value(OPEN_STREAMS)

    try:
        with ExitStack() as streams:
            readers = []
            for n in range(STREAMS):
                task_id = submit(web.client, "echo", f"q {n}")
                client = streams.enter_context(httpx.Client(base_url=web.base_url, timeout=30))
                response = streams.enter_context(
                    client.stream("GET", events_path(task_id), headers=ALICE)
                )
                lines = response.iter_lines()  # kept: a dropped iterator closes its connection
                assert next(lines).startswith("id: ")
                readers.append(lines)
            wait_for(
                lambda: open_streams() == STREAMS,
                timeout=20,
                message=lambda: f"{open_streams()} open streams counted",
            )
            pids = [int(p.stem.rsplit("_", 1)[1]) for p in tmp_path.glob("gauge_livesum_*.db")]
            victim = next(pid for pid in pids if _open_streams_of(tmp_path, pid) > 0)
            os.kill(victim, signal.SIGKILL)
        # Every client has gone: the survivor counts none, and neither may the killed process.
        wait_for(
            lambda: open_streams() == 0,
            timeout=30,
            message=lambda: f"{open_streams()} streams still counted after all closed",
        )
        assert not (tmp_path / f"gauge_livesum_{victim}.db").exists()
    finally:
        web.stop()
