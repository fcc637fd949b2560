"""Loaded by every process started with this folder on ``PYTHONPATH``: logs the garbage
collector's pauses of the web process, without touching the project's code.

With ``BENCH_GC_LOG=<folder>`` set, a uvicorn process appends one line per full collection, and
per younger one over 5 ms, to ``<folder>/gc-<pid>.log``: wall time, generation, pause in ms,
objects freed. Every open stream waits out each pause, so they show in the relay's p99::

    BENCH_GC_LOG=/tmp PYTHONPATH=bench/gchook .venv/bin/python -m bench.relay_latency \\
        --client raw --clients 1000
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

_FOLDER = os.environ.get("BENCH_GC_LOG")


def _is_web() -> bool:
    return b"uvicorn" in Path("/proc/self/cmdline").read_bytes()


if _FOLDER and _is_web():
    _log = Path(_FOLDER, f"gc-{os.getpid()}.log").open("a", buffering=1)  # noqa: SIM115
    _started = [0.0]

    def _on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - _started[0]) * 1000
        if info["generation"] == 2 or pause_ms > 5:
            _log.write(
                f"{time.time():.3f} gen{info['generation']} {pause_ms:.1f} ms "
                f"collected={info['collected']}\n"
            )

    gc.callbacks.append(_on_collection)
