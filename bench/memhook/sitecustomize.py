"""Loaded by a process started with this folder on ``PYTHONPATH`` (``bench.fanout --tracemalloc``):
where the memory goes, without touching the project's code.

With ``BENCH_TRACEMALLOC=<file>`` set, ``tracemalloc`` traces from start-up. The first SIGUSR1
takes a baseline snapshot; each later one writes to ``<file>`` the allocations grown since the
baseline, by source line and by file, largest first, then the call stacks
(``BENCH_TRACEMALLOC_DEPTH`` frames, default 1) of the largest.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from types import FrameType

_OUTPUT = os.environ.get("BENCH_TRACEMALLOC")
_baseline: list[tracemalloc.Snapshot] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if not _baseline:
        _baseline.append(snapshot)
        return
    assert _OUTPUT is not None
    with open(_OUTPUT, "w") as out:
        for key in ("lineno", "filename", "traceback"):
            stats = snapshot.compare_to(_baseline[0], key)
            grown = sum(s.size_diff for s in stats)
            out.write(f"# by {key}: {grown / 2**20:.1f} MiB traced growth\n")
            for stat in stats[: 15 if key == "traceback" else 40]:
                size, count = stat.size_diff / 1024, stat.count_diff
                frames = [f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback)]
                out.write(f"{size:10.1f} KiB {count:+8d}  {' <- '.join(frames)}\n")
            out.write("\n")


if _OUTPUT:
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_DEPTH", "1")))
    signal.signal(signal.SIGUSR1, _on_signal)
