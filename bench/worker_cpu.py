"""Worker CPU per streamed token, with and without chunk coalescing, per event-loop mode.

What is measured, for each ``AGENT_EVENT_LOOP`` mode (``--modes``) and each
``STREAM_COALESCE_WINDOW`` (``--windows``), on a fresh worker process:

- wall time from the first submission to the last task's terminal event, and calls/s;
- the worker's CPU over that time (utime + stime of ``/proc/<pid>/stat``: every thread of the
  process), in seconds and per streamed token: CPU / (calls x tokens), "all-in" (receiving and
  parsing the LLM stream, publishing, Celery's own per-task work, logging);
- the idle worker's CPU over the same wall time (measured for ``--idle-seconds`` just before,
  scaled), and the per-token CPU net of it;
- ``chunk`` events published per call (counted in a few tasks' logs) and whether every task's
  streamed content is the whole answer;
- diagnostics: the kernel's share of the worker's CPU, events of all types per call, the worker's
  Redis connections (``CLIENT LIST`` name ``agent-service:worker``, most seen), connections Redis
  accepted during the run (``total_connections_received``: connection churn), Redis's own CPU,
  and how busy the whole machine was.

How: one private Redis, the loopback LLM server (its own process) scripted to answer ``--tokens``
tokens ``--delay`` s apart, and per configuration a fresh worker (threads pool, concurrency 100,
rate limits off, the e2e tests' LLM settings) and web process on a Redis database of their own.
After ``--warmup`` calls (not measured) the bench submits ``--calls`` streaming invocations of
``simple_llm_agent`` through the web (``"stream": true``, 20 at a time) and waits, reading Redis,
until every task's log ends with a terminal event.

    .venv/bin/python -m bench.worker_cpu --calls 200 --tokens 50 --delay 0.02
    .venv/bin/python -m bench.worker_cpu --modes shared,per-task
    .venv/bin/python -m bench.worker_cpu --windows 0 --profile /tmp/worker --profile-gil
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench._common import (
    WORKER_CLIENT,
    busy_percent,
    command_counts,
    command_line,
    connections_accepted,
    connections_by_name,
    cpu_seconds,
    cpu_split,
    embedded_redis,
    llm_server,
    load_average,
    machine_summary,
    machine_ticks,
    py_spy,
    redis_cpu_seconds,
    stop_on_sigterm,
    table,
    token_texts,
    worker_env,
)
from contract import keys
from teststack.processes import ManagedProcess
from teststack.stack import WebServer, headers_for, redis_db_url, start_web, start_worker
from teststack.task_log import log_entries

TERMINAL = {b"result", b"error", b"cancelled"}
SUBMIT_CONCURRENCY = 20
SAMPLE_TASKS = 5  # tasks whose logs are read to count chunk events
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Config:
    mode: str
    window: float


@dataclass
class Row:
    config: Config
    calls: int
    tokens: int
    wall: float
    worker_cpu: float
    worker_sys: float  # the part of worker_cpu spent in the kernel
    machine_busy: float  # % of all the machine's CPUs busy during the run
    idle_cpu: float  # the idle worker's CPU over the same wall time
    chunk_events_per_call: float
    events_per_call: float
    failed: int
    content_ok: int
    worker_conns: int
    redis_cpu: float
    new_conns: int  # connections Redis accepted during the run (all clients)
    commands: Counter[str]  # Redis commands run during the run, by every process, by name

    @property
    def cpu_per_token_us(self) -> float:
        return 1e6 * self.worker_cpu / (self.calls * self.tokens)

    @property
    def net_cpu_per_token_us(self) -> float:
        return 1e6 * (self.worker_cpu - self.idle_cpu) / (self.calls * self.tokens)


# --------------------------------------------------------------------------- submitting, waiting


async def _submit_all(base_url: str, message: str, calls: int) -> list[str]:
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers_for("alice"), timeout=30.0
    ) as client:

        async def one() -> str:
            async with gate:
                response = await client.post(
                    "/api/v1/agents/simple_llm_agent/invoke-async",
                    json={"message": message, "stream": True},
                )
                response.raise_for_status()
                task_id: str = response.json()["task_id"]
                return task_id

        return list(await asyncio.gather(*(one() for _ in range(calls))))


def submit(web: WebServer, message: str, calls: int) -> list[str]:
    return asyncio.run(_submit_all(web.base_url, message, calls))


def wait_until_done(
    client: redis.Redis, task_ids: list[str], *, timeout: float
) -> tuple[dict[str, bytes], int]:
    """Each task's terminal event type, read from the last entry of its log; and the most
    ``agent-service:worker`` Redis connections seen meanwhile."""
    pending, outcome, most_conns = list(task_ids), {}, 0
    deadline = time.monotonic() + timeout
    next_count = 0.0
    while pending:
        pipe = client.pipeline(transaction=False)
        for task_id in pending:
            pipe.xrevrange(keys.task_events(task_id), count=1)
        for task_id, entries in zip(pending, pipe.execute(), strict=True):
            if entries and entries[0][1][b"e"] in TERMINAL:
                outcome[task_id] = entries[0][1][b"e"]
        pending = [t for t in pending if t not in outcome]
        if time.monotonic() >= next_count:
            most_conns = max(most_conns, connections_by_name(client)[WORKER_CLIENT])
            next_count = time.monotonic() + 1.0
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} tasks not finished after {timeout:g} s")
        if pending:
            time.sleep(POLL_INTERVAL)
    return outcome, most_conns


def events_per_call(client: redis.Redis, task_ids: list[str]) -> tuple[float, float]:
    """Mean ``chunk`` events and mean events of all types in the logs of ``task_ids``."""
    chunks, everything = [], []
    for task_id in task_ids:
        entries = log_entries(client, task_id)
        everything.append(len(entries))
        chunks.append(sum(1 for entry in entries if entry.event == b"chunk"))
    return statistics.mean(chunks), statistics.mean(everything)


def content_matches(client: redis.Redis, task_ids: list[str], expected: str) -> int:
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.get(keys.task_content(task_id))
    return sum(1 for value in pipe.execute() if value == expected.encode())


# --------------------------------------------------------------------------- one configuration


def idle_cpu_rate(worker: ManagedProcess, seconds: float) -> float:
    """CPU seconds per second of the worker doing nothing."""
    before, started = cpu_seconds(worker.pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(worker.pid) - before) / (time.monotonic() - started)


def measure(
    config: Config, redis_url: str, llm_base_url: str, args: argparse.Namespace, message: str,
    profile: Path | None,
) -> Row:  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    worker = start_worker(
        redis_url,
        env=worker_env(llm_base_url, window=config.window, mode=config.mode),
        concurrency=100,
    )
    try:
        web = start_web(redis_url)
        try:
            timeout = 120.0 + args.calls * args.tokens * args.delay
            if args.warmup:
                wait_until_done(client, submit(web, message, args.warmup), timeout=timeout)
            idle_rate = idle_cpu_rate(worker, args.idle_seconds)
            redis_before = redis_cpu_seconds(client)
            accepted_before = connections_accepted(client)
            commands_before = command_counts(client)
            cpu_before, started = cpu_split(worker.pid), time.monotonic()
            machine_before = machine_ticks()
            with py_spy(
                worker.pid, seconds=args.profile_seconds, output=profile, gil=args.profile_gil
            ):
                task_ids = submit(web, message, args.calls)
                outcome, worker_conns = wait_until_done(client, task_ids, timeout=timeout)
                wall = time.monotonic() - started
                user, system = (
                    a - b for a, b in zip(cpu_split(worker.pid), cpu_before, strict=True)
                )
                machine_busy = busy_percent(machine_before, machine_ticks())
                redis_cpu = redis_cpu_seconds(client) - redis_before
                new_conns = connections_accepted(client) - accepted_before
                commands = command_counts(client) - commands_before
        finally:
            web.stop()
    finally:
        worker.stop()
    chunk_events, all_events = events_per_call(client, task_ids[:SAMPLE_TASKS])
    expected = "".join(token_texts(args.tokens))
    content_ok = content_matches(client, task_ids, expected)
    client.close()
    return Row(
        config=config,
        calls=args.calls,
        tokens=args.tokens,
        wall=wall,
        worker_cpu=user + system,
        worker_sys=system,
        machine_busy=machine_busy,
        idle_cpu=idle_rate * wall,
        chunk_events_per_call=chunk_events,
        events_per_call=all_events,
        failed=sum(1 for kind in outcome.values() if kind != b"result"),
        content_ok=content_ok,
        worker_conns=worker_conns,
        redis_cpu=redis_cpu,
        new_conns=new_conns,
        commands=commands,
    )


# --------------------------------------------------------------------------- main


def _report(rows: list[Row]) -> str:
    headers = [
        "loop", "coalesce s", "calls", "wall s", "calls/s", "worker CPU s", "idle CPU s",
        "CPU/token us", "net CPU/token us", "chunk events/call", "failed", "content ok",
    ]  # fmt: skip
    body = [
        [
            row.config.mode,
            f"{row.config.window:g}",
            row.calls,
            row.wall,
            row.calls / row.wall,
            row.worker_cpu,
            row.idle_cpu,
            row.cpu_per_token_us,
            row.net_cpu_per_token_us,
            row.chunk_events_per_call,
            row.failed,
            f"{row.content_ok}/{row.calls}",
        ]
        for row in rows
    ]
    return table(headers, body)


def _diagnostics(rows: list[Row]) -> str:
    headers = [
        "loop", "coalesce s", "worker sys share", "events/call", "worker conns (most)",
        "new Redis conns", "Redis CPU s", "machine busy %",
    ]  # fmt: skip
    body = [
        [
            row.config.mode,
            f"{row.config.window:g}",
            f"{100 * row.worker_sys / row.worker_cpu:.0f}%",
            row.events_per_call,
            row.worker_conns,
            row.new_conns,
            row.redis_cpu,
            row.machine_busy,
        ]
        for row in rows
    ]
    return table(headers, body)


def _commands(rows: list[Row], *, top: int = 12) -> str:
    """Redis commands per call, the most frequent first (the web's submits included)."""
    names = [name for name, _ in sum((row.commands for row in rows), Counter()).most_common(top)]
    headers = ["loop", "coalesce s", "all/call", *names]
    body = [
        [
            row.config.mode,
            f"{row.config.window:g}",
            row.commands.total() / row.calls,
            *(row.commands[name] / row.calls for name in names),
        ]
        for row in rows
    ]
    return table(headers, body)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker_cpu",
        description="Worker CPU per streamed token, with and without chunk coalescing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=200, help="measured streaming calls")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per LLM answer")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between tokens")
    parser.add_argument(
        "--modes",
        default="shared",
        help="AGENT_EVENT_LOOP values, e.g. shared,per-task",
    )
    parser.add_argument("--windows", default="0,0.005", help="STREAM_COALESCE_WINDOW values")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured calls first (start-up)")
    parser.add_argument(
        "--idle-seconds", type=float, default=3.0, help="idle CPU measured over this long"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the worker of each configuration; raw collapsed stacks written to "
        "PROFILE-<mode>-w<window>.txt",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy duration")
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only the thread holding the GIL (py-spy --gil)",
    )
    args = parser.parse_args()
    args.configs = [
        Config(mode=mode.strip(), window=float(window))
        for mode in args.modes.split(",")
        for window in args.windows.split(",")
    ]
    return args


