"""I/O-bound throughput, side by side: N streaming invocations submitted at once, ours against the
plain Celery recipe this product replaces, on the same Redis and the same LLM server, in one run.

The systems (``--systems``), each on a fresh set of processes and a Redis database of its own:

- ``seed-prefork``: ``bench.seed_recipe`` (a synchronous task that streams the answer with httpx,
  collects it and returns it; no relay) on Celery's default pool, ``--pool prefork
  --concurrency 4``. The bench sends the tasks by name with a Celery producer and polls the result
  backend until every result is stored;
- ``seed-gevent``: the same task on Celery's advice for I/O-bound work, ``--pool gevent
  --concurrency 100`` (skipped when gevent is not installed: ``pip install -e '.[bench]'``);
  ``--recipe-concurrency 100,400`` runs it once per number of greenlets, each its own row;
- ``ours``: one worker process (threads pool, ``--concurrency``, the shipped defaults: shared event
  loop, 5 ms coalescing) and one web process. Each invocation is submitted through the REST API
  (``POST /api/v1/agents/simple_llm_agent/invoke-async`` with ``"stream": true``, over
  ``--submitters`` keep-alive connections of a lean HTTP client), and an SSE client (a lean
  reader too) reads every event of its stream until the terminal one. ``--concurrency 100,400``
  runs it once per number of threads, each its own row. With ``--client poll`` the clients
  poll instead, as a client that cannot stream would: each invocation is submitted with
  ``"stream": false`` and its status read (``GET /api/v1/agents/tasks/{id}``, over the same
  keep-alive connections) every ``--poll-interval`` s until it is final; its answer is the
  status's result.

Per system: wall time from the first submission to the last result (stored, for the recipe;
received by its SSE client, for ours), invocations/s and the ratio to each recipe; the worker's
CPU (all its processes) per streamed token; whether every answer is whole; for ours, the chunk
events the SSE clients received and the web's CPU. Rate limits are off for every system (the
recipe has none; ours ships 50/min per worker for streaming calls). The LLM answers ``--tokens``
tokens ``--delay`` s apart.

    .venv/bin/python -m bench.throughput                      # N = 1,000
    .venv/bin/python -m bench.throughput --calls 100 --systems seed-prefork,ours
    .venv/bin/python -m bench.throughput --calls 600 --systems ours --profile /tmp/tp
    .venv/bin/python -m bench.throughput --systems seed-gevent,ours \
        --recipe-concurrency 100,400 --concurrency 100,400
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sys
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis
from celery import Celery

from bench import seed_recipe
from bench._common import (
    RawHTTPConnection,
    StreamDroppedError,
    StreamRefusedError,
    busy_percent,
    command_line,
    connections_accepted,
    cpu_seconds,
    embedded_redis,
    error_lines,
    llm_server,
    load_average,
    machine_summary,
    machine_ticks,
    py_spy,
    raise_open_file_limit,
    raw_sse,
    stop_on_sigterm,
    table,
    token_texts,
    tree_cpu_seconds,
    worker_env,
)
from teststack.processes import ManagedProcess, python_module
from teststack.sse import events_path
from teststack.stack import (
    WORKER_READY_TIMEOUT,
    WebServer,
    base_env,
    headers_for,
    redis_db_url,
    start_web,
    start_worker,
)

SYSTEMS = ("seed-prefork", "seed-gevent", "ours")
SEED_POOLS = {"seed-prefork": ("prefork", 4), "seed-gevent": ("gevent", 100)}
DEFAULT_CONCURRENCY = 100  # threads of ours' worker, greenlets of the gevent recipe
TERMINAL = {"result", "error", "cancelled"}
FINAL_STATUSES = {"completed", "failed", "cancelled"}
CLIENTS = ("sse", "poll")
POLL_INTERVAL = 0.05
ALICE = headers_for("alice")
T = TypeVar("T")


@dataclass(frozen=True)
class Workload:
    calls: int
    tokens: int
    delay: float
    warmup: int
    timeout: float

    @property
    def message(self) -> str:
        return f"bench: {self.tokens} tokens every {self.delay:g} s"

    @property
    def expected(self) -> str:
        return "".join(token_texts(self.tokens))


@dataclass
class Outcome:
    """One system's run."""

    system: str
    setup: str
    calls: int
    tokens: int
    wall: float
    worker_cpu: float
    web_cpu: float = float("nan")
    client_cpu: float = float("nan")  # this process's CPU (submitting, reading streams, polling)
    machine_busy: float = float("nan")
    failed: int = 0
    content_ok: int = 0
    chunk_events: int = 0  # chunk events received by the SSE clients (ours)
    refused: int = 0  # stream requests answered non-200 (then retried)
    dropped: int = 0  # streams the web closed before their end (then read again)
    web_errors: list[str] = field(default_factory=list)  # error lines of the web's log
    why: Counter[str] = field(default_factory=Counter)  # refusals and drops, by reason
    new_conns: int = 0  # connections Redis accepted during the run (all clients: churn)
    notes: list[str] = field(default_factory=list)
    peer: str = ""  # the name of its ratio column, for a recipe run ("seed-gevent x400")

    @property
    def rate(self) -> float:
        return self.calls / self.wall

    @property
    def cpu_per_token_us(self) -> float:
        return 1e6 * self.worker_cpu / (self.calls * self.tokens)


