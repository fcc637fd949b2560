"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the time goes.

Prints the share of samples spent (self) in each top-level package, the frames with the most
self time, and the project's own frames (``app``, ``streaming``, ``worker``) by inclusive time,
i.e. the share of samples in which the frame was anywhere on the stack.

    .venv/bin/python -m bench.profile_summary /tmp/web.txt [--top 15]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from bench._common import table

PROJECT_PACKAGES = ("app", "streaming", "worker")
#: Leaf frames of threads that only wait; py-spy sometimes counts them as active (a thread that
#: wakes up to fight for the GIL), so they are left out of the shares and counted apart.
WAITING = {
    "Condition.wait (threading.py)",
    "EpollSelector.select (selectors.py)",
    "_epoll.poll (kombu/utils/eventio.py)",
}
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    """(frames root first, samples) per line of a collapsed-stacks file."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_key(frame: str) -> str:
    """``func (file)``: the frame without its line number."""
    match = _FRAME.match(frame)
    return f"{match['func']} ({match['file']})" if match else frame


def package_of(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    if file.startswith("<"):
        return file
    parts = file.split("/")
    for index, part in enumerate(parts):  # absolute paths: the part after site-packages
        if part == "site-packages" and index + 1 < len(parts):
            return parts[index + 1]
    return parts[0] if len(parts) > 1 else file.removesuffix(".py")


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    waiting = sum(count for frames, count in stacks if frame_key(frames[-1]) in WAITING)
    stacks = [(frames, count) for frames, count in stacks if frame_key(frames[-1]) not in WAITING]
    total = sum(count for _, count in stacks) or 1
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    for frames, count in stacks:
        for key in {frame_key(f) for f in frames}:
            inclusive[key] += count
        self_time[frame_key(frames[-1])] += count
        by_package[package_of(frames[-1])] += count

    def share(n: int) -> str:
        return f"{100 * n / total:.1f}%"

    project = [
        (key, n) for key, n in inclusive.most_common() if package_of(key) in PROJECT_PACKAGES
    ]
    return "\n\n".join(
        [
            f"{total} samples of running threads ({waiting} more only waiting, left out)",
            "Self time by package\n"
            + table(["package", "self"], [(p, share(n)) for p, n in by_package.most_common(top)]),
            "Top frames by self time\n"
            + table(["frame", "self"], [(k, share(n)) for k, n in self_time.most_common(top)]),
            "Project frames by inclusive time\n"
            + table(["frame", "inclusive"], [(k, share(n)) for k, n in project[:top]]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__)
    parser.add_argument("profile", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarise(parse(args.profile), args.top))


if __name__ == "__main__":
    main()
