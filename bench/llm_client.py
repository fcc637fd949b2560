"""CPU of the built-in LLM client per call and per streamed token: the aiohttp client
(``worker/agents/openai_client.py``) against the httpx + httpx-sse client it replaced
(``bench/_httpx_llm_client.py``), in one process, on one event loop, A/B alternating. A third
client, "httpx, drained", is the old one reading each body to its end after ``[DONE]``: the old
client stops at ``[DONE]``, so httpcore closes the connection and every call opens a new one;
the third shows how much of the difference is that, and how much the library.

What is measured: this process's CPU (``time.process_time``: every thread) while ``--concurrency``
calls at a time stream ``--calls`` completions from the loopback LLM server (its own process, not
counted), each client on its own connection pool, the way the worker's shared loop runs them
(uvloop unless ``--no-uvloop``; the httpx client built by ``open_http_client``, the aiohttp
session by ``open_llm_session``). Two workloads per client and round:

- long: ``--tokens`` tokens ``--delay`` s apart (each token its own read, as from a real LLM);
- short: one token, for what a call costs whatever its length.

Per client, the medians over ``--rounds`` rounds (each round runs the clients in turn, the next
round in the reverse order, after one unmeasured warm-up round) of: CPU per call of the short
workload, CPU per token of the long one all-in (CPU / tokens), and per token at the margin
((long - short per call) / (tokens - 1)). Every call's text is checked, so a client that
skipped work would fail the run.

    .venv/bin/python -m bench.llm_client
    .venv/bin/python -m bench.llm_client --calls 400 --tokens 50 --delay 0.02 --concurrency 100
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version

import anyio

from bench._common import (
    busy_before_start,
    command_line,
    cpu_model,
    llm_server,
    load_average,
    source_version,
    stop_on_sigterm,
    table,
    token_texts,
)
from bench._httpx_llm_client import HttpxOpenAIClient, HttpxOpenAIClientDrained
from worker.agents.base import ChatMessage
from worker.agents.llm_session import KEEPALIVE_SECONDS, open_llm_session
from worker.agents.openai_client import ChatCompletion, OpenAICompatibleClient
from worker.runtime.http_client import create_tls_context, open_http_client
from worker.settings import WorkerSettings

LONG_KEY = "bench llm client long"
SHORT_KEY = "bench llm client short"

StreamChat = Callable[..., Awaitable[ChatCompletion]]


@dataclass(frozen=True)
class Workload:
    key: str
    tokens: int


@dataclass
class Sample:
    client: str
    workload: str
    calls: int
    tokens: int
    cpu: float
    wall: float


@contextlib.asynccontextmanager
async def httpx_client(base_url: str, settings: WorkerSettings) -> AsyncIterator[StreamChat]:
    async with open_http_client(settings, shared=True, tls=create_tls_context()) as http:
        client = HttpxOpenAIClient(http, base_url=base_url, api_key="bench", model="bench-model")
        yield client.stream_chat


@contextlib.asynccontextmanager
async def aiohttp_client(base_url: str, settings: WorkerSettings) -> AsyncIterator[StreamChat]:
    async with open_llm_session(tls=create_tls_context(), keepalive=KEEPALIVE_SECONDS) as session:
        client = OpenAICompatibleClient(
            session,
            base_url=base_url,
            api_key="bench",
            model="bench-model",
            connect_timeout=settings.llm_connect_timeout,
            read_timeout=settings.llm_read_timeout,
        )
        yield client.stream_chat


@contextlib.asynccontextmanager
async def httpx_drained_client(
    base_url: str, settings: WorkerSettings
) -> AsyncIterator[StreamChat]:
    async with open_http_client(settings, shared=True, tls=create_tls_context()) as http:
        client = HttpxOpenAIClientDrained(
            http, base_url=base_url, api_key="bench", model="bench-model"
        )
        yield client.stream_chat


CLIENTS = {
    "httpx": httpx_client,
    "httpx, drained": httpx_drained_client,
    "aiohttp": aiohttp_client,
}


async def stream_many(
    stream_chat: StreamChat, workload: Workload, *, calls: int, concurrency: int
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``calls`` completions, ``concurrency`` at a time."""
    messages = [ChatMessage(role="user", content=workload.key)]
    expected = "".join(token_texts(workload.tokens))
    remaining = calls

    async def sink(text: str, /) -> None:
        pass

    async def one_after_another() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            completion = await stream_chat(messages, on_chunk=sink)
            if completion.content != expected:
                raise RuntimeError(f"a call streamed {completion.content[:80]!r}")

    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(min(concurrency, calls)):
            group.start_soon(one_after_another)
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(args: argparse.Namespace, base_url: str) -> list[Sample]:
    settings = WorkerSettings(_env_file=None, worker_concurrency=args.concurrency)
    workloads = [Workload(LONG_KEY, args.tokens), Workload(SHORT_KEY, 1)]
    samples: list[Sample] = []
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(factory(base_url, settings))
            for name, factory in CLIENTS.items()
        }
        names = list(clients)
        for round_ in range(args.rounds + 1):
            order = names if round_ % 2 else names[::-1]
            for name in order:
                for workload in workloads:
                    cpu, wall = await stream_many(
                        clients[name], workload, calls=args.calls, concurrency=args.concurrency
                    )
                    if round_ == 0:
                        continue  # warm-up: connections opened, code paths run once
                    samples.append(
                        Sample(name, workload.key, args.calls, workload.tokens, cpu, wall)
                    )
                    print(
                        f"round {round_} {name:>14} {workload.tokens:>3} tokens: "
                        f"{cpu * 1e3:7.1f} ms CPU in {wall:5.2f} s",
                        flush=True,
                    )
    return samples


