"""Choosing and running the event loop a task's async work runs on."""

import logging
import time

import aiohttp
import anyio
import pytest

from worker.errors import AgentTimeoutError
from worker.runtime.http_client import create_tls_context
from worker.runtime.loop import (
    LoopResources,
    PerTaskRuntime,
    SharedLoopRuntime,
    resolve_mode,
)
from worker.settings import WorkerSettings

TLS = create_tls_context()


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
    return WorkerSettings(_env_file=None, redis_url="redis://127.0.0.1:1/0")


async def _answer(resources: LoopResources) -> str:
    return "answer"


async def _forever(resources: LoopResources) -> str:
    await anyio.sleep_forever()
    return "never"


@pytest.mark.parametrize("runtime_cls", [PerTaskRuntime, SharedLoopRuntime])
def test_runtime_returns_the_call_result(runtime_cls: type) -> None:
    runtime = runtime_cls(_settings(), tls=TLS)
    try:
        assert runtime.run(_answer, time_limit=5) == "answer"
    finally:
        runtime.stop()


@pytest.mark.parametrize("runtime_cls", [PerTaskRuntime, SharedLoopRuntime])
def test_runtime_opens_llm_session_on_first_use_and_closes_it_when_stopped(
    runtime_cls: type,
) -> None:
    async def opened(resources: LoopResources) -> bool:
        return resources.llm_session.opened

    async def session(resources: LoopResources) -> aiohttp.ClientSession:
        return resources.llm_session.get()

    runtime = runtime_cls(_settings(), tls=TLS)
    try:
        assert runtime.run(opened, time_limit=5) is False
        used = runtime.run(session, time_limit=5)
        if runtime_cls is SharedLoopRuntime:  # one session for every task of the process
            assert runtime.run(session, time_limit=5) is used
            assert not used.closed
        else:  # one per task, closed with its loop
            assert used.closed
    finally:
        runtime.stop()

    assert used.closed


@pytest.mark.parametrize("runtime_cls", [PerTaskRuntime, SharedLoopRuntime])
def test_runtime_cancels_the_call_at_its_time_limit(runtime_cls: type) -> None:
    runtime = runtime_cls(_settings(), tls=TLS)
    try:
        with pytest.raises(AgentTimeoutError, match="time limit"):
            runtime.run(_forever, time_limit=0.05)
        assert runtime.run(_answer, time_limit=5) == "answer"
    finally:
        runtime.stop()


async def _loop_class(resources: LoopResources) -> str:
    import asyncio

    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize("runtime_cls", [PerTaskRuntime, SharedLoopRuntime])
@pytest.mark.parametrize(("uvloop", "module"), [(False, "asyncio"), (True, "uvloop")])
def test_agent_uvloop_chooses_the_event_loop(runtime_cls: type, uvloop: bool, module: str) -> None:
    runtime = runtime_cls(_settings().model_copy(update={"agent_uvloop": uvloop}), tls=TLS)
    try:
        assert runtime.run(_loop_class, time_limit=5).split(".")[0] == module
    finally:
        runtime.stop()


def test_shared_runtime_runs_calls_on_one_loop_and_stops() -> None:
    import threading

    runtime = SharedLoopRuntime(_settings(), tls=TLS)
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


def test_shared_loop_reports_a_blocking_call_with_its_task_id_and_the_lag(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = WorkerSettings(
        _env_file=None, redis_url="redis://127.0.0.1:1/0", loop_lag_warning_ms=100
    )
    runtime = SharedLoopRuntime(settings, tls=TLS)

    async def blocking_call(resources: LoopResources) -> str:
        await anyio.sleep(0.1)  # the monitor is running by now
        time.sleep(0.8)
        await anyio.sleep(0.2)  # still running when the monitor wakes up late
        return "done"

    caplog.set_level(logging.WARNING, logger="agent_service.worker.loop")
    try:
        assert runtime.run(blocking_call, time_limit=5, task_id="task-that-blocks") == "done"
    finally:
        runtime.stop()

    (record,) = [r for r in caplog.records if "event_loop_blocked" in r.getMessage()]
    assert "tasks=task-that-blocks" in record.getMessage()
    lag_ms = int(record.getMessage().split("lag_ms=")[1].split()[0])
    # The monitor's last wake-up before the block was at most its interval (50 ms) earlier;
    # a busy machine only makes the lag longer.
    print(f"lag reported: {lag_ms} ms for a 800 ms block")
    assert 700 <= lag_ms < 10_000
    assert runtime.monitor.max_lag >= 0.7


def test_shared_loop_reports_nothing_while_no_call_blocks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A threshold far above what a busy machine's scheduling costs: only a block reaches it.
    settings = _settings().model_copy(update={"loop_lag_warning_ms": 1000})
    runtime = SharedLoopRuntime(settings, tls=TLS)

    async def polite_call(resources: LoopResources) -> str:
        await anyio.sleep(0.5)
        return "done"

    caplog.set_level(logging.WARNING, logger="agent_service.worker.loop")
    try:
        runtime.run(polite_call, time_limit=5, task_id="polite")
    finally:
        runtime.stop()

    assert [r for r in caplog.records if "event_loop_blocked" in r.getMessage()] == []
    print(f"largest lag without a block: {runtime.monitor.max_lag * 1000:.0f} ms")
    assert runtime.monitor.max_lag < 1.0
