"""The broker transport's retries of writes a refusing Redis turns down (pure logic, doubles)."""

import threading

import pytest
from celery.worker import state as celery_worker_state
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from worker import redis_transport
from worker.redis_transport import raise_refusals_in_this_thread, until_taken


class Refusing:
    """A write refused ``times`` times with ``error``, then taken."""

    def __init__(self, error: Exception, times: int) -> None:
        self.error = error
        self.left = times
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error
        return "taken"


class Pool:
    def __init__(self) -> None:
        self.disconnects: list[bool] = []

    def disconnect(self, *, inuse_connections: bool) -> None:
        self.disconnects.append(inuse_connections)


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_transport, "pause", lambda attempt: 0.0)


def test_a_full_memory_is_waited_out() -> None:
    write, pool = Refusing(OutOfMemoryError("OOM"), 3), Pool()

    assert until_taken(write, what="acknowledging a delivery", pool=lambda: pool) == "taken"
    assert write.calls == 4
    assert pool.disconnects == []


def test_a_replica_is_waited_out_on_new_connections() -> None:
    write, pool = Refusing(ReadOnlyError("READONLY"), 2), Pool()

    assert until_taken(write, what="publishing a task", pool=lambda: pool) == "taken"
    assert pool.disconnects == [False, False]  # idle connections only


def test_other_errors_are_raised_at_once() -> None:
    write = Refusing(ResponseError("WRONGTYPE"), 1)

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        until_taken(write, what="publishing a task", pool=Pool)
    assert write.calls == 1


def test_a_thread_that_must_not_wait_gets_the_refusal_at_once() -> None:
    write = Refusing(OutOfMemoryError("OOM"), 5)
    raised: list[BaseException] = []

    def lease_thread() -> None:
        raise_refusals_in_this_thread()
        try:
            until_taken(write, what="returning a delivery", pool=Pool)
        except OutOfMemoryError as exc:
            raised.append(exc)

    thread = threading.Thread(target=lease_thread)
    thread.start()
    thread.join()

    assert len(raised) == 1
    assert write.calls == 1
    # Only that thread: this one still waits the refusals out.
    assert until_taken(Refusing(OutOfMemoryError("OOM"), 2), what="x", pool=Pool) == "taken"


def test_a_stop_request_ends_the_wait_after_the_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_transport, "PATIENCE_WHEN_STOPPING", 0.05)
    monkeypatch.setattr(celery_worker_state, "should_stop", 0)  # SIGTERM's warm stop
    write = Refusing(OutOfMemoryError("OOM"), 10**9)

    with pytest.raises(OutOfMemoryError):
        until_taken(write, what="recording a delivery", pool=Pool)
    assert write.calls > 1