def main() -> None:
    args = parse_args()
    stop_on_sigterm()
    print(f"$ {command_line('bench.worker_cpu')}")
    rows = []
    with embedded_redis() as server, llm_server() as (llm, control):
        admin = redis.Redis.from_url(server.url)
        print(f"# {machine_summary(admin)}")
        admin.close()
        message = f"bench: {args.tokens} tokens every {args.delay:g} s"
        control.script(message, tokens=token_texts(args.tokens), delay=args.delay)
        for db, config in enumerate(args.configs, start=1):
            profile = (
                args.profile.with_name(f"{args.profile.name}-{config.mode}-w{config.window:g}.txt")
                if args.profile
                else None
            )
            row = measure(
                config, redis_db_url(server.url, db), llm.base_url, args, message, profile
            )
            rows.append(row)
            print(
                f"# {config.mode}, window {config.window:g}: {row.wall:.1f} s, "
                f"{row.cpu_per_token_us:.0f} us/token",
                flush=True,
            )
    print(f"# finished; {load_average()}")
    print(
        f"# {args.calls} streaming calls of simple_llm_agent, {args.tokens} tokens "
        f"{args.delay:g} s apart, threads pool, concurrency 100, 1 worker process"
    )
    print(_report(rows))
    print("# diagnostics (all over the measured run; machine busy: % of all CPUs):")
    print(_diagnostics(rows))
    print("# Redis commands per call (every process: the web's submits too), the most run first:")
    print(_commands(rows))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this benchmark started has been stopped")
