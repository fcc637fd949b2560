"""The web's producer: JSON only, and no result backend (the web reads results itself).

Which names and queue it sends is the contract's (``contract.tasks``); the worker side checks it
registers and consumes the same (``tests/worker/test_celery_app.py``).
"""

from app.submission import create_producer


def test_the_producer_sends_json_and_keeps_no_result_backend() -> None:
    producer = create_producer(broker_url="redis://127.0.0.1:1/0")

    assert producer.conf.task_serializer == "json"
    assert producer.conf.accept_content == ["json"]
    assert producer.conf.result_backend is None
