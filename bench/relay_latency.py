"""Relay latency and throughput: publish -> SSE client, 1 to 1,000 clients on ONE web process.

What is measured, per client count N:

- latency of every chunk delivery: the client's ``time.time()`` when it has parsed the event,
  minus the ``sent_at`` the publisher put in the chunk just before appending it to the task's log
  (same machine, same clock): p50, p99 and max over all N x ``--events`` deliveries, and p50/p99
  per tenth of the run (does a backlog build up?);
- delivered events/s: all chunk deliveries / publish duration (first to last chunk appended), and
  the same over the time until the last delivery (the honest figure when clients fall behind);
- whether every client received every chunk, in order, then the ``result`` event;
- the web process's Redis connections while the clients are open (``CLIENT LIST`` names
  ``agent-service:web:stream`` and ``agent-service:web*``), once all are open and at mid-publish;
- diagnostics: stream requests refused (non-200; the client retries ``--connect-retries`` times),
  the web's CPU while publishing, web and client CPU per delivery, how busy the machine was.

How: one private Redis and one web process (uvicorn, started like the e2e tests do), no worker.
The task is a real submission (``POST /api/v1/agents/echo/invoke-async`` as alice): the web writes
the owner record and the ``status: queued`` event and queues a Celery message that nobody
consumes. N SSE clients, spread over ``--client-procs`` forked processes (default 1 up to 100
clients, else 2; one event loop each), open the task's stream and wait for ``queued``; once all
have it, this process appends ``--events`` chunk events at ``--rate`` events/s with
``streaming.event_log`` (one append, i.e. one XADD + PUBLISH script call, per event, as the
worker does without coalescing), then a ``result`` event, which ends every stream.

The clients are httpx + httpx-sse (``aconnect_sse``), as applications read the stream; they cost
tens of us per event, so on a 2-core machine 1,000 of them saturate it before the web process
does. ``--client raw`` uses a lean asyncio-streams reader instead, to see the web's own limit.
With either, the latencies include the clients' own queueing when the machine is saturated (see
the diagnostics).

    .venv/bin/python -m bench.relay_latency --clients 1,100,1000 --events 200 --rate 50
    .venv/bin/python -m bench.relay_latency --client raw
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import random
import signal
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import TypeAlias

import httpx
import orjson
import redis
from httpx_sse import aconnect_sse
from redis.asyncio import Redis as AsyncRedis

from bench._common import (
    busy_percent,
    command_line,
    connections_by_name,
    cpu_seconds,
    embedded_redis,
    load_average,
    machine_summary,
    machine_ticks,
    percentile,
    py_spy,
    raise_open_file_limit,
    stop_on_sigterm,
    table,
    web_connections,
)
from contract.events import EventType
from streaming.event_log import EventLog
from teststack.polling import submit
from teststack.sse import events_path
from teststack.stack import WebServer, headers_for, start_web

OnReady = Callable[[], None]


class RefusedError(Exception):
    """The web answered the stream request with something else than 200."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


READY_TIMEOUT = 120.0  # seconds for every client to connect and receive ``queued``
FINISH_GRACE = 60.0  # seconds after the last publish for the last client to finish


# --------------------------------------------------------------------------- client processes


@dataclass(frozen=True)
class ClientSpec:
    base_url: str
    path: str
    headers: dict[str, str]
    events: int
    deadline: float  # seconds a client process may run in all
    client: str  # "httpx-sse" or "raw"
    connect_retries: int


@dataclass
class _Outcome:
    """What one SSE client saw."""

    ready: bool = False
    refusals: list[str] = field(default_factory=list)  # non-200 answers to the connect
    latencies: list[float] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    finished: bool = False
    error: str | None = None
    last_receive: float = 0.0

    def complete(self, events: int) -> bool:
        return self.finished and self.indexes == list(range(events))


@dataclass
class ClientsReport:
    """What one client process sends back."""

    clients: int
    complete: int
    refusals: list[str]
    latencies: array[float]
    indexes: array[int]  # the chunk index of each latency
    errors: list[str]
    cpu_seconds: float  # from "all clients ready" to "all clients done"
    last_receive: float


