"""The event types of a task's stream, and which of them end it.

A client that does not know a type ignores it: new types never break old clients.

``result``, ``error`` and ``cancelled`` are terminal: a stream ends after one, and a task whose
log ends with one has finished. Server-side scripts test for them with ``lua_is_terminal``, built
from the same set, so a new terminal type cannot be known to Python and forgotten in Lua.
"""

from enum import StrEnum


class EventType(StrEnum):
    STATUS = "status"
    PROGRESS = "progress"
    CHUNK = "chunk"
    RESET = "reset"
    #: An agent called a tool (``{id, name, arguments}``), and what came of it
    #: (``{id, ok, summary}``).
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    RESULT = "result"
    ERROR = "error"
    CANCELLED = "cancelled"


TERMINAL_TYPES = frozenset({EventType.RESULT, EventType.ERROR, EventType.CANCELLED})


def lua_is_terminal(expression: str) -> str:
    """A Lua condition that holds when ``expression`` (a string) names a terminal type."""
    return "(" + " or ".join(f"{expression} == '{kind}'" for kind in sorted(TERMINAL_TYPES)) + ")"


def lua_log_has_ended(key: str) -> str:
    """A Lua expression: does the stream at ``key`` end with a terminal event?"""
    return (
        f"(function() local last = redis.call('XREVRANGE', {key}, '+', '-', 'COUNT', 1) "
        "if #last == 0 then return false end "
        "local fields = last[1][2] "
        "for i = 1, #fields, 2 do "
        f"if fields[i] == 'e' then return {lua_is_terminal('fields[i + 1]')} end "
        "end return false end)()"
    )
