"""A real ``redis-server`` that a test may crash and bring back: on a free port, with a data
directory of its own, and either an append-only file (``appendonly yes``, ``appendfsync
everysec``, as production runs it) or no persistence at all.

``kill()`` sends SIGKILL: no shutdown, and established connections are reset. What Redis had
written to its AOF survives (the kernel holds it; ``everysec`` loses its last second only when
the machine itself fails). ``start()`` again brings the server back on the same port, from its
AOF when it has one, empty when it has none. ``outage()`` does both around a block.

With ``tls=generate_tls(dir)`` (``teststack.tls``), the server listens for TLS only (``--port 0
--tls-port P``) with a server certificate signed by a CA the test generated, so ``rediss://`` runs
end to end; ``url`` is then ``rediss://`` and names the CA bundle (``ssl_ca_certs``) unless told
otherwise.

The session's shared Redis (``scripts.embedded_redis``) is never restarted: tests that restart a
server start their own with this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import quote

import redis

from scripts.embedded_redis import die_with_parent_hook, find_server_binary, free_port
from teststack.tls import TlsFiles

Persistence = Literal["aof", "none"]
LOG_NAME = "server.log"
READY_TIMEOUT = 15.0
POLL_INTERVAL = 0.02


def _last_until(deadline: float) -> None:
    """Let an outage the block has ended early go on until ``deadline`` (``time.monotonic``):
    its length is part of the scenario, not a wait for something."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


class RedisServer:
    """One ``redis-server`` child process on a fixed port, with a data directory that outlives
    the process (so a restart finds the AOF)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        persistence: Persistence = "aof",
        tls: TlsFiles | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.persistence: Persistence = persistence
        self.tls = tls
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._process: subprocess.Popen[bytes] | None = None
        #: When the server last answered PING after a start (``time.monotonic()``).
        self.ready_at = 0.0
        #: How many times the server was started.
        self.starts = 0

    # -- addresses -------------------------------------------------------------------------

    def url(self, db: int = 0, *, cert_reqs: str | None = None, ca_certs: bool = True) -> str:
        """``redis://host:port/db``; with TLS ``rediss://`` plus, unless ``ca_certs=False``, the
        CA bundle as ``ssl_ca_certs``, and ``ssl_cert_reqs`` when given (``required``,
        ``optional``, ``none``), the query parameters redis-py and kombu read."""
        if self.tls is None:
            return f"redis://{self.host}:{self.port}/{db}"
        query = []
        if ca_certs:
            query.append(f"ssl_ca_certs={quote(str(self.tls.ca_cert), safe='')}")
        if cert_reqs is not None:
            query.append(f"ssl_cert_reqs={cert_reqs}")
        suffix = f"?{'&'.join(query)}" if query else ""
        return f"rediss://{self.host}:{self.port}/{db}{suffix}"

    def client(self, db: int = 0, *, timeout: float = 2.0) -> redis.Redis:
        """A blocking client of this server (the caller closes it)."""
        ca_certs = None if self.tls is None else str(self.tls.ca_cert)
        return redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            ssl=ca_certs is not None,
            ssl_ca_certs=ca_certs,
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not started"
        return self._process.pid

    def _command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persistence == "aof"
            else ["--appendonly", "no"]
        )
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            listen = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca_cert),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        return [
            find_server_binary(),
            *listen,
            "--bind", self.host,
            "--save", "",
            *persistence,
            "--daemonize", "no",
            "--protected-mode", "no",
            "--dir", str(self.data_dir),
        ]  # fmt: skip

    def start(self, *, timeout: float = READY_TIMEOUT) -> RedisServer:
        """Start the server (again, after ``kill``) and wait until it answers PING; with AOF, a
        restart answers once the file is loaded."""
        if self.running:
            raise RuntimeError("the Redis server is already running")
        if self.persistence == "none":  # a server without persistence comes back empty
            for leftover in self.data_dir.glob("*.rdb"):
                leftover.unlink()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / LOG_NAME).open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                preexec_fn=die_with_parent_hook(),
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server did not answer in {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)
        self.ready_at = time.monotonic()
        return self

    def _answers(self) -> bool:
        client = self.client(timeout=0.5)
        try:
            info = client.info("server")
            return bool(info.get("process_id") == self.pid) and client.ping()
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last fsync; established connections are reset."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after 5 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @contextlib.contextmanager
    def outage(self, *, lasting: float = 0.0) -> Iterator[float]:
        """SIGKILL the server, run the block (it gets the time of the kill), then start it again
        on the same port, once the block is done and at least ``lasting`` seconds after the
        kill: how long Redis stays away is part of the scenario (a restart takes a couple of
        seconds), not a way to wait for something."""
        self.kill()
        killed_at = time.monotonic()
        try:
            yield killed_at
        finally:
            _last_until(killed_at + lasting)
            self.start()

    @contextlib.contextmanager
    def frozen(self, *, lasting: float = 0.0) -> Iterator[float]:
        """SIGSTOP the server, run the block, SIGCONT it once the block is done and at least
        ``lasting`` seconds after the stop: a Redis that stops answering without closing its
        connections, as a stalled host or a network partition looks to its clients."""
        os.kill(self.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            yield stopped_at
        finally:
            _last_until(stopped_at + lasting)
            os.kill(self.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def memory_full(self, *, lasting: float = 0.0) -> Iterator[float]:
        """Set ``maxmemory`` to half of what the server holds (``noeviction``), run the block,
        then lift the limit once the block is done and at least ``lasting`` seconds later:
        Redis answers, but refuses every write that could grow its memory (and every command
        inside ``MULTI``) the whole time, as a production Redis past its limit does. (A limit
        just above the memory in use would not do: what Redis frees after a command, its
        query buffer, would bring it back under the limit within a second.)"""
        client = self.client()
        try:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)
            filled_at = time.monotonic()
            try:
                yield filled_at
            finally:
                _last_until(filled_at + lasting)
                client.config_set("maxmemory", 0)
        finally:
            client.close()

    @contextlib.contextmanager
    def demoted(self, *, lasting: float = 0.0) -> Iterator[float]:
        """Make the server a replica (of a port nobody listens on, so it keeps its data), run
        the block, then make it a primary again once the block is done and at least ``lasting``
        seconds later: what clients of a primary see when a failover demotes it (``READONLY``
        to every write, ``UNBLOCKED`` to a blocking pop) until their address leads to a
        primary again."""
        client = self.client()
        try:
            client.replicaof("127.0.0.1", str(free_port()))
            demoted_at = time.monotonic()
            try:
                yield demoted_at
            finally:
                _last_until(demoted_at + lasting)
                client.replicaof("NO", "ONE")
        finally:
            client.close()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.data_dir / LOG_NAME).read_text(errors="replace")[-chars:]
        except OSError:
            return "<no server log>"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
