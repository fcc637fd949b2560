"""``tool_agent`` against the loopback LLM scripted to call tools: the steps on the stream and
in polling, tools that fail, the bounds, a cancel during a tool, a retry."""

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import poll_until_done, submit
from teststack.sse import content_of, events_path, read_stream
from teststack.stack import headers_for


def _call(name: str, **arguments: object) -> dict[str, str]:
    return {"name": name, "arguments": json.dumps(arguments)}


def _stream(stack: Stack, task_id: str) -> list[Any]:
    return read_stream(stack.web.client, events_path(task_id), headers=headers_for("alice"))


def _tool_events(events: list[Any]) -> list[tuple[str, Any]]:
    return [(e.event, e.data) for e in events if e.event in ("tool_call", "tool_result")]


def test_the_stream_shows_each_tool_step_in_order_then_the_answer(
    stack: Stack, llm: LLMControl
) -> None:
    key = "what is six times seven, and the capital of France?"
    llm.script(
        key,
        tool_rounds=[
            [_call("calculator", expression="6 * 7")],
            [_call("lookup_capital", country="France")],
        ],
        tokens=["42", " and", " Paris"],
        delay=0.2,  # the last turn's text takes a while: polling sees the agent's stage
    )
    task_id = submit(stack.web.client, "tool_agent", key, stream=True)
    seen: list[dict[str, Any]] = []
    final = poll_until_done(stack.web.client, task_id, seen=seen)
    events = _stream(stack, task_id)

    assert final["status"] == "completed"
    assert final["result"]["content"] == "42 and Paris" == content_of(events)
    assert final["result"]["metadata"]["tool_calls"] == 2
    assert _tool_events(events) == [
        (
            "tool_call",
            {"id": "call_0_0", "name": "calculator", "arguments": {"expression": "6 * 7"}},
        ),
        ("tool_result", {"id": "call_0_0", "ok": True, "summary": "42"}),
        (
            "tool_call",
            {"id": "call_1_0", "name": "lookup_capital", "arguments": {"country": "France"}},
        ),
        ("tool_result", {"id": "call_1_0", "ok": True, "summary": "Paris"}),
    ]
    stages = [e.data["stage"] for e in events if e.event == "progress"]
    assert stages[1:] == [
        "thinking",
        "calling calculator",
        "thinking",
        "calling lookup_capital",
        "thinking",
    ]
    progress = [e.data["progress"] for e in events if e.event == "progress"]
    assert progress == sorted(progress)
    polled = [(s["stage"], s["detail"]) for s in seen if s["status"] == "running"]
    assert ("thinking", "turn 3") in polled, polled
    last_request = llm.calls(key)[-1]["messages"]
    assert [m["content"] for m in last_request if m["role"] == "tool"] == ["42", "Paris"]


def test_a_failing_tool_is_reported_and_the_model_reads_the_error(
    stack: Stack, llm: LLMControl
) -> None:
    key = "the capital of Atlantis?"
    llm.script(
        key,
        tool_rounds=[
            [
                _call("lookup_capital", country="Atlantis"),
                _call("no_such_tool"),
                _call("fetch_upstream"),
            ]
        ],
        tokens=["I could not find it."],
    )
    task_id = submit(stack.web.client, "tool_agent", key)
    final = poll_until_done(stack.web.client, task_id)
    events = _stream(stack, task_id)

    assert final["status"] == "completed"
    results = [data for kind, data in _tool_events(events) if kind == "tool_result"]
    assert [r["ok"] for r in results] == [False, False, False]
    assert "no capital known for 'Atlantis'" in results[0]["summary"]
    assert "no tool named 'no_such_tool'" in results[1]["summary"]
    # a tool's own timeout is its error, not TOOL_TIME_LIMIT's: the model reads it
    assert "TimeoutError: upstream did not answer" in results[2]["summary"]
    told = [m["content"] for m in llm.calls(key)[-1]["messages"] if m["role"] == "tool"]
    assert told[0].startswith("error: LookupError")
    assert told[2].startswith("error: TimeoutError")


def test_a_model_that_never_stops_calling_tools_fails_at_the_turn_bound(
    stack: Stack, llm: LLMControl
) -> None:
    key = "call tools forever"
    llm.script(key, tool_rounds=[[_call("utc_now")]] * 20, tokens=["never"])
    task_id = submit(stack.web.client, "tool_agent", key)

    final = poll_until_done(stack.web.client, task_id)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ToolTurnLimitError"
    assert "TOOL_AGENT_MAX_TURNS" in final["error"]["message"]
    assert len(llm.calls(key)) == 8  # the default bound


