"""One invocation without Celery: checking a producer's kwargs, and running the echo agent."""

import ssl
from typing import Any

import httpx
import pytest

from worker.agents.base import AgentRequest
from worker.agents.invocation import (
    MAX_TASK_MESSAGE_CHARS,
    InvalidInvocationError,
    invoke_agent,
    parse_request,
)
from worker.agents.llm_session import LazyLLMSession
from worker.errors import AgentConfigurationError, PermanentAgentError, UnknownAgentError
from worker.settings import WorkerSettings

VALID: dict[str, Any] = {"agent_id": "echo", "message": "hello there", "user_id": "alice"}


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the echo agent made an HTTP request: {request.url}")


#: The loop's HTTP client; the echo agent must never use it.
UNUSED_HTTP = httpx.AsyncClient(transport=httpx.MockTransport(_no_network))
#: The loop's LLM session; the tests here check that nothing opens it.
UNUSED_LLM = LazyLLMSession(tls=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


class Reports:
    """An in-memory ``report_progress``."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    async def __call__(self, meta: dict[str, Any], *, urgent: bool = True) -> None:
        self.calls.append((meta["progress"], meta["stage"]))


def echo_settings(**values: object) -> WorkerSettings:
    return WorkerSettings(_env_file=None, echo_word_delay=0, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agent_id", None),
        ("agent_id", ""),
        ("agent_id", 7),
        ("agent_id", ["echo"]),
        ("message", None),
        ("message", ""),
        ("message", "   \n\t "),
        ("message", 42),
        ("message", {"text": "hi"}),
        ("user_id", None),
        ("user_id", ""),
        ("user_id", 1001),
        ("session_id", 5),
        ("session_id", ["s-1"]),
        ("metadata", ["a", "b"]),
        ("metadata", "trace=abc"),
        ("metadata", 3),
    ],
)
def test_parse_request_names_field_when_value_is_invalid(field: str, value: object) -> None:
    kwargs = {**VALID, field: value}

    with pytest.raises(InvalidInvocationError, match=f"^{field} must be"):
        parse_request(**kwargs)


def test_parse_request_refuses_message_when_longer_than_limit() -> None:
    message = "x" * (MAX_TASK_MESSAGE_CHARS + 1)

    with pytest.raises(InvalidInvocationError, match="message is longer than 1000000 characters"):
        parse_request(agent_id="echo", message=message, user_id="alice")


def test_parse_request_accepts_message_when_exactly_at_limit() -> None:
    message = "x" * MAX_TASK_MESSAGE_CHARS

    assert parse_request(agent_id="echo", message=message, user_id="alice").message == message


def test_parse_request_error_is_permanent() -> None:
    assert issubclass(InvalidInvocationError, PermanentAgentError)


def test_parse_request_builds_request_when_kwargs_are_valid() -> None:
    metadata = {"trace": "abc", "nested": {"n": 1}}

    request = parse_request(
        agent_id="echo", message="hi", user_id="alice", session_id="s-1", metadata=metadata
    )

    assert request == AgentRequest(
        agent_id="echo",
        message="hi",
        user_id="alice",
        session_id="s-1",
        metadata={"trace": "abc", "nested": {"n": 1}},
    )
    assert request.metadata is not metadata


def test_parse_request_uses_empty_metadata_when_metadata_is_none() -> None:
    request = parse_request(**VALID, session_id=None, metadata=None)

    assert request.metadata == {}
    assert request.session_id is None


@pytest.mark.anyio
async def test_invoke_agent_returns_content_metadata_usage_when_echo_runs() -> None:
    request = parse_request(
        agent_id="echo",
        message="one two three",
        user_id="alice",
        session_id="s-1",
        metadata={"trace": "abc"},
    )

    result = await invoke_agent(
        request,
        http=UNUSED_HTTP,
        llm_session=UNUSED_LLM,
        settings=echo_settings(),
        report_progress=Reports(),
        attempt=2,
        streamed=True,
    )

    assert set(result) == {"content", "metadata", "usage"}
    assert result["content"] == "one two three"
    assert not UNUSED_LLM.opened, "an agent that calls no LLM opens no LLM session"
    assert result["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    metadata = dict(result["metadata"])
    duration_ms = metadata.pop("duration_ms")
    assert isinstance(duration_ms, int)
    assert duration_ms >= 0
    assert metadata == {
        "finish_reason": "stop",
        "agent_id": "echo",
        "session_id": "s-1",
        "chunks": 3,
        "attempt": 2,
        "streamed": True,
        "request": {"trace": "abc"},
    }


@pytest.mark.anyio
async def test_invoke_agent_leaves_request_out_when_request_has_no_metadata() -> None:
    request = parse_request(agent_id="echo", message="just this", user_id="alice")

    result = await invoke_agent(
        request,
        http=UNUSED_HTTP,
        llm_session=UNUSED_LLM,
        settings=echo_settings(),
        report_progress=Reports(),
        attempt=1,
        streamed=False,
    )

    assert "request" not in result["metadata"]
    assert result["metadata"]["session_id"] is None
    assert result["metadata"]["attempt"] == 1
    assert result["metadata"]["streamed"] is False
    assert result["metadata"]["chunks"] == 2


@pytest.mark.anyio
async def test_invoke_agent_reports_generating_after_the_claims_start_when_echo_runs() -> None:
    reports = Reports()
    request = parse_request(agent_id="echo", message="one two three", user_id="alice")

    await invoke_agent(
        request,
        http=UNUSED_HTTP,
        llm_session=UNUSED_LLM,
        settings=echo_settings(progress_min_interval=0),
        report_progress=reports,
        attempt=1,
        streamed=False,
    )

    # The run's claim reported "starting" (5) already.
    assert reports.calls == [(10, "generating"), (17, "generating")]


@pytest.mark.anyio
async def test_invoke_agent_reports_only_stages_when_chunks_come_faster_than_min_interval() -> None:
    reports = Reports()
    request = parse_request(agent_id="echo", message="one two three", user_id="alice")

    await invoke_agent(
        request,
        http=UNUSED_HTTP,
        llm_session=UNUSED_LLM,
        settings=echo_settings(progress_min_interval=60),
        report_progress=reports,
        attempt=1,
        streamed=False,
    )

    assert reports.calls == [(10, "generating")]


@pytest.mark.anyio
async def test_invoke_agent_reports_non_decreasing_progress_when_message_is_long() -> None:
    reports = Reports()
    message = " ".join(f"word{n}" for n in range(200))
    request = parse_request(agent_id="echo", message=message, user_id="alice")

    result = await invoke_agent(
        request,
        http=UNUSED_HTTP,
        llm_session=UNUSED_LLM,
        settings=echo_settings(),
        report_progress=reports,
        attempt=1,
        streamed=True,
    )

    stages = [stage for _, stage in reports.calls]
    values = [value for value, _ in reports.calls]
    assert set(stages) == {"generating"}
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    assert values[0] == 10  # after the claim's "starting" (5)
    assert values[-1] < 95
    assert result["metadata"]["chunks"] == 200


@pytest.mark.anyio
async def test_invoke_agent_raises_unknown_agent_before_any_progress_when_id_is_unknown() -> None:
    reports = Reports()
    request = parse_request(agent_id="telepathy", message="hi", user_id="alice")

    with pytest.raises(UnknownAgentError):
        await invoke_agent(
            request,
            http=UNUSED_HTTP,
            llm_session=UNUSED_LLM,
            settings=echo_settings(),
            report_progress=reports,
            attempt=1,
            streamed=False,
        )

    assert reports.calls == []


@pytest.mark.anyio
async def test_invoke_agent_raises_configuration_error_when_llm_agent_has_no_llm() -> None:
    request = parse_request(agent_id="simple_llm_agent", message="hi", user_id="alice")

    with pytest.raises(AgentConfigurationError, match="LLM_BASE_URL"):
        await invoke_agent(
            request,
            http=UNUSED_HTTP,
            llm_session=UNUSED_LLM,
            settings=echo_settings(llm_base_url=None),
            report_progress=Reports(),
            attempt=1,
            streamed=False,
        )
