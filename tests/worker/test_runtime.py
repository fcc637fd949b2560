"""Choosing and running the event loop a task's async work runs on."""

import pytest

from worker.errors import AgentTimeoutError
from worker.runtime import (
    LoopResources,
    PerTaskRuntime,
    SharedLoopRuntime,
    resolve_mode,
)
from worker.settings import WorkerSettings


@pytest.mark.parametrize(
    ("setting", "pool", "mode"),
    [
        ("auto", "threads", "shared"),
        ("auto", "celery.concurrency.thread", "shared"),
        ("auto", "prefork", "per-task"),
        ("auto", "solo", "per-task"),
        ("auto", "", "per-task"),
        ("per-task", "threads", "per-task"),
        ("shared", "prefork", "shared"),
    ],
)
def test_resolve_mode_follows_the_setting_then_the_pool(setting: str, pool: str, mode: str) -> None:
    assert resolve_mode(setting, pool) == mode


def _settings() -> WorkerSettings:
    return WorkerSettings(_env_file=None, redis_url="redis://127.0.0.1:1/0")  # type: ignore[call-arg]


async def _answer(resources: LoopResources) -> str:
    return "answer"


async def _forever(resources: LoopResources) -> str:
    import anyio

    await anyio.sleep_forever()
    return "never"


@pytest.mark.parametrize("runtime_cls", [PerTaskRuntime, SharedLoopRuntime])
def test_runtime_returns_the_call_result(runtime_cls: type) -> None:
    runtime = runtime_cls(_settings())
    try:
        assert runtime.run(_answer, time_limit=5) == "answer"
    finally:
        runtime.stop()


@pytest.mark.parametrize("runtime_cls", [PerTaskRuntime, SharedLoopRuntime])
def test_runtime_cancels_the_call_at_its_time_limit(runtime_cls: type) -> None:
    runtime = runtime_cls(_settings())
    try:
        with pytest.raises(AgentTimeoutError, match="time limit"):
            runtime.run(_forever, time_limit=0.05)
        assert runtime.run(_answer, time_limit=5) == "answer"
    finally:
        runtime.stop()


def test_shared_runtime_runs_calls_on_one_loop_and_stops() -> None:
    import threading

    runtime = SharedLoopRuntime(_settings())
    seen: set[int] = set()

    async def where(resources: LoopResources) -> int:
        seen.add(threading.get_ident())
        return threading.get_ident()

    try:
        loop_thread = runtime.run(where, time_limit=5)
        assert runtime.run(where, time_limit=5) == loop_thread
        assert loop_thread != threading.get_ident()
    finally:
        runtime.stop()
    assert seen == {loop_thread}