# --------------------------------------------------------------------------- the recipe


def start_seed_worker(
    redis_url: str, llm_base_url: str, *, pool: str, concurrency: int
) -> ManagedProcess:
    argv = python_module(
        "celery", "-A", "bench.seed_recipe", "worker", "-Q", seed_recipe.QUEUE,
        "--pool", pool, "--concurrency", str(concurrency), "-n", f"seed-{uuid.uuid4().hex[:8]}@%h",
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    )  # fmt: skip
    env = {**base_env(redis_url), "SEED_REDIS_URL": redis_url, "SEED_LLM_BASE_URL": llm_base_url}
    worker = ManagedProcess(f"seed-{pool}", argv, env=env)
    worker.start()
    try:
        worker.wait_for_output(" ready.", timeout=WORKER_READY_TIMEOUT)
    except BaseException:
        worker.stop()
        raise
    return worker


def _send_seed(producer_app: Celery, message: str, calls: int) -> list[str]:
    return [
        producer_app.send_task(
            seed_recipe.TASK_NAME, kwargs={"message": message}, queue=seed_recipe.QUEUE
        ).id
        for _ in range(calls)
    ]


def _wait_seed(
    client: redis.Redis, task_ids: list[str], *, timeout: float
) -> dict[str, dict[str, Any]]:
    """Each task's stored result entry, polled from the result backend (as a client would)."""
    pending, done = list(task_ids), dict[str, dict[str, Any]]()
    deadline = time.monotonic() + timeout
    while pending:
        values = client.mget([f"celery-task-meta-{t}" for t in pending])
        for task_id, value in zip(pending, values, strict=True):
            if value is not None:
                meta = orjson.loads(value)
                if meta["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                    done[task_id] = meta
        pending = [t for t in pending if t not in done]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} recipe tasks not finished after {timeout:g} s")
        if pending:
            time.sleep(POLL_INTERVAL)
    return done


