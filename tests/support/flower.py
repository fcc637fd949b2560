"""Flower, started as the Procfile's ``flower:`` line starts it, on a free port of loopback."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from scripts.embedded_redis import free_port
from tests.support.processes import ManagedProcess, python_module
from tests.support.stack import base_env

FLOWER_READY_TIMEOUT = 30.0


class Flower:
    def __init__(self, redis_url: str, *, auth: tuple[str, str], env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        argv = python_module(
            "celery",
            "-A",
            "worker.celery_app",
            "flower",
            f"--port={self.port}",
            "--address=127.0.0.1",
            f"--basic-auth={auth[0]}:{auth[1]}",
        )
        self.process = ManagedProcess("flower", argv, env={**base_env(redis_url), **env})
        self.client = httpx.Client(base_url=self.base_url, auth=auth, timeout=15.0)

    def start(self) -> Flower:
        self.process.start()

        def answers() -> bool:
            try:
                return self.client.get("/healthcheck").status_code == 200
            except httpx.HTTPError:
                return False

        try:
            self.process.wait_until(answers, timeout=FLOWER_READY_TIMEOUT, what="/healthcheck")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.client.close()
        self.process.stop()
