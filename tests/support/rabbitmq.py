"""A RabbitMQ virtual host of the test run's own, on the server the machine runs (guest/guest on
127.0.0.1:5672), created when the run starts and deleted when it ends: the run never touches
another vhost. ``rabbitmqctl`` manages it (the tests run as a user that may: root in CI)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

HOST, PORT = "127.0.0.1", 5672
USER = PASSWORD = "guest"


def unavailable() -> str | None:
    """Why RabbitMQ cannot be used here, or None when it can."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        return f"no RabbitMQ answers on {HOST}:{PORT} ({exc})"
    return None


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def private_vhost() -> Iterator[str]:
    """An ``amqp://`` URL of a new vhost, deleted afterwards."""
    vhost = f"agent_service_test_{uuid.uuid4().hex[:12]}"
    _ctl("add_vhost", vhost)
    try:
        _ctl("set_permissions", "-p", vhost, USER, ".*", ".*", ".*")
        yield f"amqp://{USER}:{PASSWORD}@{HOST}:{PORT}/{vhost}"
    finally:
        _ctl("delete_vhost", vhost)
