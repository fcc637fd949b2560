"""Scale-out: the throughput of 1 against 2 worker processes, and 2 web processes each serving the
streams of tasks submitted through the other.

The workload and the measurement are ``bench.throughput``'s (``ours``): N streaming invocations
submitted at once through the REST API, an SSE client reading every event of each stream, wall
time from the first submission to the last terminal event. The set-ups, in one run, each on fresh
processes and a Redis database of its own, with the same Redis server and LLM server:

- ``1 worker, 1 web``;
- ``2 workers, 1 web``: the second worker process takes tasks from the same queue;
- ``2 workers, 2 webs, cross``: invocations are submitted alternately through web A and web B,
  and each task's stream is read from the other web process than the one it was submitted
  through (the hubs share nothing but Redis).

The machine has 2 cores that the LLM server, Redis, the web(s) and the clients share with the
workers, so read the speed-up against the "machine busy" column.

    .venv/bin/python -m bench.scale                        # N = 1,000
    .venv/bin/python -m bench.scale --calls 200
"""

from __future__ import annotations

import argparse
import sys
from typing import TypedDict

import redis

from bench._common import (
    command_line,
    embedded_redis,
    llm_server,
    load_average,
    machine_summary,
    raise_open_file_limit,
    stop_on_sigterm,
    table,
    token_texts,
)
from bench.throughput import (
    Outcome,
    add_workload_args,
    print_stream_trouble,
    run_ours,
    workload,
)
from teststack.stack import redis_db_url


class SetUp(TypedDict):
    workers: int
    webs: int
    cross: bool


SETUPS: dict[str, SetUp] = {
    "1w1web": {"workers": 1, "webs": 1, "cross": False},
    "2w1web": {"workers": 2, "webs": 1, "cross": False},
    "2w2web-cross": {"workers": 2, "webs": 2, "cross": True},
}


def _report(outcomes: list[Outcome]) -> str:
    base = outcomes[0].rate if outcomes else float("nan")
    headers = [
        "set-up", "calls", "wall s", "calls/s", "x first row", "worker CPU s", "CPU/token us",
        "web CPU s", "failed", "content ok", "chunk events to SSE", "refused streams",
        "dropped streams", "new Redis conns", "machine busy %",
    ]  # fmt: skip
    rows = [
        [
            o.setup, o.calls, o.wall, o.rate, f"{o.rate / base:.2f}x", o.worker_cpu,
            o.cpu_per_token_us, o.web_cpu, o.failed, f"{o.content_ok}/{o.calls}", o.chunk_events,
            o.refused, o.dropped, o.new_conns, o.machine_busy,
        ]
        for o in outcomes
    ]  # fmt: skip
    return table(headers, rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="1 vs 2 worker processes; 2 web processes serving each other's streams.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_workload_args(parser, calls=1000)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"from {', '.join(SETUPS)}")
    args = parser.parse_args()
    args.setup_list = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(args.setup_list) - set(SETUPS)
    if unknown:
        parser.error(f"unknown set-ups {sorted(unknown)}")
    return args


def main() -> None:
    args = parse_args()
    stop_on_sigterm()
    nofile = raise_open_file_limit(4 * args.calls + 1024)
    print(f"$ {command_line('bench.scale')}")
    work = workload(args)
    outcomes: list[Outcome] = []
    with embedded_redis() as server, llm_server() as (llm, control):
        admin = redis.Redis.from_url(server.url)
        print(f"# {machine_summary(admin)}; open files {nofile}")
        admin.close()
        control.script(work.message, tokens=token_texts(work.tokens), delay=work.delay)
        for db, name in enumerate(args.setup_list, start=1):
            outcome = run_ours(
                redis_db_url(server.url, db), llm.base_url, work, concurrency=args.concurrency,
                submitters=args.submitters, system=name, extra_env=args.extra_env,
                **SETUPS[name],
            )  # fmt: skip
            outcomes.append(outcome)
            print(
                f"# {outcome.setup}: {outcome.wall:.1f} s, {outcome.rate:.1f} calls/s; "
                f"{load_average()}",
                flush=True,
            )
            print_stream_trouble(outcome)
    print(f"# finished; {load_average()}")
    print(
        f"# {work.calls} streaming invocations submitted at once, {work.tokens} tokens "
        f"{work.delay:g} s apart, every stream read by an SSE client"
    )
    print(_report(outcomes))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this benchmark started has been stopped")
