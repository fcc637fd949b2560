"""Whole tool calls from the pieces an OpenAI-compatible stream sends them in.

A streamed completion that calls tools sends ``delta.tool_calls``: a list of pieces, each naming
the call it belongs to by ``index``. The first piece of a call usually brings its ``id`` and
``function.name``, the following ones more of ``function.arguments``; several calls may be under
way at once (parallel tool calls), their pieces in any order. Names and arguments are joined
piece by piece (as the reference SDK does, so a server that splits a name is understood); the id
is the first one sent.

What cannot be assembled is ``LLMProtocolError``: a piece without an integer ``index``, fields
of the wrong type, or a call that ends without a name. Arguments are kept as the model wrote
them, valid JSON or not (a completion cut by its token limit ends mid-argument; the caller
sees ``finish_reason == "length"`` and decides). A call without an id gets ``call_<index>``, so
its result can still be sent back under a name the conversation agrees on. Error messages never
quote names or arguments: they are the model's output.
"""

from worker.agents.base import ToolCall
from worker.errors import LLMProtocolError


class _PartialCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name: list[str] = []
        self.arguments: list[str] = []


class ToolCallAssembler:
    """Collects the ``delta.tool_calls`` of one completion into whole calls."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def add(self, pieces: object) -> None:
        """Take the ``tool_calls`` list of one delta."""
        if not isinstance(pieces, list):
            raise LLMProtocolError("LLM sent tool_calls that are not a list")
        for piece in pieces:
            if not isinstance(piece, dict):
                raise LLMProtocolError("LLM sent a tool-call piece that is not an object")
            index = piece.get("index")
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise LLMProtocolError("LLM sent a tool-call piece without an index")
            call = self._calls.get(index)
            if call is None:
                call = self._calls[index] = _PartialCall()
            call_id = piece.get("id")
            if call_id is not None:
                if not isinstance(call_id, str):
                    raise LLMProtocolError(f"LLM sent tool call {index} an id that is not a string")
                if not call.id:
                    call.id = call_id
            function = piece.get("function")
            if function is None:
                continue
            if not isinstance(function, dict):
                raise LLMProtocolError(
                    f"LLM sent tool call {index} a function that is not an object"
                )
            _append(call.name, function.get("name"), index=index, field="name")
            _append(call.arguments, function.get("arguments"), index=index, field="arguments")

    def calls(self) -> list[ToolCall]:
        """The calls of the completion, by index; raises if one of them has no name."""
        calls = []
        for index in sorted(self._calls):
            call = self._calls[index]
            name = "".join(call.name)
            if not name:
                raise LLMProtocolError(f"LLM ended tool call {index} without naming its function")
            calls.append(
                ToolCall(
                    id=call.id or f"call_{index}", name=name, arguments="".join(call.arguments)
                )
            )
        return calls


def _append(parts: list[str], value: object, *, index: int, field: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise LLMProtocolError(f"LLM sent tool call {index} a {field} that is not a string")
    if value:
        parts.append(value)
