"""Flower, started by the Procfile's own ``flower:`` line, on a free port of loopback."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from scripts.embedded_redis import free_port
from teststack.processes import PROJECT_ROOT, ManagedProcess
from teststack.stack import base_env

FLOWER_READY_TIMEOUT = 30.0


def procfile_flower_command() -> str:
    text = (PROJECT_ROOT / "Procfile").read_text()
    match = re.search(r"^flower:\s*(.+)$", text, re.MULTILINE)
    assert match is not None, "the Procfile has no flower process"
    return match[1]


def procfile_flower(redis_url: str, *, env: Mapping[str, str]) -> ManagedProcess:
    """The Procfile's flower line as honcho or a PaaS runs it (``sh -c``), not yet started."""
    return ManagedProcess(
        "flower",
        ["sh", "-c", f"exec {procfile_flower_command()}"],
        env={
            **base_env(redis_url),
            # The Procfile names bare commands: this interpreter's first, as `make dev` does.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            **env,
        },
    )


class Flower:
    def __init__(self, redis_url: str, *, auth: tuple[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = procfile_flower(
            redis_url,
            env={
                "FLOWER_PORT": str(self.port),
                "FLOWER_ADDRESS": "127.0.0.1",
                "FLOWER_BASIC_AUTH": f"{auth[0]}:{auth[1]}",
            },
        )
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
