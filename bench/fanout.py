"""Fan-out: many concurrent idle SSE clients on ONE web process; its memory per client and its
Redis connections.

How: one private Redis and one web process (uvicorn, started like the e2e tests do), no worker.
The bench submits ``--tasks`` real tasks as alice (``POST /api/v1/agents/echo/invoke-async``:
the owner record and the ``queued`` event exist, the Celery message stays queued). Then
``--clients`` SSE clients, spread evenly over the tasks and over ``--client-procs`` forked
processes (lean asyncio-streams readers, at most ``--connect-burst`` connects in flight per
process), open the streams and wait until each has ``queued``. They then stay idle for
``--idle`` seconds (heartbeat comments only). Finally the bench appends one ``chunk`` and the
``result`` to every task's log, which every client must receive before its stream ends: proof
that all of them were live.

Measured:

- the web's RSS (``VmRSS``) before the clients (after a warm-up of a few streams) and with all
  of them connected, at the start and end of the idle period; per client = growth / clients;
- the web's Redis connections (``CLIENT LIST`` names ``agent-service:web:stream`` and
  ``agent-service:web*``) while the clients are open; its open files;
- the web's CPU while idle (heartbeats), the time to connect everyone, refused connects;
- the time from the first append until every client had its chunk, and how many got it.

The script raises its open-file limit (children inherit it) to what the run needs.

    .venv/bin/python -m bench.fanout                      # 10,000 clients
    .venv/bin/python -m bench.fanout --clients 2000 --idle 5
    .venv/bin/python -m bench.fanout --clients 2000 --idle 5 --tracemalloc /tmp/fanout-mem.txt
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import TypeAlias

import redis
from redis.asyncio import Redis as AsyncRedis

from bench._common import (
    StreamDroppedError,
    StreamRefusedError,
    command_line,
    connections_by_name,
    cpu_seconds,
    embedded_redis,
    error_lines,
    load_average,
    machine_summary,
    py_spy,
    raise_open_file_limit,
    raw_sse,
    rss_bytes,
    stop_on_sigterm,
    table,
    web_connections,
)
from contract.events import EventType
from streaming.event_log import EventLog
from teststack.polling import submit
from teststack.sse import events_path
from teststack.stack import WebServer, headers_for, start_web

ALICE = headers_for("alice")
MEMHOOK = Path(__file__).resolve().parent / "memhook"
CONNECT_RETRIES = 5


@dataclass(frozen=True)
class ClientSpec:
    base_url: str
    task_ids: list[str]  # one per client of this process
    connect_burst: int
    deadline: float


@dataclass
class ProcReport:
    ready: int
    dropped: int  # streams the web closed without ending them (before or after `queued`)
    failed: int
    refused: int
    got_chunk: int
    finished: int
    last_chunk_at: float  # time.time() of the last chunk received
    errors: list[str]


#: (pid, ready, failed, refused) from each client process once its clients have settled.
ReadyQueue: TypeAlias = "Queue[tuple[int, int, int, int]]"


async def _clients(
    spec: ClientSpec, ready_queue: ReadyQueue, connected: Synchronized[int]
) -> ProcReport:
    gate = asyncio.Semaphore(spec.connect_burst)
    counts = {"ready": 0, "failed": 0, "refused": 0, "dropped": 0, "chunk": 0, "finished": 0}
    last_chunk = [0.0]
    errors: set[str] = set()

    def settle(key: str) -> None:
        counts[key] += 1
        if key == "ready":
            with connected.get_lock():
                connected.value += 1
        if counts["ready"] + counts["failed"] == len(spec.task_ids):
            ready_queue.put((os.getpid(), counts["ready"], counts["failed"], counts["refused"]))

    async def one(task_id: str) -> None:
        ready = False
        for attempt in range(CONNECT_RETRIES + 1):
            await gate.acquire()
            held = True
            try:
                async for kind, _ in raw_sse(spec.base_url, events_path(task_id), ALICE):
                    if not ready:
                        ready, held = True, False
                        gate.release()
                        settle("ready")
                    if kind == "chunk":
                        counts["chunk"] += 1
                        last_chunk[0] = time.time()
                    elif kind in ("result", "error", "cancelled"):
                        counts["finished"] += kind == "result"
                        return
            except (StreamRefusedError, ConnectionError, OSError) as exc:
                counts["dropped"] += isinstance(exc, StreamDroppedError)
                if ready or attempt == CONNECT_RETRIES:
                    errors.add(f"{type(exc).__name__}: {exc}")
                    break
                counts["refused"] += 1
            else:
                return
            finally:
                if held:
                    gate.release()
            await asyncio.sleep(0.5)
        if not ready:
            settle("failed")

    tasks = [asyncio.create_task(one(t)) for t in spec.task_ids]
    _, pending = await asyncio.wait(tasks, timeout=spec.deadline)
    for task in pending:
        task.cancel()
    if pending:
        errors.add(f"{len(pending)} clients did not finish before the deadline")
    return ProcReport(
        ready=counts["ready"],
        failed=counts["failed"],
        refused=counts["refused"],
        dropped=counts["dropped"],
        got_chunk=counts["chunk"],
        finished=counts["finished"],
        last_chunk_at=last_chunk[0],
        errors=sorted(errors),
    )


def _client_process(
    spec: ClientSpec,
    ready_queue: ReadyQueue,
    results: Queue[ProcReport],
    connected: Synchronized[int],
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import uvloop

        report = uvloop.run(_clients(spec, ready_queue, connected))
    except ImportError:
        report = asyncio.run(_clients(spec, ready_queue, connected))
    results.put(report)


# --------------------------------------------------------------------------- the run


async def _publish_all(redis_url: str, task_ids: list[str]) -> float:
    """One chunk, then the result, to every task; when the first append was sent."""
    client = AsyncRedis.from_url(redis_url, client_name="bench:publisher")
    log = EventLog(client, maxlen=10_000, ttl=3600)
    try:
        first = time.time()
        for task_id in task_ids:
            await log.append(task_id, [(EventType.CHUNK, {"text": "hello", "index": 0})])
        result = {"content": "hello", "metadata": {}, "usage": {}}
        for task_id in task_ids:
            await log.append(task_id, [(EventType.RESULT, result)])
    finally:
        await client.aclose()
    return first


def _warm_up(web: WebServer, task_id: str) -> None:
    """Open and close a few streams so that what the first stream builds lazily is built."""

    async def once() -> None:
        async for _ in raw_sse(web.base_url, events_path(task_id), ALICE):
            return

    async def several() -> None:
        await asyncio.gather(*(once() for _ in range(20)))

    asyncio.run(several())


def _wait_ready(
    ready_queue: ReadyQueue, procs: int, timeout: float, connected: Synchronized[int]
) -> tuple[int, int, int, bool]:
    """(connected, failed, refused, all settled): waits until every client process has settled
    its clients, or ``timeout``; then the clients connected so far are measured as they are."""
    ready = failed = refused = settled = 0
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 30.0
    while settled < procs and time.monotonic() < deadline:
        try:
            _, ok, bad, ref = ready_queue.get(timeout=1.0)
        except queue.Empty:
            if time.monotonic() >= next_note:
                print(f"# ... {connected.value:,} clients connected so far", flush=True)
                next_note += 30.0
            continue
        ready, failed, refused, settled = ready + ok, failed + bad, refused + ref, settled + 1
    if settled < procs:
        return connected.value, failed, refused, False
    return ready, failed, refused, True


@dataclass(frozen=True)
class FanoutResult:
    """What one run measured (``names_*``: Redis connections by client name)."""

    ready: int
    settled: bool
    failed: int
    refused: int
    connect_seconds: float
    rss_before: int
    rss_connected: int
    rss_idle: int
    names_before: Counter[str]
    names_open: Counter[str]
    names_idle: Counter[str]
    open_files: int
    idle_cpu_percent: float
    got_chunk: int
    finished: int
    delivery_seconds: float
    errors: list[str]
    dropped: int
    web_errors: list[str]
    reports: int
    procs: int


def run(args: argparse.Namespace, redis_url: str, sync_redis: redis.Redis) -> FanoutResult:
    env = (
        {"PYTHONPATH": str(MEMHOOK), "BENCH_TRACEMALLOC": str(args.tracemalloc)}
        if args.tracemalloc
        else None
    )
    web = start_web(redis_url, env=env)
    processes: list[BaseProcess] = []
    try:
        task_ids = [submit(web.client, "echo", f"fanout {i}") for i in range(args.tasks)]
        _warm_up(web, task_ids[0])
        time.sleep(1.0)
        pid = web.process.pid
        if args.tracemalloc:
            os.kill(pid, signal.SIGUSR1)  # the baseline snapshot
            time.sleep(2.0)
        rss_before = rss_bytes(pid)
        names_before = connections_by_name(sync_redis)
        assignment = [task_ids[i % len(task_ids)] for i in range(args.clients)]
        share = [assignment[p :: args.client_procs] for p in range(args.client_procs)]
        connect_timeout = args.connect_timeout
        deadline = connect_timeout + args.idle + 120.0
        context = multiprocessing.get_context("fork")
        ready_queue, results = context.Queue(), context.Queue()
        connected = context.Value("i", 0)
        processes = [
            context.Process(
                target=_client_process,
                args=(
                    ClientSpec(web.base_url, ids, args.connect_burst, deadline),
                    ready_queue,
                    results,
                    connected,
                ),
                daemon=True,
            )
            for ids in share
            if ids
        ]
        started = time.monotonic()
        with py_spy(pid, seconds=args.profile_seconds, output=args.profile):
            for process in processes:
                process.start()
            ready, failed, refused, settled = _wait_ready(
                ready_queue, len(processes), connect_timeout, connected
            )
            connect_seconds = time.monotonic() - started
        rss_connected = rss_bytes(pid)
        names_open = connections_by_name(sync_redis)
        open_files = len(os.listdir(f"/proc/{pid}/fd"))
        cpu_idle_start, idle_started = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu_percent = (
            100 * (cpu_seconds(pid) - cpu_idle_start) / (time.monotonic() - idle_started)
        )
        rss_idle = rss_bytes(pid)
        if args.tracemalloc:
            os.kill(pid, signal.SIGUSR1)  # growth since the baseline, written to the file
            time.sleep(5.0)
        names_idle = connections_by_name(sync_redis)
        first_sent = asyncio.run(_publish_all(redis_url, task_ids))
        reports: list[ProcReport] = []
        collect_deadline = time.monotonic() + 120.0
        while len(reports) < len(processes) and time.monotonic() < collect_deadline:
            try:
                reports.append(results.get(timeout=1.0))
            except queue.Empty:
                continue
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
        web_errors = error_lines(web.process.output(tail=10**7), limit=5)
        web.stop()
    last_chunk = max((r.last_chunk_at for r in reports), default=float("nan"))
    return FanoutResult(
        ready=ready,
        settled=settled,
        failed=failed,
        refused=refused,
        connect_seconds=connect_seconds,
        rss_before=rss_before,
        rss_connected=rss_connected,
        rss_idle=rss_idle,
        names_before=names_before,
        names_open=names_open,
        names_idle=names_idle,
        open_files=open_files,
        idle_cpu_percent=idle_cpu_percent,
        got_chunk=sum(r.got_chunk for r in reports),
        finished=sum(r.finished for r in reports),
        delivery_seconds=last_chunk - first_sent,
        errors=sorted({e for r in reports for e in r.errors}),
        dropped=sum(r.dropped for r in reports),
        web_errors=web_errors,
        reports=len(reports),
        procs=len(processes),
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description="Concurrent idle SSE clients on one web process: RSS per client, Redis conns.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=10_000, help="concurrent SSE clients")
    parser.add_argument("--tasks", type=int, default=100, help="tasks the clients are spread over")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds all clients stay idle")
    parser.add_argument("--client-procs", type=int, default=4, help="client processes")
    parser.add_argument(
        "--connect-burst", type=int, default=100, help="connects in flight per client process"
    )
    parser.add_argument(
        "--tracemalloc",
        type=Path,
        default=None,
        help="trace the web's allocations (tracemalloc, which inflates its RSS) and write what "
        "grew between the warm-up and the end of the idle period to this file",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=180.0,
        help="seconds for the clients to connect; then those connected are measured",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the web process while the clients connect (raw collapsed stacks)",
    )
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy duration")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    stop_on_sigterm()
    nofile = raise_open_file_limit(args.clients + 2048)
    print(f"$ {command_line('bench.fanout')}")
    if nofile < args.clients + 512:
        sys.exit(f"the open-file limit is {nofile}: too low for {args.clients} clients")
    with embedded_redis() as server:
        sync_redis = redis.Redis.from_url(server.url)
        print(f"# {machine_summary(sync_redis)}; open files {nofile}")
        try:
            result = run(args, server.url, sync_redis)
        finally:
            sync_redis.close()
    print(f"# finished; {load_average()}")
    n = max(1, result.ready)
    growth_connected = result.rss_connected - result.rss_before
    growth_idle = result.rss_idle - result.rss_before
    stream_open, web_open = web_connections(result.names_open)
    stream_idle, web_idle = web_connections(result.names_idle)
    print(
        f"# {args.clients:,} SSE clients over {args.tasks} tasks, {result.procs} client "
        f"processes, idle {args.idle:g} s; web RSS before {result.rss_before / 2**20:.1f} MiB"
    )
    connected_note = "" if result.settled else f" (not all within {args.connect_timeout:g} s)"
    rows = [
        [
            args.clients,
            f"{result.ready:,}{connected_note}",
            result.refused,
            result.connect_seconds,
            growth_connected / 2**20,
            growth_connected / n / 1024,
            growth_idle / n / 1024,
            f"{stream_open} / {stream_idle}",
            f"{web_open} / {web_idle}",
            result.open_files,
            result.idle_cpu_percent,
            f"{result.got_chunk:,}",
            result.delivery_seconds,
            f"{result.finished:,}",
        ]
    ]
    headers = [
        "clients", "connected", "refused", "connect s", "RSS growth MiB", "KB/client",
        "KB/client (after idle)", "web:stream conns", "web:* conns", "web open files",
        "idle web CPU %", "got the chunk", "delivery s", "ended with result",
    ]  # fmt: skip
    print(table(headers, rows))
    print("# conns: once all were connected / at the end of the idle period")
    if result.dropped:
        print(f"# streams the web closed without ending them: {result.dropped}")
    if result.errors:
        print(f"# client errors: {result.errors}")
    for line in result.web_errors:
        print(f"# web log: {line}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this benchmark started has been stopped")