def report(samples: list[Sample], args: argparse.Namespace) -> str:
    rows = []
    for name in CLIENTS:
        long = [s for s in samples if s.client == name and s.workload == LONG_KEY]
        short = [s for s in samples if s.client == name and s.workload == SHORT_KEY]
        per_call_short = statistics.median(s.cpu / s.calls for s in short)
        per_call_long = statistics.median(s.cpu / s.calls for s in long)
        per_token = statistics.median(s.cpu / (s.calls * s.tokens) for s in long)
        marginal = (per_call_long - per_call_short) / max(1, args.tokens - 1)
        spread = [s.cpu / (s.calls * s.tokens) * 1e6 for s in long]
        rows.append(
            [
                name,
                per_call_short * 1e6,
                per_call_long * 1e6,
                per_token * 1e6,
                marginal * 1e6,
                f"{min(spread):.1f}-{max(spread):.1f}",
            ]
        )
    headers = [
        "client",
        "CPU/call, 1 token (us)",
        f"CPU/call, {args.tokens} tokens (us)",
        "CPU/token all-in (us)",
        "CPU/token marginal (us)",
        "all-in range (us)",
    ]
    return table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_client", description=__doc__)
    parser.add_argument("--calls", type=int, default=200, help="completions per run")
    parser.add_argument("--tokens", type=int, default=50, help="tokens of the long completion")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between tokens")
    parser.add_argument("--concurrency", type=int, default=50, help="calls streaming at a time")
    parser.add_argument("--rounds", type=int, default=5, help="measured A/B rounds")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop")
    args = parser.parse_args(argv)
    stop_on_sigterm()

    print(command_line("bench.llm_client"))
    print(
        f"{cpu_model()}, Python {sys.version.split()[0]}, aiohttp {version('aiohttp')}, "
        f"httpx {version('httpx')}, httpx-sse {version('httpx-sse')}, "
        f"{'asyncio' if args.no_uvloop else 'uvloop ' + version('uvloop')}; {source_version()}; "
        f"{load_average()}; {busy_before_start()}"
    )
    with llm_server() as (server, control):
        control.script(LONG_KEY, tokens=token_texts(args.tokens), delay=args.delay)
        control.script(SHORT_KEY, tokens=token_texts(1))
        samples = anyio.run(
            measure, args, server.base_url, backend_options={"use_uvloop": not args.no_uvloop}
        )
    print()
    print(report(samples, args))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
