"""What the tests scripted, per scenario key: the answer's tokens and pacing, the failures given
before or in the middle of it, the tool calls of each round; and every call the server took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict


class RecordedCall(TypedDict):
    """One call the server took, as the control API reports it (the server's monotonic clock)."""

    messages: list[dict[str, Any]]
    model: str
    headers: dict[str, str | None]
    #: The HTTP status it was answered with (200 for a stream that failed in the middle).
    status: int
    stream: bool
    #: As the client sent them.
    tools: Any
    tool_choice: Any
    started_at: float
    completed: bool
    #: Whether the client dropped the stream before it finished, and when.
    disconnected: bool
    disconnected_at: float | None


@dataclass(frozen=True)
class Failure:
    """One scripted error answer given instead of a completion; with ``after_tokens``, a
    streamed call sends that many of the scenario's tokens first, then the error in the stream
    (status 200, an ``{"error": ...}`` chunk, no ``[DONE]``)."""

    status: int
    retry_after: str | None = None
    message: str | None = None
    after_tokens: int | None = None
    #: Only a request at this tool round (0: the first call) takes it; others pass it by.
    at_round: int | None = None


@dataclass(frozen=True)
class ScriptedToolCall:
    """One function call the server answers with."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Scenario:
    """What the server answers for one scenario key."""

    tokens: tuple[str, ...]
    delay: float = 0.0
    failures: tuple[Failure, ...] = ()
    usage: bool = True
    tool_rounds: tuple[tuple[ScriptedToolCall, ...], ...] = ()
    piece_chars: int = 8


def echo_scenario(key: str) -> Scenario:
    """The scenario used for keys nobody scripted: echo the words of the key."""
    return Scenario(tokens=("echo:", *(" " + word for word in key.split())))


def parse_scenario(body: object) -> Scenario:
    """Validate a control-API scenario body; raise ValueError when malformed."""
    if not isinstance(body, dict):
        raise ValueError("scenario must be a JSON object")
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("'tokens' must be a list of strings")
    delay = body.get("delay", 0.0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        raise ValueError("'delay' must be a non-negative number")
    usage = body.get("usage", True)
    if not isinstance(usage, bool):
        raise ValueError("'usage' must be a boolean")
    failures = body.get("failures", [])
    if not isinstance(failures, list):
        raise ValueError("'failures' must be a list")
    rounds = body.get("tool_rounds", [])
    if not isinstance(rounds, list) or not all(isinstance(r, list) and r for r in rounds):
        raise ValueError("'tool_rounds' must be a list of non-empty lists of calls")
    piece_chars = body.get("piece_chars", 8)
    if not isinstance(piece_chars, int) or isinstance(piece_chars, bool) or piece_chars < 1:
        raise ValueError("'piece_chars' must be a positive integer")
    return Scenario(
        tokens=tuple(tokens),
        delay=float(delay),
        failures=tuple(_parse_failure(item) for item in failures),
        usage=usage,
        tool_rounds=tuple(tuple(_parse_tool_call(call) for call in r) for r in rounds),
        piece_chars=piece_chars,
    )


def _parse_tool_call(item: object) -> ScriptedToolCall:
    if not isinstance(item, dict):
        raise ValueError("each tool call must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("tool call 'name' must be a non-empty string")
    arguments = item.get("arguments", "{}")
    if not isinstance(arguments, str):
        raise ValueError("tool call 'arguments' must be a string (the JSON text)")
    call_id = item.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise ValueError("tool call 'id' must be a string")
    return ScriptedToolCall(name=name, arguments=arguments, id=call_id)


def _parse_failure(item: object) -> Failure:
    if not isinstance(item, dict):
        raise ValueError("each failure must be a JSON object")
    status = item.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise ValueError("failure 'status' must be an HTTP error status")
    retry_after = item.get("retry_after")
    if retry_after is not None and not isinstance(retry_after, int | float | str):
        raise ValueError("failure 'retry_after' must be a number or a string")
    message = item.get("body")
    if message is not None and not isinstance(message, str):
        raise ValueError("failure 'body' must be a string")
    after_tokens = item.get("after_tokens")
    if after_tokens is not None and (
        not isinstance(after_tokens, int) or isinstance(after_tokens, bool) or after_tokens < 0
    ):
        raise ValueError("failure 'after_tokens' must be a non-negative integer")
    at_round = item.get("at_round")
    if at_round is not None and (
        not isinstance(at_round, int) or isinstance(at_round, bool) or at_round < 0
    ):
        raise ValueError("failure 'at_round' must be a non-negative integer")
    return Failure(
        status=status,
        retry_after=None if retry_after is None else str(retry_after),
        message=message,
        after_tokens=after_tokens,
        at_round=at_round,
    )


@dataclass
class ScenarioStore:
    """Scripted scenarios, how many failures each has used, and the call log."""

    scenarios: dict[str, Scenario] = field(default_factory=dict)
    failures_used: dict[str, int] = field(default_factory=dict)
    calls: dict[str, list[RecordedCall]] = field(default_factory=dict)

    def put(self, key: str, scenario: Scenario) -> None:
        self.scenarios[key] = scenario
        self.failures_used[key] = 0

    def clear(self) -> None:
        self.scenarios.clear()
        self.failures_used.clear()
        self.calls.clear()

    def scenario_for(self, key: str) -> Scenario:
        return self.scenarios.get(key) or echo_scenario(key)

    def take_failure(self, key: str, *, at_round: int = 0) -> Failure | None:
        """Consume and return the next scripted failure for ``key``, if any (one that names a
        tool round waits for a request at that round)."""
        scenario = self.scenario_for(key)
        used = self.failures_used.get(key, 0)
        if used >= len(scenario.failures):
            return None
        failure = scenario.failures[used]
        if failure.at_round is not None and failure.at_round != at_round:
            return None
        self.failures_used[key] = used + 1
        return failure

    def record(self, key: str, call: RecordedCall) -> RecordedCall:
        self.calls.setdefault(key, []).append(call)
        return call