def run_seed(
    system: str,
    redis_url: str,
    llm_base_url: str,
    work: Workload,
    *,
    concurrency: int | None = None,
) -> Outcome:
    """The recipe on ``system``'s pool, with ``concurrency`` processes or greenlets (its
    default when None)."""
    pool, default_concurrency = SEED_POOLS[system]
    concurrency = default_concurrency if concurrency is None else concurrency
    client = redis.Redis.from_url(redis_url)
    producer_app = Celery("seed-producer", broker=redis_url, backend=redis_url)
    producer_app.conf.update(task_serializer="json", accept_content=["json"])
    worker = start_seed_worker(redis_url, llm_base_url, pool=pool, concurrency=concurrency)
    try:
        if work.warmup:
            _wait_seed(client, _send_seed(producer_app, work.message, work.warmup), timeout=120)
        cpu_before, client_before = tree_cpu_seconds(worker.pid), time.process_time()
        accepted_before = connections_accepted(client)
        machine_before, started = machine_ticks(), time.monotonic()
        task_ids = _send_seed(producer_app, work.message, work.calls)
        done = _wait_seed(client, task_ids, timeout=work.timeout)
        wall = time.monotonic() - started
        new_conns = connections_accepted(client) - accepted_before
        worker_cpu = tree_cpu_seconds(worker.pid) - cpu_before
        client_cpu = time.process_time() - client_before
        machine_busy = busy_percent(machine_before, machine_ticks())
    finally:
        worker.stop()
        producer_app.close()
        client.close()
    ok = sum(
        1
        for meta in done.values()
        if meta["status"] == "SUCCESS" and meta["result"]["content"] == work.expected
    )
    return Outcome(
        system=system,
        setup=f"{pool} x{concurrency}, no relay (polled)",
        calls=work.calls,
        tokens=work.tokens,
        wall=wall,
        worker_cpu=worker_cpu,
        client_cpu=client_cpu,
        machine_busy=machine_busy,
        failed=sum(1 for meta in done.values() if meta["status"] != "SUCCESS"),
        content_ok=ok,
        new_conns=new_conns,
        peer=system if concurrency == default_concurrency else f"{system} x{concurrency}",
    )


# --------------------------------------------------------------------------- ours


@dataclass
class _Stream:
    """What one SSE client of ours saw."""

    content: str = ""
    chunks: int = 0
    terminal: str | None = None
    refused: int = 0
    dropped: int = 0
    why: list[str] = field(default_factory=list)  # what refused or dropped it
    ended: float = 0.0


async def _read_stream(base_url: str, task_id: str) -> tuple[str, int, str]:
    """(content, chunk events, terminal event type) of one task's stream, read from its start."""
    content, chunks = "", 0
    async for kind, data in raw_sse(base_url, events_path(task_id), ALICE):
        if kind == "chunk":
            chunks += 1
            content += orjson.loads(data)["text"]
        elif kind == "reset":
            content = orjson.loads(data)["content"]
        elif kind in TERMINAL:
            return content, chunks, kind
    raise StreamDroppedError(f"stream of {task_id} closed without a terminal event")


