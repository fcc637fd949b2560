"""What every benchmark needs: its own processes (always stopped), CPU clocks, Redis connection
counts, the machine's description, and plain-text tables."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import redis

from scripts.embedded_redis import EmbeddedRedis
from storage.migrate import upgrade
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.postgres import create_database, drop_database
from teststack.processes import PROJECT_ROOT, environment

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WEB_CLIENT_PREFIX = "agent-service:web"
WEB_STREAM_CLIENT = "agent-service:web:stream"
WORKER_CLIENT = "agent-service:worker"
PY_SPY = PROJECT_ROOT / ".venv" / "bin" / "py-spy"


# --------------------------------------------------------------------------- the run itself


def command_line(module: str) -> str:
    """The command that is running, as one would type it from the project root."""
    return shlex.join([".venv/bin/python", "-m", module, *sys.argv[1:]])


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks stop the child processes."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def raise_open_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (children inherit it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


#: A PostgreSQL server to run the benchmark's database on instead of SQLite, as production does
#: (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``): a database of its own is created
#: there, migrated, and dropped at the end.
POSTGRES_ENV = "BENCH_POSTGRES_URL"


@contextlib.contextmanager
def private_database() -> Iterator[str]:
    """A migrated database of the benchmark's own, named in the environment every process the
    benchmark starts inherits (``DATABASE_URL``, with ``TEMP_DIR`` and ``AUDIT_ARCHIVE_URL``
    beside it): a SQLite file in a temporary directory, or a new database on the PostgreSQL
    server ``BENCH_POSTGRES_URL`` names. Never the project's ``./var`` (unmigrated there, every
    audit write would fail, and the figures would measure the error path)."""
    with tempfile.TemporaryDirectory(prefix="agent-service-bench-") as root:
        server = os.environ.get(POSTGRES_ENV)
        with (
            contextlib.nullcontext(f"sqlite+aiosqlite:///{root}/bench.db")
            if not server
            else _postgres_database(server)
        ) as url:
            upgrade(url)
            values = {
                "DATABASE_URL": url,
                "TEMP_DIR": f"{root}/temp",
                "AUDIT_ARCHIVE_URL": f"{root}/archive",
            }
            with environment(values):
                yield url


@contextlib.contextmanager
def _postgres_database(server: str) -> Iterator[str]:
    url = create_database(server, prefix="agent_service_bench", migrated=False)
    try:
        yield url
    finally:
        drop_database(server, url)


def database_kind() -> str:
    """Which database the benchmark's processes write to, for its header line."""
    return "PostgreSQL" if os.environ.get(POSTGRES_ENV) else "SQLite"


@contextlib.contextmanager
def embedded_redis() -> Iterator[EmbeddedRedis]:
    """A private Redis on a free loopback port (never the machine's 6379), and a private
    database (``private_database``) for the processes the benchmark starts."""
    server = EmbeddedRedis()
    server.start()
    try:
        with private_database():
            yield server
    finally:
        server.stop()


@contextlib.contextmanager
def llm_server() -> Iterator[tuple[LLMServerProcess, LLMControl]]:
    """The loopback OpenAI-compatible server, in its own process, and its control client."""
    server = LLMServerProcess()
    server.start()
    control = LLMControl(server.base_url)
    try:
        yield server, control
    finally:
        control.close()
        server.stop()


def worker_env(
    llm_base_url: str, *, window: float | None = None, mode: str | None = None
) -> dict[str, str]:
    """tests/e2e/conftest.py's ``_llm_worker_env`` with the rate limits off (a benchmark submits
    far more than 50 calls a minute), plus a coalescing window and loop mode when given."""
    env = {
        "LLM_BASE_URL": llm_base_url,
        "LLM_API_KEY": "test-llm-key",
        "LLM_MODEL": "loopback-model",
        "ECHO_WORD_DELAY": "0",
        "CELERY_TASK_DEFAULT_RETRY_DELAY": "0.1",
        "AGENT_TASK_RATE_LIMIT": "",
        "STREAMING_TASK_RATE_LIMIT": "",
    }
    if window is not None:
        env["STREAM_COALESCE_WINDOW"] = repr(window)
    if mode is not None:
        env["AGENT_EVENT_LOOP"] = mode
    return env


def token_texts(count: int) -> list[str]:
    """The tokens the loopback LLM is scripted to answer, ``count`` of them."""
    return [f" tok{i}" for i in range(count)]


