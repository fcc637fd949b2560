"""Child processes of the test run: started with an environment, logged to a file, awaited on a
condition (never a fixed sleep), and always stopped, even when the test run itself is killed.

``ManagedProcess`` is the one place that knows how; the fixtures for the Celery worker, uvicorn
and the loopback LLM server build on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from scripts.embedded_redis import die_with_parent_hook

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLL_INTERVAL = 0.05


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = POLL_INTERVAL,
    message: str | Callable[[], str] = "condition not met",
) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"after {timeout:g} s: {text}")
        time.sleep(interval)


class ManagedProcess:
    """One child process with its output captured in a temporary log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = PROJECT_ROOT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not started"
        return self.process.pid

    def start(self) -> ManagedProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent_hook(),
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self, *, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def wait_until(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Wait for ``condition``; fail early (with the log) if the process exits first."""

        def ready_or_dead() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while waiting for {what}:\n{self.output()}")
            return condition()

        wait_for(
            ready_or_dead,
            timeout=timeout,
            message=lambda: f"{self.name}: {what}\n{self.output()}",
        )

    def wait_for_output(self, text: str, *, timeout: float) -> None:
        self.wait_until(lambda: text in self.output(tail=10**7), timeout=timeout, what=repr(text))

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signum)

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; idempotent."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.log_path.unlink(missing_ok=True)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in this process's environment (which every child started inherits), and
    put back what was there before on leaving."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