def test_a_tool_past_its_time_limit_ends_the_task_with_a_clear_error(
    stack: Stack, llm: LLMControl
) -> None:
    key = "wait longer than allowed"
    llm.script(key, tool_rounds=[[_call("pause", seconds=30)]], tokens=["never"])
    task_id = submit(stack.web.client, "tool_agent", key)

    final = poll_until_done(stack.web.client, task_id, timeout=30)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ToolTimeoutError"
    assert "'pause'" in final["error"]["message"]
    assert "TOOL_TIME_LIMIT" in final["error"]["message"]


def test_a_cancel_during_a_slow_tool_stops_it(stack: Stack, llm: LLMControl) -> None:
    key = "wait a little"
    llm.script(key, tool_rounds=[[_call("pause", seconds=1.8)]], tokens=["too late"])
    task_id = submit(stack.web.client, "tool_agent", key, stream=True)
    read_stream(  # until the tool is called
        stack.web.client,
        events_path(task_id),
        headers=headers_for("alice"),
        stop=lambda events: events[-1].event == "tool_call",
    )

    asked = time.monotonic()
    response = stack.web.client.post(
        f"/api/v1/agents/tasks/{task_id}/cancel", headers=headers_for("alice")
    )
    final = poll_until_done(stack.web.client, task_id)
    took = time.monotonic() - asked

    assert response.status_code == 202
    assert final["status"] == "cancelled"
    events = _stream(stack, task_id)
    assert events[-1].event == "cancelled"
    assert [kind for kind, _ in _tool_events(events)] == ["tool_call"]  # no result came
    assert len(llm.calls(key)) == 1  # the model never got a second turn
    print(f"cancelled {took:.2f} s after asking, during a 1.8 s tool")


def test_a_retry_after_a_transient_llm_error_resets_the_steps(
    stack: Stack, llm: LLMControl
) -> None:
    key = "retried after its tools"
    llm.script(
        key,
        tool_rounds=[[_call("calculator", expression="1 + 1")]],
        tokens=["two"],
        failures=[{"status": 503, "at_round": 1, "after_tokens": 0}],
    )
    task_id = submit(stack.web.client, "tool_agent", key, stream=True)

    final = poll_until_done(stack.web.client, task_id)
    events = _stream(stack, task_id)

    assert final["status"] == "completed"
    kinds = [e.event for e in events]
    reset = kinds.index("reset")
    assert "tool_call" in kinds[:reset]  # the first attempt's steps, then the reset
    assert [k for k in kinds[reset:] if k.startswith("tool")] == ["tool_call", "tool_result"]
    assert events[reset].data == {"attempt": 2, "content": ""}


@pytest.mark.parametrize(
    "arguments",
    [
        '{"expression": "\\ud800"}',
        '{"expression": 18446744073709551616}',
        '{"expression": ' + "[" * 300 + "]" * 300 + "}",
        '{"expression": ' + "[" * 3000 + "]" * 3000 + "}",
    ],
    ids=["lone-surrogate", "integer-past-64-bits", "nested-300", "nested-3000"],
)
def test_arguments_the_stream_cannot_carry_are_refused_to_the_model_not_fatal(
    stack: Stack, llm: LLMControl, arguments: str
) -> None:
    """JSON the model may write (a user can ask it to) that Python parses and no encoder on the
    stream's way accepts: the call is shown as the model's text, the tool never runs, the model
    reads why and the task completes."""
    key = f"call the calculator with odd arguments {arguments[:40]}"
    llm.script(
        key, tool_rounds=[[{"name": "calculator", "arguments": arguments}]], tokens=["sorry"]
    )
    task_id = submit(stack.web.client, "tool_agent", key, stream=True)

    events = _stream(stack, task_id)

    assert events[-1].event == "result", events[-1]
    assert content_of(events) == "sorry"
    steps = _tool_events(events)
    assert steps[0] == (
        "tool_call",
        {"id": "call_0_0", "name": "calculator", "arguments": arguments},
    )
    assert steps[1][0] == "tool_result"
    assert steps[1][1]["ok"] is False
    assert "invalid arguments" in steps[1][1]["summary"]
    assert poll_until_done(stack.web.client, task_id)["status"] == "completed"
