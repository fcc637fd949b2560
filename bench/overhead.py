"""Overhead of the service: time to first chunk through the whole path against calling the LLM
server directly, and ``POST invoke-async`` latency under many concurrent submitters.

1. **Time to first chunk.** ``--samples`` times, one at a time and alternating:
   - *direct*: an httpx client streams a chat completion from the loopback LLM server; the time
     from sending the request until the first content delta is parsed;
   - *through the service*: ``POST /api/v1/agents/simple_llm_agent/invoke-async`` (``"stream":
     true``), then ``GET`` the task's events with httpx + httpx-sse; the time from sending the
     POST until the first ``chunk`` event is parsed (split into POST -> 202 and 202 -> chunk).

   One worker (threads pool, the shipped defaults: shared loop, 5 ms coalescing window, rate
   limits off) and one web process. The LLM answers ``--tokens`` tokens ``--delay`` s apart (the
   first one after ``--delay`` too), so the overhead is the difference of the two.
2. **Submission under load.** ``--submitters`` concurrent clients (lean ones, one keep-alive
   connection each) POST invocations back to back, ``--posts`` requests in all; p50 / p99 / max
   latency, requests/s and the web's CPU per request. No worker runs meanwhile (the tasks
   queue), so the figure is the web's submit path alone.

    .venv/bin/python -m bench.overhead
    .venv/bin/python -m bench.overhead --samples 200 --posts 20000
    .venv/bin/python -m bench.overhead --samples 5 --posts 6000 --profile /tmp/submit.txt
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx
import orjson
import redis
from httpx_sse import aconnect_sse

from bench._common import (
    RawHTTPConnection,
    command_line,
    connections_by_name,
    cpu_seconds,
    embedded_redis,
    llm_server,
    load_average,
    machine_summary,
    percentile,
    py_spy,
    stop_on_sigterm,
    table,
    token_texts,
    web_connections,
    worker_env,
)
from teststack.sse import events_path
from teststack.stack import WebServer, headers_for, redis_db_url, start_web, start_worker

ALICE = headers_for("alice")
INVOKE = "/api/v1/agents/simple_llm_agent/invoke-async"


# --------------------------------------------------------------------------- time to first chunk


async def _direct(client: httpx.AsyncClient, llm_base_url: str, message: str) -> float:
    body = {
        "model": "loopback-model",
        "messages": [{"role": "user", "content": message}],
        "stream": True,
    }
    started = time.perf_counter()
    async with client.stream("POST", f"{llm_base_url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = orjson.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    elapsed = time.perf_counter() - started
                    break
        else:
            raise RuntimeError("the LLM answered no content")
    return elapsed


async def _through_service(
    client: httpx.AsyncClient, base_url: str, message: str
) -> tuple[float, float]:
    """(POST -> 202, POST -> first chunk), in seconds."""
    started = time.perf_counter()
    response = await client.post(
        f"{base_url}{INVOKE}", json={"message": message, "stream": True}, headers=ALICE
    )
    response.raise_for_status()
    accepted = time.perf_counter() - started
    url = f"{base_url}{events_path(response.json()['task_id'])}"
    async with aconnect_sse(client, "GET", url, headers=ALICE) as source:
        async for sse in source.aiter_sse():
            if sse.event == "chunk":
                first = time.perf_counter() - started
                break
            if sse.event in ("result", "error", "cancelled"):
                raise RuntimeError(f"the task ended with {sse.event} before any chunk")
        else:
            raise RuntimeError("the stream closed before any chunk")
    return accepted, first


async def _first_chunks(
    base_url: str, llm_base_url: str, message: str, samples: int
) -> tuple[list[float], list[float], list[float]]:
    direct, accepted, first = [], [], []
    async with httpx.AsyncClient(timeout=60.0) as client:
        for i in range(samples + 2):  # two warm-up rounds
            d = await _direct(client, llm_base_url, message)
            a, f = await _through_service(client, base_url, message)
            if i >= 2:
                direct.append(d)
                accepted.append(a)
                first.append(f)
            await asyncio.sleep(0.05)  # let the finished call's tail run out
    return direct, accepted, first


# --------------------------------------------------------------------------- submission


async def _submit_load(
    base_url: str, *, submitters: int, posts: int
) -> tuple[list[float], float, list[int]]:
    """Latencies of ``posts`` POSTs from ``submitters`` concurrent clients (one keep-alive
    connection each, lean: httpx would be the bottleneck here); wall s; non-202 codes."""
    latencies: list[float] = []
    bad: list[int] = []
    remaining = [posts]
    connections = [RawHTTPConnection(base_url, ALICE) for _ in range(submitters)]

    async def submitter(connection: RawHTTPConnection, n: int) -> None:
        body = orjson.dumps({"message": f"submit {n}", "stream": True})
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            status, _ = await connection.request("POST", INVOKE, body)
            latencies.append(time.perf_counter() - started)
            if status != 202:
                bad.append(status)

    try:
        # Open the connections first, so that the measured run does not include connecting.
        await asyncio.gather(*(c.request("GET", "/healthz") for c in connections))
        started = time.perf_counter()
        await asyncio.gather(*(submitter(c, n) for n, c in enumerate(connections)))
        wall = time.perf_counter() - started
    finally:
        for connection in connections:
            await connection.close()
    return latencies, wall, bad


# --------------------------------------------------------------------------- main


def _ms(values: list[float], fraction: float) -> float:
    return 1000 * percentile(sorted(values), fraction)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="Time to first chunk vs the LLM directly; POST latency under load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--samples", type=int, default=50, help="first-chunk samples per path")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per LLM answer")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds before each token")
    parser.add_argument("--submitters", type=int, default=200, help="concurrent submitters")
    parser.add_argument("--posts", type=int, default=4000, help="POSTs in all under load")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the web process during the submission load (the thread holding the GIL: "
        "Celery's publishing threads wait on sockets most of the time), raw collapsed stacks "
        "written to this file",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy duration")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    stop_on_sigterm()
    print(f"$ {command_line('bench.overhead')}")
    message = f"overhead: {args.tokens} tokens every {args.delay:g} s"
    with embedded_redis() as server, llm_server() as (llm, control):
        url = redis_db_url(server.url, 1)
        admin = redis.Redis.from_url(url)
        print(f"# {machine_summary(admin)}")
        control.script(message, tokens=token_texts(args.tokens), delay=args.delay)
        worker = start_worker(url, env=worker_env(llm.base_url))
        web: WebServer | None = None
        try:
            web = start_web(url)
            direct, accepted, first = asyncio.run(
                _first_chunks(web.base_url, llm.base_url, message, args.samples)
            )
            worker.stop()  # the submission load runs without a worker: the tasks queue
            web_cpu_before = cpu_seconds(web.process.pid)
            with py_spy(
                web.process.pid, seconds=args.profile_seconds, output=args.profile, gil=True
            ):
                latencies, wall, bad = asyncio.run(
                    _submit_load(web.base_url, submitters=args.submitters, posts=args.posts)
                )
            web_cpu = cpu_seconds(web.process.pid) - web_cpu_before
            _, web_conns = web_connections(connections_by_name(admin))
        finally:
            if web is not None:
                web.stop()
            worker.stop()
            admin.close()
    print(f"# finished; {load_average()}")
    print(
        f"# 1. time to first chunk, {args.samples} samples each, one at a time; the LLM sends "
        f"its first token after {1000 * args.delay:g} ms"
    )
    overhead = [f - d for f, d in zip(first, direct, strict=True)]
    rows = [
        ["LLM directly (httpx)", *(_ms(direct, q) for q in (0.5, 0.9, 0.99)), 1000 * max(direct)],
        [
            "through the service: POST -> 202",
            *(_ms(accepted, q) for q in (0.5, 0.9, 0.99)),
            1000 * max(accepted),
        ],
        [
            "through the service: POST -> first chunk (SSE)",
            *(_ms(first, q) for q in (0.5, 0.9, 0.99)),
            1000 * max(first),
        ],
        [
            "overhead (service - direct, per pair)",
            *(_ms(overhead, q) for q in (0.5, 0.9, 0.99)),
            1000 * max(overhead),
        ],
    ]
    print(table(["ms", "p50", "p90", "p99", "max"], rows))
    print(
        f"# 2. POST invoke-async under {args.submitters} concurrent submitters, {args.posts:,} "
        "requests, no worker running"
    )
    rows2 = [
        [
            args.submitters,
            len(latencies),
            _ms(latencies, 0.5),
            _ms(latencies, 0.99),
            1000 * max(latencies),
            statistics.mean(latencies) * 1000,
            len(latencies) / wall,
            1e6 * web_cpu / len(latencies),
            len(bad),
            web_conns,
        ]
    ]
    headers = [
        "submitters", "requests", "p50 ms", "p99 ms", "max ms", "mean ms", "requests/s",
        "web CPU us/request", "non-202", "web:* Redis conns (after)",
    ]  # fmt: skip
    print(table(headers, rows2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this benchmark started has been stopped")
