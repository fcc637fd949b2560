"""Assembling streamed tool-call pieces, in memory (the client's tests stream them for real)."""

import pytest

from worker.agents.base import ToolCall
from worker.agents.tool_call_assembler import ToolCallAssembler
from worker.errors import LLMProtocolError


def test_calls_are_ordered_by_index_when_pieces_arrive_out_of_order() -> None:
    calls = ToolCallAssembler()
    calls.add([{"index": 2, "id": "c", "function": {"name": "third", "arguments": "{}"}}])
    calls.add([{"index": 0, "id": "a", "function": {"name": "first", "arguments": "{"}}])
    calls.add([{"index": 0, "function": {"arguments": "}"}}, {"index": 2, "id": "c"}])

    assert calls.calls() == [
        ToolCall(id="a", name="first", arguments="{}"),
        ToolCall(id="c", name="third", arguments="{}"),
    ]


def test_call_keeps_first_id_and_gets_late_name_when_server_sends_them_so() -> None:
    calls = ToolCallAssembler()
    calls.add([{"index": 0, "id": "call_1", "function": {"arguments": '{"q": 1}'}}])
    calls.add([{"index": 0, "id": "call_1", "function": {"name": "search", "arguments": None}}])

    assert calls.calls() == [ToolCall(id="call_1", name="search", arguments='{"q": 1}')]


@pytest.mark.parametrize(
    ("pieces", "problem"),
    [
        ({"index": 0}, "not a list"),
        (["call"], "not an object"),
        ([{"index": "0"}], "without an index"),
        ([{"index": True}], "without an index"),
        ([{"index": -1}], "without an index"),
        ([{"index": 0, "id": 7}], "id that is not a string"),
        ([{"index": 0, "function": "f"}], "function that is not an object"),
        ([{"index": 0, "function": {"name": ["f"]}}], "name that is not a string"),
        ([{"index": 0, "function": {"arguments": {"q": 1}}}], "arguments that is not a string"),
    ],
)
def test_add_raises_protocol_error_when_piece_is_malformed(pieces: object, problem: str) -> None:
    with pytest.raises(LLMProtocolError, match=problem):
        ToolCallAssembler().add(pieces)


def test_calls_raises_protocol_error_when_a_call_has_no_name() -> None:
    calls = ToolCallAssembler()
    calls.add([{"index": 0, "id": "call_1", "function": {"arguments": "{}"}}])

    with pytest.raises(LLMProtocolError, match="tool call 0 without naming its function"):
        calls.calls()