# --------------------------------------------------------------------------- measurements


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads included (``/proc/<pid>/stat``)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # utime and stime: fields 14 and 15 of proc(5)
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (e.g. a prefork worker's pool processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live descendants (CPU of children that already
    exited is not counted, so measure while the pool is still up)."""
    total = 0.0
    for each in [pid, *children_of(pid)]:
        with contextlib.suppress(OSError):
            total += cpu_seconds(each)
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How busy the whole machine was between two ``machine_ticks``, in % of all its CPUs."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100 * busy / total if total else float("nan")


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_counts(client: redis.Redis) -> Counter[str]:
    """Commands Redis has run since it started, by name (``INFO commandstats``)."""
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def connections_accepted(client: redis.Redis) -> int:
    """Connections Redis has accepted since it started (``total_connections_received``)."""
    return int(client.info("stats")["total_connections_received"])


def connections_by_name(client: redis.Redis) -> Counter[str]:
    """How many connections Redis holds per client name (``CLIENT LIST``)."""
    return Counter(entry.get("name", "") for entry in client.client_list())


def web_connections(names: Counter[str]) -> tuple[int, int]:
    """(stream connections, all connections) of web processes."""
    stream = names[WEB_STREAM_CLIENT]
    total = sum(n for name, n in names.items() if name.startswith(WEB_CLIENT_PREFIX))
    return stream, total


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


@contextlib.contextmanager
def py_spy(pid: int, *, seconds: float, output: Path | None, gil: bool = False) -> Iterator[None]:
    """Sample ``pid`` with py-spy (raw collapsed stacks) while the body runs, when asked to;
    with ``gil``, only the thread holding the GIL (where a GIL-bound process spends its CPU)."""
    if output is None:
        yield
        return
    argv = [str(PY_SPY), "record", "-p", str(pid), "-d", str(max(1, round(seconds)))]
    argv += ["-r", "100", "-f", "raw", "-o", str(output), "--nonblocking", *(["--gil"] * gil)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        try:
            process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"py-spy profile of pid {pid}: {output} (python -m bench.profile_summary {output})")


# --------------------------------------------------------------------------- a lean SSE client


class StreamRefusedError(Exception):
    """The web answered a stream request with something else than 200."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class StreamDroppedError(ConnectionError):
    """The server closed a stream without ending it (no terminating chunk)."""


_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Timeout|Cancelled)\w*(:|$)")


def error_lines(output: str, *, limit: int = 5) -> list[str]:
    """What a process's log reports as errors, for a summary: the exception lines (those that
    end a traceback, e.g. ``redis.exceptions.ConnectionError: ...``) and ``ERROR`` lines, each
    distinct line once with how often it occurs, the most frequent first."""
    counts: Counter[str] = Counter()
    for line in output.splitlines():
        text = line.strip()
        if _EXCEPTION_LINE.match(text) or text.startswith("ERROR"):
            counts[text[:300]] += 1
    return [f"{n} x {text}" for text, n in counts.most_common(limit)]


async def raw_sse(
    base_url: str, path: str, headers: Mapping[str, str]
) -> AsyncIterator[tuple[str, bytes]]:
    """(event type, data) of each SSE event of ``GET path``, heartbeats left out.

    A lean reader (asyncio streams, HTTP/1.1 chunked, minimal SSE parsing), a few us per event
    instead of httpx-sse's tens, so that the clients leave the machine's CPU to the service.
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode())
        status = await reader.readline()
        if not status:
            raise StreamDroppedError("the server closed the connection before answering")
        response_head = (await reader.readuntil(b"\r\n\r\n")).lower()
        if b" 200 " not in status:
            lines = response_head.split(b"\r\n")
            length = next(
                (int(line[15:]) for line in lines if line[:15] == b"content-length:"),
                0,
            )
            body = await reader.readexactly(length) if length else b""
            raise StreamRefusedError(int(status.split()[1]), body.decode(errors="replace")[:200])
        if b"chunked" not in response_head:
            raise RuntimeError("expected a chunked response")
        pending = b""
        while size := int((await reader.readline()).strip() or b"-1", 16):
            if size < 0:
                raise StreamDroppedError("the server closed the stream before its end")
            pending += (await reader.readexactly(size + 2))[:-2]
            *frames, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
            for frame in frames:
                kind, data = "message", b""
                for line in frame.split(b"\n"):
                    if line.startswith(b"event: "):
                        kind = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if data:
                    yield kind, data
    finally:
        writer.close()


class RawHTTPConnection:
    """One keep-alive HTTP/1.1 connection, requests one at a time: a lean client for load.

    httpx's async client spends milliseconds of CPU per request once it holds hundreds of
    connections (measured: ~8 ms with 200), so on this 2-core machine it, not the service, would
    set the pace of a submission benchmark. This one costs tens of us per request.
    """

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        fixed = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; a JSON ``body`` is sent when given."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        extra = (
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            if body is not None
            else ""
        )
        self._writer.write(f"{method} {path} HTTP/1.1\r\n{self._head}{extra}\r\n".encode())
        if body is not None:
            self._writer.write(body)
        status_line = await self._reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers = (await self._reader.readuntil(b"\r\n\r\n")).lower()
        if b"transfer-encoding: chunked" in headers:
            payload = b""
            while size := int((await self._reader.readline()).strip(), 16):
                payload += (await self._reader.readexactly(size + 2))[:-2]
            await self._reader.readline()
        else:
            length = 0
            for line in headers.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            payload = await self._reader.readexactly(length)
        if b"connection: close" in headers:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None


# --------------------------------------------------------------------------- reporting


def machine_summary(client: redis.Redis) -> str:
    server = client.info("server")
    name = "valkey" if "valkey_version" in server else "redis"
    version = server.get("valkey_version") or server.get("redis_version")
    return (
        f"{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
        f"{name} {version}, {database_kind()}; {source_version()}; {load_average()}; "
        f"{busy_before_start()}"
    )


def source_version() -> str:
    """The project's commit, and whether the working tree differs from it (bench/ aside)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line for line in git("status", "--porcelain").splitlines() if "bench/" not in line]
    return f"commit {commit}" + (f" + {len(changed)} changed files" if changed else "")


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def busy_before_start(seconds: float = 1.0) -> str:
    """How busy the machine is before the benchmark starts anything (others' work skews it)."""
    before = machine_ticks()
    time.sleep(seconds)
    return f"machine {busy_percent(before, machine_ticks()):.0f}% busy before start"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, columns padded so it reads in a terminal too."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
