"""A web process that a test can kill and start again on the same address, as a crash and a
restart do to a developer's or a deployment's web process.

Its ``TOKEN_SECRET`` is fixed for its whole life (as ``make dev`` and production keep theirs), so
the stream tokens handed out before a restart still open their streams after it: what a client
sees across the restart is the relay's resume, not a refused token.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Mapping
from types import TracebackType

from scripts.embedded_redis import free_port
from teststack.stack import WebServer, start_web


class RestartableWeb:
    def __init__(self, redis_url: str, *, env: Mapping[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.env = {"TOKEN_SECRET": secrets.token_urlsafe(48), **(env or {})}
        self._web: WebServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def web(self) -> WebServer:
        assert self._web is not None, "the web process is not running"
        return self._web

    def start(self) -> WebServer:
        """Start it (again) on its port and wait until it is ready."""
        self._web = start_web(self.redis_url, env=self.env, port=self.port)
        return self._web

    def kill(self) -> None:
        """SIGKILL: no shutdown, every connection cut the way a crash cuts it."""
        web = self.web
        web.process.signal(signal.SIGKILL)
        assert web.process.process is not None
        web.process.process.wait(timeout=10)
        web.stop()
        self._web = None

    def restart(self, *, new_token_secret: bool = False) -> WebServer:
        """Kill it and start it again; with ``new_token_secret``, as a web process that draws a
        secret of its own would come back: refusing every token handed out before."""
        self.kill()
        if new_token_secret:
            self.env["TOKEN_SECRET"] = secrets.token_urlsafe(48)
        return self.start()

    def stop(self) -> None:
        if self._web is not None:
            self._web.stop()
            self._web = None

    def __enter__(self) -> RestartableWeb:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
