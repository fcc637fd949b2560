"""The loopback LLM server as a child process: on a free port, waited on until it answers."""

from __future__ import annotations

from types import TracebackType

import httpx

from scripts.embedded_redis import free_port
from teststack.processes import ManagedProcess, python_module


class LLMServerProcess:
    """The loopback LLM server running as a child process of the test run."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = 15.0) -> None:
        self.port = port if port is not None else free_port()
        self._startup_timeout = startup_timeout
        self._process = ManagedProcess(
            "llm-server", python_module("teststack.llm.server", "--port", str(self.port))
        )

    @property
    def root_url(self) -> str:
        """Where the control API lives."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL to give an OpenAI-compatible client."""
        return f"{self.root_url}/v1"

    def start(self) -> None:
        """Start the server and wait until ``/_health`` answers."""
        self._process.start()
        try:
            self._process.wait_until(
                self._healthy, timeout=self._startup_timeout, what="/_health to answer"
            )
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.root_url}/_health", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        """What the server process printed so far."""
        return self._process.output()

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); idempotent."""
        self._process.stop(grace=5.0)

    def __enter__(self) -> LLMServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
