"""The green pools are refused with one line naming the pool to use; the others pass."""

import pytest

from worker.pool_guard import EXIT_STATUS, UnsupportedPoolError, green_pool_name, refuse_green_pool


class FakeGeventPool:
    pass


FakeGeventPool.__module__ = "celery.concurrency.gevent"


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        ("gevent", "gevent"),
        ("celery.concurrency.eventlet:TaskPool", "eventlet"),
        (FakeGeventPool, "gevent"),
        ("threads", None),
        ("celery.concurrency.thread:TaskPool", None),
        ("prefork", None),
        ("solo", None),
        ("", None),
    ],
)
def test_green_pool_name_names_only_green_pools(pool: object, expected: str | None) -> None:
    assert green_pool_name(pool) == expected


def test_refusal_exits_with_one_line_naming_the_threads_pool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(UnsupportedPoolError) as refused:
        refuse_green_pool("celery.concurrency.gevent:TaskPool")

    assert refused.value.code == EXIT_STATUS
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "--pool threads" in lines[0]
    assert "gevent" in lines[0]


def test_threads_and_prefork_pools_start() -> None:
    refuse_green_pool("celery.concurrency.thread:TaskPool")
    refuse_green_pool("celery.concurrency.prefork:TaskPool")