def _on_event(out: _Outcome, now: float, kind: str, data: bytes | str, on_ready: OnReady) -> bool:
    """Record one event a client received; True when it ends the stream."""
    if kind == "chunk":
        payload = orjson.loads(data)
        out.latencies.append(now - payload["sent_at"])
        out.indexes.append(payload["index"])
        out.last_receive = now
    elif kind == "status" and not out.ready:
        out.ready = True
        on_ready()
    elif kind in ("result", "error", "cancelled"):
        out.finished = kind == "result"
        return True
    return False


async def _httpx_sse_client(
    client: httpx.AsyncClient, spec: ClientSpec, out: _Outcome, on_ready: OnReady
) -> None:
    """A client the way applications read the stream: httpx + httpx-sse."""
    async with aconnect_sse(client, "GET", spec.path, headers=spec.headers) as source:
        if source.response.status_code != 200:
            body = (await source.response.aread()).decode(errors="replace")[:200]
            raise RefusedError(source.response.status_code, body)
        async for sse in source.aiter_sse():
            now = time.time()
            if not sse.data:  # httpx-sse 0.4 yields a heartbeat comment as an empty event
                continue
            if _on_event(out, now, sse.event, sse.data, on_ready):
                return


async def _raw_client(spec: ClientSpec, out: _Outcome, on_ready: OnReady) -> None:
    """A lean client (asyncio streams, HTTP/1.1 chunked, minimal SSE parsing): a few us per
    event instead of httpx-sse's tens, so that the clients do not saturate a 2-core machine."""
    url = httpx.URL(spec.base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in spec.headers.items())
        request = f"GET {spec.path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n{head}\r\n"
        writer.write(request.encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise RefusedError(int(status.split()[1]), status.decode().strip())
        headers = await reader.readuntil(b"\r\n\r\n")
        if b"chunked" not in headers.lower():
            raise RuntimeError("expected a chunked response")
        pending = b""
        while size := int((await reader.readline()).strip(), 16):
            pending += (await reader.readexactly(size + 2))[:-2]
            now = time.time()
            *frames, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
            for frame in frames:
                kind, data = _parse_frame(frame)
                if data and _on_event(out, now, kind, data, on_ready):
                    return
    finally:
        writer.close()


def _parse_frame(frame: bytes) -> tuple[str, bytes]:
    kind, data = "message", b""
    for line in frame.split(b"\n"):
        if line.startswith(b"event: "):
            kind = line[7:].decode()
        elif line.startswith(b"data: "):
            data = line[6:]
    return kind, data


#: (pid, ready, failed) from each client process once its clients have settled.
ReadyQueue: TypeAlias = "Queue[tuple[int, int, int]]"


async def _run_clients(spec: ClientSpec, n: int, ready_queue: ReadyQueue) -> ClientsReport:
    outcomes = [_Outcome() for _ in range(n)]
    settled = {"ready": 0, "failed": 0}
    cpu_at_ready = [time.process_time()]

    def settle(key: str) -> None:
        settled[key] += 1
        if settled["ready"] + settled["failed"] == n:
            cpu_at_ready[0] = time.process_time()
            ready_queue.put((os.getpid(), settled["ready"], settled["failed"]))

    async def connect(client: httpx.AsyncClient, out: _Outcome) -> None:
        if spec.client == "raw":
            await _raw_client(spec, out, lambda: settle("ready"))
        else:
            await _httpx_sse_client(client, spec, out, lambda: settle("ready"))

    async def run_one(client: httpx.AsyncClient, out: _Outcome) -> None:
        try:
            for attempt in range(spec.connect_retries + 1):
                try:
                    return await connect(client, out)
                except RefusedError as exc:  # before the stream started: safe to try again
                    out.refusals.append(str(exc))
                    if attempt == spec.connect_retries:
                        raise
                    await asyncio.sleep(0.5 + random.random())
        except Exception as exc:
            out.error = f"{type(exc).__name__}: {exc}"
            if not out.ready:
                settle("failed")

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(connect=READY_TIMEOUT, read=120.0, write=30.0, pool=None)
    async with httpx.AsyncClient(base_url=spec.base_url, limits=limits, timeout=timeout) as client:
        tasks = [asyncio.create_task(run_one(client, out)) for out in outcomes]
        _, pending = await asyncio.wait(tasks, timeout=spec.deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for out in outcomes:
        if not out.finished and out.error is None:
            out.error = "did not finish before the deadline"
    return ClientsReport(
        clients=n,
        complete=sum(out.complete(spec.events) for out in outcomes),
        refusals=[r for out in outcomes for r in out.refusals],
        latencies=array("d", (lat for out in outcomes for lat in out.latencies)),
        indexes=array("l", (i for out in outcomes for i in out.indexes)),
        errors=sorted({out.error for out in outcomes if out.error}),
        cpu_seconds=time.process_time() - cpu_at_ready[0],
        last_receive=max((out.last_receive for out in outcomes), default=0.0),
    )


def _client_process(
    spec: ClientSpec, n: int, ready_queue: ReadyQueue, results: Queue[ClientsReport]
) -> None:
    """Entry point of a forked client process: the parent handles Ctrl-C and stops us."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import uvloop

        report = uvloop.run(_run_clients(spec, n, ready_queue))
    except ImportError:
        report = asyncio.run(_run_clients(spec, n, ready_queue))
    results.put(report)


# --------------------------------------------------------------------------- the publisher


@dataclass
class Published:
    first_sent: float
    last_sent: float
    web_cpu: float  # CPU seconds the web process used while publishing
    machine_busy: float  # % of all the machine's CPUs busy while publishing
    names_mid: Counter[str]  # CLIENT LIST names at mid-publish


async def _publish(
    redis_url: str, task_id: str, *, events: int, rate: float, web_pid: int
) -> Published:
    client = AsyncRedis.from_url(redis_url, client_name="bench:publisher")
    log = EventLog(client, maxlen=10_000, ttl=3600)
    names_mid: Counter[str] = Counter()
    try:
        # Warm up: connect and load the append script, outside the measured schedule.
        await log.append(f"bench-warmup-{task_id}", [(EventType.STATUS, {"status": "warmup"})])
        web_cpu_start, machine_start = cpu_seconds(web_pid), machine_ticks()
        start = time.monotonic()
        first_sent = last_sent = time.time()
        for index in range(events):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            last_sent = time.time()
            if index == 0:
                first_sent = last_sent
            chunk = {"text": f" token{index}", "index": index, "sent_at": last_sent}
            await log.append(task_id, [(EventType.CHUNK, chunk)])
            if index == events // 2:
                names_mid = Counter(e.get("name", "") for e in await client.client_list())
        result = {"content": "", "metadata": {"bench": True}, "usage": {}}
        await log.append(task_id, [(EventType.RESULT, result)])
        web_cpu = cpu_seconds(web_pid) - web_cpu_start
        machine_busy = busy_percent(machine_start, machine_ticks())
    finally:
        await client.aclose()
    return Published(first_sent, last_sent, web_cpu, machine_busy, names_mid)


# --------------------------------------------------------------------------- one measurement


@dataclass
class Row:
    clients: int
    procs: int
    connect_seconds: float
    latencies: list[float]
    by_decile: list[list[float]]  # sorted latencies of each tenth of the chunks
    deliveries: int
    complete: int
    refusals: list[str]
    publish_seconds: float
    until_last_seconds: float
    web_cpu_percent: float
    machine_busy: float
    web_us_per_delivery: float  # web CPU from first publish to last client done / deliveries
    client_us_per_delivery: float  # client processes' CPU from all ready to done / deliveries
    stream_conns: int
    web_conns: int
    stream_conns_open: int
    web_conns_open: int
    names: dict[str, int]  # CLIENT LIST by client name, mid-publish
    errors: list[str]


def _split(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _await_ready(
    ready_queue: ReadyQueue, processes: Sequence[BaseProcess], timeout: float
) -> tuple[int, int]:
    ready = failed = 0
    deadline = time.monotonic() + timeout
    for _ in processes:
        remaining = deadline - time.monotonic()
        try:
            _, ok, bad = ready_queue.get(timeout=max(0.1, remaining))
        except queue.Empty:
            raise TimeoutError(f"clients not ready after {timeout:g} s") from None
        ready, failed = ready + ok, failed + bad
    return ready, failed


def _collect(
    results: Queue[ClientsReport], processes: Sequence[BaseProcess], timeout: float
) -> list[ClientsReport]:
    reports: list[ClientsReport] = []
    deadline = time.monotonic() + timeout
    while len(reports) < len(processes) and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            reports.append(results.get(timeout=1.0))
    return reports


def measure(
    web: WebServer, sync_redis: redis.Redis, redis_url: str, n: int, args: argparse.Namespace,
    profile: Path | None,
) -> Row:  # fmt: skip
    task_id = submit(web.client, "echo", "relay benchmark")
    publish_seconds = args.events / args.rate
    spec = ClientSpec(
        base_url=web.base_url,
        path=events_path(task_id),
        headers=headers_for("alice"),
        events=args.events,
        deadline=READY_TIMEOUT + publish_seconds + FINISH_GRACE,
        client=args.client,
        connect_retries=args.connect_retries,
    )
    context = multiprocessing.get_context("fork")
    ready_queue, results = context.Queue(), context.Queue()
    sizes = _split(n, args.client_procs or (1 if n <= 100 else 2))
    processes = [
        context.Process(
            target=_client_process, args=(spec, size, ready_queue, results), daemon=True
        )
        for size in sizes
    ]
    try:
        started = time.monotonic()
        for process in processes:
            process.start()
        _, failed = _await_ready(ready_queue, processes, READY_TIMEOUT)
        connect_seconds = time.monotonic() - started
        names_open = connections_by_name(sync_redis)
        web_cpu_start = cpu_seconds(web.process.pid)
        with py_spy(web.process.pid, seconds=args.profile_seconds, output=profile):
            published = asyncio.run(
                _publish(
                    redis_url, task_id, events=args.events, rate=args.rate, web_pid=web.process.pid
                )
            )
            reports = _collect(results, processes, timeout=FINISH_GRACE + 30)
        web_cpu_total = cpu_seconds(web.process.pid) - web_cpu_start
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
    latencies = sorted(lat for report in reports for lat in report.latencies)
    by_decile: list[list[float]] = [[] for _ in range(10)]
    for report in reports:
        for lat, index in zip(report.latencies, report.indexes, strict=True):
            by_decile[min(9, index * 10 // args.events)].append(lat)
    publish_duration = max(published.last_sent - published.first_sent, 1e-9)
    last_receive = max((r.last_receive for r in reports), default=published.last_sent)
    stream_mid, web_mid = web_connections(published.names_mid)
    stream_open, web_open = web_connections(names_open)
    errors = sorted({e for r in reports for e in r.errors})
    if failed:
        errors.append(f"{failed} clients failed to connect")
    if len(reports) < len(processes):
        errors.append(f"{len(processes) - len(reports)} client processes sent no report")
    return Row(
        clients=n,
        procs=len(processes),
        connect_seconds=connect_seconds,
        latencies=latencies,
        by_decile=[sorted(d) for d in by_decile],
        deliveries=len(latencies),
        complete=sum(r.complete for r in reports),
        refusals=[x for r in reports for x in r.refusals],
        publish_seconds=publish_duration,
        until_last_seconds=max(last_receive - published.first_sent, 1e-9),
        web_cpu_percent=100 * published.web_cpu / publish_duration,
        machine_busy=published.machine_busy,
        web_us_per_delivery=1e6 * web_cpu_total / max(1, len(latencies)),
        client_us_per_delivery=1e6 * sum(r.cpu_seconds for r in reports) / max(1, len(latencies)),
        stream_conns=stream_mid,
        web_conns=web_mid,
        stream_conns_open=stream_open,
        web_conns_open=web_open,
        names=dict(published.names_mid),
        errors=errors,
    )


# --------------------------------------------------------------------------- main


def _report(rows: list[Row], events: int) -> str:
    headers = [
        "clients", "p50 ms", "p99 ms", "max ms", "deliveries", "deliv/s (publish)",
        "deliv/s (to last)", "complete, in order", "web:stream conns", "web:* conns",
    ]  # fmt: skip
    body = []
    for row in rows:
        lat = row.latencies
        body.append(
            [
                row.clients,
                1000 * percentile(lat, 0.50),
                1000 * percentile(lat, 0.99),
                1000 * (lat[-1] if lat else float("nan")),
                f"{row.deliveries:,}/{row.clients * events:,}",
                row.deliveries / row.publish_seconds,
                row.deliveries / row.until_last_seconds,
                f"{row.complete}/{row.clients}",
                f"{row.stream_conns} ({row.stream_conns_open})",
                f"{row.web_conns} ({row.web_conns_open})",
            ]
        )
    return table(headers, body)


def _diagnostics(rows: list[Row]) -> str:
    headers = [
        "clients", "client procs", "connect s", "refused", "web CPU %", "web CPU us/deliv",
        "clients CPU us/deliv", "machine busy %",
    ]  # fmt: skip
    body = [
        [
            row.clients,
            row.procs,
            row.connect_seconds,
            len(row.refusals),
            row.web_cpu_percent,
            row.web_us_per_delivery,
            row.client_us_per_delivery,
            row.machine_busy,
        ]
        for row in rows
    ]
    return table(headers, body)


def _report_over_time(rows: list[Row]) -> str:
    """p50 / p99 latency (ms) of the chunks published in each tenth of the run."""
    headers = ["clients", *(f"{10 * i}-{10 * i + 10}%" for i in range(10))]
    body = []
    for row in rows:
        cells = [
            f"{1000 * percentile(d, 0.5):.0f} / {1000 * percentile(d, 0.99):.0f}" if d else "-"
            for d in row.by_decile
        ]
        body.append([row.clients, *cells])
    return table(headers, body)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_latency",
        description="Publish -> SSE client latency and deliveries/s on one web process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--clients", default="1,100,1000", help="client counts")
    parser.add_argument("--events", type=int, default=200, help="chunk events per run")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="chunk events published per second"
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=0,
        help="client processes; 0: 1 up to 100 clients, else 2",
    )
    parser.add_argument(
        "--client",
        choices=["httpx-sse", "raw"],
        default="httpx-sse",
        help="SSE client: httpx + httpx-sse, or a lean asyncio-streams reader",
    )
    parser.add_argument(
        "--connect-retries",
        type=int,
        default=3,
        help="times a client whose stream request is refused (e.g. 503) tries again, after "
        "0.5-1.5 s; refusals are counted in the table",
    )
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy duration")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the web process while publishing to the largest client count; raw "
        "collapsed stacks written to this file",
    )
    args = parser.parse_args()
    args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    return args


def main() -> None:
    args = parse_args()
    stop_on_sigterm()
    nofile = raise_open_file_limit(max(args.client_counts) * 2 + 1024)
    print(f"$ {command_line('bench.relay_latency')}")
    with embedded_redis() as server:
        redis_url = server.url
        sync_redis = redis.Redis.from_url(redis_url)
        print(f"# {machine_summary(sync_redis)}; open files {nofile}")
        web = start_web(redis_url)
        try:
            rows = []
            for n in args.client_counts:
                profile = args.profile if n == max(args.client_counts) else None
                row = measure(web, sync_redis, redis_url, n, args, profile)
                rows.append(row)
                print(
                    f"# {n} clients: connected in {row.connect_seconds:.1f} s; "
                    f"Redis connections by name mid-publish {row.names}"
                    + (f"; refused: {Counter(row.refusals)}" if row.refusals else "")
                    + (f"; errors: {row.errors}" if row.errors else ""),
                    flush=True,
                )
        finally:
            web.stop()
            sync_redis.close()
    print(f"# finished; {load_average()}")
    print(f"# {args.events} chunk events at {args.rate:g}/s to every client of one task")
    print(_report(rows, args.events))
    print("# conns: at mid-publish (and once all clients were open, before publishing)")
    print(
        "# diagnostics: connect s = until every client had `queued`; refused = stream requests "
        "answered non-200 (retried); web CPU % (of one core) and machine busy % (of all CPUs) "
        "while publishing; CPU us/deliv = CPU from first publish to last client done / deliveries"
    )
    print(_diagnostics(rows))
    print("# latency p50 / p99 (ms) of the chunks published in each tenth of the run:")
    print(_report_over_time(rows))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this benchmark started has been stopped")
