"""The event model of a task's stream: what a client receives, encoded once for all listeners.

Every event has the id of its entry in the task's log (``<ms>-<seq>``, the SSE ``id:``), a type
and a JSON payload. ``result``, ``error`` and ``cancelled`` are terminal: a stream ends after one.
Payloads are encoded once, with orjson, when the event is created or read, and the SSE frame is
built once per event, however many clients receive it.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from contract.events import TERMINAL_TYPES, EventType

#: ASCII digits only (``\d`` also matches other scripts' digits), the whole string (``$`` would
#: let a trailing newline through).
_EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART = 2**64 - 1  # Redis Stream ids are two unsigned 64-bit numbers


class InvalidEventIdError(ValueError):
    """A cursor that is not an event id (``<milliseconds>-<sequence>``)."""


def parse_event_id(value: str) -> tuple[int, int]:
    """``"1700000000000-3"`` as a comparable pair; ``InvalidEventIdError`` otherwise."""
    match = _EVENT_ID.fullmatch(value)
    if match is None or int(match[1]) > _MAX_PART or int(match[2]) > _MAX_PART:
        shown = value[:40].encode("utf-8", "backslashreplace").decode("utf-8")
        raise InvalidEventIdError(f"{shown!r} is not an event id (<milliseconds>-<sequence>)")
    return int(match[1]), int(match[2])


def encode_payload(payload: Any) -> bytes:
    return orjson.dumps(payload)


@dataclass(frozen=True, slots=False)
class Event:
    id: str
    type: EventType
    data: bytes

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @cached_property
    def order(self) -> tuple[int, int]:
        return parse_event_id(self.id)

    @cached_property
    def sse(self) -> bytes:
        """The SSE frame, built once (orjson never writes a newline, so one data line)."""
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            self.id.encode(),
            self.type.value.encode(),
            self.data,
        )

    def payload(self) -> Any:
        return orjson.loads(self.data)