async def _request(
    pool: asyncio.Queue[RawHTTPConnection], method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """One request over one of the pool's keep-alive connections."""
    connection = await pool.get()
    try:
        return await connection.request(method, path, body)
    finally:
        pool.put_nowait(connection)


async def _poll(pool: asyncio.Queue[RawHTTPConnection], task_id: str, interval: float) -> _Stream:
    """A polling client's view of one task: its status read every ``interval`` s until final."""
    seen = _Stream()
    while True:
        await asyncio.sleep(interval)
        status, body = await _request(pool, "GET", f"/api/v1/agents/tasks/{task_id}")
        if status != 200:  # e.g. a 503 in a burst: counted, polled again
            seen.refused += 1
            seen.why.append(f"poll answered {status}: {body[:100]!r}")
            continue
        record = orjson.loads(body)
        if record["status"] in FINAL_STATUSES:
            seen.terminal = "result" if record["status"] == "completed" else record["status"]
            seen.content = (record.get("result") or {}).get("content", "")
            seen.ended = time.monotonic()
            return seen


async def _submit_and_read(
    pool: asyncio.Queue[RawHTTPConnection],
    stream_from: str,
    message: str,
    *,
    poll_interval: float | None = None,
) -> _Stream:
    """Submit one invocation, then read its stream (or poll its status, with
    ``poll_interval``) until it ends."""
    status, body = await _request(
        pool,
        "POST",
        "/api/v1/agents/simple_llm_agent/invoke-async",
        orjson.dumps({"message": message, "stream": poll_interval is None}),
    )
    if status != 202:
        raise RuntimeError(f"submit answered {status}: {body[:200]!r}")
    task_id = orjson.loads(body)["task_id"]
    if poll_interval is not None:
        return await _poll(pool, task_id, poll_interval)
    seen = _Stream()
    for attempt in range(4):
        try:
            seen.content, seen.chunks, seen.terminal = await _read_stream(stream_from, task_id)
        except StreamDroppedError as exc:  # the web closed it: read it again, count it
            seen.dropped += 1
            seen.why.append(str(exc))
            if attempt == 3:
                raise
        except (StreamRefusedError, ConnectionError, OSError) as exc:  # e.g. a 503 in a burst
            seen.refused += 1
            seen.why.append(f"{type(exc).__name__}: {exc}")
            if attempt == 3:
                raise RuntimeError(f"stream of {task_id}: {exc}") from exc
        else:
            seen.ended = time.monotonic()
            return seen
        await asyncio.sleep(0.5)
    return seen


async def _run_ours_clients(
    webs: Sequence[WebServer],
    work: Workload,
    *,
    submitters: int,
    cross: bool,
    calls: int,
    poll_interval: float | None = None,
) -> list[_Stream]:
    """Submit ``calls`` invocations (``submitters`` keep-alive connections per web process) and
    read each one's stream, from another web process than its own with ``cross``; with
    ``poll_interval``, poll each one's status instead, over the same connections."""
    pools: list[asyncio.Queue[RawHTTPConnection]] = []
    for web in webs:
        pool: asyncio.Queue[RawHTTPConnection] = asyncio.Queue()
        for _ in range(submitters):
            pool.put_nowait(RawHTTPConnection(web.base_url, ALICE))
        pools.append(pool)
    jobs = []
    for i in range(calls):
        stream_from = webs[(i + 1) % len(webs) if cross else i % len(webs)].base_url
        jobs.append(
            _submit_and_read(
                pools[i % len(webs)], stream_from, work.message, poll_interval=poll_interval
            )
        )
    try:
        return list(await asyncio.wait_for(asyncio.gather(*jobs), timeout=work.timeout))
    finally:
        for pool in pools:
            while not pool.empty():
                await pool.get_nowait().close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine on uvloop when it is installed (less client CPU)."""
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def run_ours(
    redis_url: str, llm_base_url: str, work: Workload, *, workers: int = 1, webs: int = 1,
    cross: bool = False, concurrency: int = 100, submitters: int = 50, system: str = "ours",
    profile: Path | None = None, profile_seconds: float = 10.0,
    extra_env: dict[str, str] | None = None, poll_interval: float | None = None,
) -> Outcome:  # fmt: skip
    """``workers`` worker processes and ``webs`` web processes; with ``cross``, each task's
    stream is read from another web process than the one it was submitted through. With
    ``profile``, py-spy samples the first worker (the thread holding the GIL) and the first web
    process while it runs: ``<profile>-worker.txt`` and ``<profile>-web.txt``. With
    ``poll_interval``, the clients poll each task's status instead of reading its stream."""
    started_procs: list[ManagedProcess] = []
    web_servers: list[WebServer] = []
    try:
        for _ in range(workers):
            started_procs.append(
                start_worker(
                    redis_url,
                    env={**worker_env(llm_base_url), **(extra_env or {})},
                    concurrency=concurrency,
                )
            )
        for _ in range(webs):
            web_servers.append(start_web(redis_url))
        if work.warmup:
            run_async(
                _run_ours_clients(
                    web_servers,
                    work,
                    submitters=submitters,
                    cross=cross,
                    calls=work.warmup,
                    poll_interval=poll_interval,
                )
            )
        worker_pids = [w.pid for w in started_procs]
        web_pids = [w.process.pid for w in web_servers]
        cpu_before = sum(cpu_seconds(p) for p in worker_pids)
        web_before = sum(cpu_seconds(p) for p in web_pids)
        client_before = time.process_time()
        admin = redis.Redis.from_url(redis_url)
        accepted_before = connections_accepted(admin)
        machine_before, started = machine_ticks(), time.monotonic()
        with contextlib.ExitStack() as spies:
            if profile is not None:
                for pid, what, gil in (
                    (worker_pids[0], "worker", True),
                    (web_pids[0], "web", False),
                ):
                    output = profile.with_name(f"{profile.name}-{what}.txt")
                    spies.enter_context(
                        py_spy(pid, seconds=profile_seconds, output=output, gil=gil)
                    )
            streams = run_async(
                _run_ours_clients(
                    web_servers,
                    work,
                    submitters=submitters,
                    cross=cross,
                    calls=work.calls,
                    poll_interval=poll_interval,
                )
            )
        wall = max(s.ended for s in streams) - started
        worker_cpu = sum(cpu_seconds(p) for p in worker_pids) - cpu_before
        web_cpu = sum(cpu_seconds(p) for p in web_pids) - web_before
        client_cpu = time.process_time() - client_before
        machine_busy = busy_percent(machine_before, machine_ticks())
        new_conns = connections_accepted(admin) - accepted_before
        admin.close()
    finally:
        web_errors = [e for web in web_servers for e in error_lines(web.process.output(tail=10**7))]
        for web in web_servers:
            web.stop()
        for process in started_procs:
            process.stop()
    setup = f"{workers} worker{'s' * (workers > 1)} (threads x{concurrency}), {webs} web"
    if cross:
        setup += ", streams read from the other web"
    if poll_interval is not None:
        setup += f", polled every {poll_interval:g} s"
    if extra_env:
        setup += ", " + " ".join(f"{k}={v}" for k, v in extra_env.items())
    return Outcome(
        system=system,
        setup=setup,
        calls=work.calls,
        tokens=work.tokens,
        wall=wall,
        worker_cpu=worker_cpu,
        web_cpu=web_cpu,
        client_cpu=client_cpu,
        machine_busy=machine_busy,
        failed=sum(1 for s in streams if s.terminal != "result"),
        content_ok=sum(1 for s in streams if s.content == work.expected),
        chunk_events=sum(s.chunks for s in streams),
        refused=sum(s.refused for s in streams),
        dropped=sum(s.dropped for s in streams),
        web_errors=web_errors,
        why=Counter(reason for s in streams for reason in s.why),
        new_conns=new_conns,
    )


# --------------------------------------------------------------------------- report


def print_stream_trouble(outcome: Outcome) -> None:
    """What went wrong on the way, if anything: refused or dropped streams, the web's errors."""
    if outcome.refused or outcome.dropped:
        print(
            f"#   streams refused (non-200, retried): {outcome.refused}; closed by the web before "
            f"their end (read again): {outcome.dropped}"
        )
        for reason, count in outcome.why.most_common(5):
            print(f"#     {count} x {reason}")
    for line in outcome.web_errors:
        print(f"#   web log: {line}")


def report(outcomes: Sequence[Outcome]) -> str:
    by_system = {o.peer: o for o in outcomes if o.peer}
    peers = list(by_system)
    headers = [
        "system", "setup", "calls", "wall s", "calls/s", *(f"x {p}" for p in peers),
        "worker CPU s", "CPU/token us", "web CPU s", "bench client CPU s", "failed",
        "content ok", "chunk events to SSE", "new Redis conns", "machine busy %",
    ]  # fmt: skip
    rows = []
    for o in outcomes:
        ratios = [o.rate / by_system[p].rate for p in peers]
        rows.append(
            [
                o.system, o.setup, o.calls, o.wall, o.rate, *(f"{r:.2f}x" for r in ratios),
                o.worker_cpu, o.cpu_per_token_us, o.web_cpu, o.client_cpu, o.failed,
                f"{o.content_ok}/{o.calls}", o.chunk_events if o.system.startswith("ours") else "-",
                o.new_conns, o.machine_busy,
            ]
        )  # fmt: skip
    return table(headers, rows)


def int_list(text: str) -> list[int]:
    """``"100,400"`` as ``[100, 400]``: positive integers, comma-separated."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def add_workload_args(
    parser: argparse.ArgumentParser, *, calls: int, several_concurrencies: bool = False
) -> None:
    parser.add_argument("--calls", type=int, default=calls, help="invocations submitted at once")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per LLM answer")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between tokens")
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured calls first")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per system, at most")
    parser.add_argument(
        "--submitters", type=int, default=50, help="concurrent POSTs while submitting (ours)"
    )
    if several_concurrencies:
        parser.add_argument(
            "--concurrency",
            type=int_list,
            default=[DEFAULT_CONCURRENCY],
            help="threads of ours' worker; several (100,400) run ours once for each",
        )
    else:
        parser.add_argument(
            "--concurrency",
            type=int,
            default=DEFAULT_CONCURRENCY,
            help="threads of each worker process (ours)",
        )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for ours' workers, e.g. PROGRESS_MIN_INTERVAL=5 (repeatable; the setting "
        "is shown in the set-up column)",
    )


def workload(args: argparse.Namespace) -> Workload:
    args.extra_env = dict(item.split("=", 1) for item in args.worker_env)
    return Workload(args.calls, args.tokens, args.delay, args.warmup, args.timeout)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="N streaming invocations at once: ours against the plain Celery recipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_workload_args(parser, calls=1000, several_concurrencies=True)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="which systems, in order")
    parser.add_argument(
        "--recipe-concurrency",
        type=int_list,
        default=[SEED_POOLS["seed-gevent"][1]],
        help="greenlets of the gevent recipe; several (100,200,400) run it once for each, "
        "each its own ratio column",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy ours' worker (GIL thread) and web while measured: PROFILE-worker.txt and "
        "PROFILE-web.txt (raw collapsed stacks; see bench.profile_summary)",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy duration")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="sse",
        help="ours' clients: read every stream (sse), or submit without streaming and poll "
        "each task's status (poll)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between polls (--client poll)"
    )
    args = parser.parse_args()
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.system_list) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {SYSTEMS}")
    return args


def runs(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    """(system, concurrency) in order: ours once per ``--concurrency``, the gevent recipe once
    per ``--recipe-concurrency``, prefork at its own (None)."""
    expanded: list[tuple[str, int | None]] = []
    for system in args.system_list:
        if system == "ours":
            expanded += [(system, n) for n in args.concurrency]
        elif system == "seed-gevent":
            expanded += [(system, n) for n in args.recipe_concurrency]
        else:
            expanded.append((system, None))
    return expanded


def main() -> None:
    args = parse_args()
    stop_on_sigterm()
    nofile = raise_open_file_limit(4 * args.calls + 1024)
    print(f"$ {command_line('bench.throughput')}")
    work = workload(args)
    outcomes: list[Outcome] = []
    with embedded_redis() as server, llm_server() as (llm, control):
        admin = redis.Redis.from_url(server.url)
        print(f"# {machine_summary(admin)}; open files {nofile}")
        admin.close()
        control.script(work.message, tokens=token_texts(work.tokens), delay=work.delay)
        for db, (system, concurrency) in enumerate(runs(args), start=1):
            url = redis_db_url(server.url, db)
            if system == "seed-gevent" and importlib.util.find_spec("gevent") is None:
                print("# seed-gevent skipped: gevent is not installed (pip install -e '.[bench]')")
                continue
            if system == "ours":
                outcome = run_ours(
                    url,
                    llm.base_url,
                    work,
                    concurrency=concurrency or DEFAULT_CONCURRENCY,
                    submitters=args.submitters,
                    profile=args.profile,
                    extra_env=args.extra_env,
                    profile_seconds=args.profile_seconds,
                    poll_interval=args.poll_interval if args.client == "poll" else None,
                )
            else:
                outcome = run_seed(system, url, llm.base_url, work, concurrency=concurrency)
            outcomes.append(outcome)
            print(
                f"# {system} ({outcome.setup}): {outcome.wall:.1f} s, {outcome.rate:.1f} calls/s, "
                f"{outcome.cpu_per_token_us:.0f} us/token; {load_average()}",
                flush=True,
            )
            print_stream_trouble(outcome)
    print(f"# finished; {load_average()}")
    print(
        f"# {work.calls} invocations submitted at once ({args.client} clients for ours), "
        f"{work.tokens} tokens "
        f"{work.delay:g} s apart; wall = first submission to last result"
    )
    print(report(outcomes))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this benchmark started has been stopped")
