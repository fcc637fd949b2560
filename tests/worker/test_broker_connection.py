"""The worker's broker connection reconnects sooner than kombu's defaults (2 s, 4 s, ...)."""

import pytest
from kombu.exceptions import OperationalError

from scripts.embedded_redis import free_port
from worker.broker_connection import BrokerConnection
from worker.celery_app import celery_app


def test_the_worker_app_opens_broker_connections() -> None:
    connection = celery_app.connection_for_read()
    try:
        assert isinstance(connection, BrokerConnection)
    finally:
        connection.release()


def test_reconnect_pauses_start_short() -> None:
    pauses: list[float] = []
    connection = BrokerConnection(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    try:
        with pytest.raises(OperationalError):
            connection.ensure_connection(lambda _exc, pause: pauses.append(pause), max_retries=3)
    finally:
        connection.release()

    assert pauses == [0.25, 0.5, 0.75]
