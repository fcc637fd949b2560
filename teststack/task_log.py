"""A task's event log read straight from Redis (the stream the web relays to its clients), for
what the API does not show: when each entry was written, and what kind it is.

The entries come as redis-py gives them to a client without ``decode_responses``: ids as text,
fields as bytes (``e``: the event type, ``d``: its JSON).
"""

from __future__ import annotations

from typing import NamedTuple

import redis

from contract import keys


class LogEntry(NamedTuple):
    id: str
    fields: dict[bytes, bytes]

    @property
    def event(self) -> bytes:
        return self.fields[b"e"]

    @property
    def data(self) -> bytes:
        return self.fields[b"d"]

    @property
    def written_ms(self) -> int:
        """When Redis added it: the time part of its id (milliseconds since the epoch)."""
        return int(self.id.split("-", 1)[0])


def log_entries(client: redis.Redis, task_id: str, *, start: str = "-") -> list[LogEntry]:
    """Every entry of the task's log from ``start`` (an entry id), oldest first."""
    entries = client.xrange(keys.task_events(task_id), min=start) or []
    return [_entry(entry_id, fields) for entry_id, fields in entries]


def last_entry(client: redis.Redis, task_id: str) -> LogEntry | None:
    """The newest entry of the task's log, if it has any."""
    entries = client.xrevrange(keys.task_events(task_id), count=1) or []
    return _entry(*entries[0]) if entries else None


def _entry(entry_id: object, fields: object) -> LogEntry:
    if not isinstance(entry_id, bytes) or not isinstance(fields, dict):
        raise TypeError(f"not an entry of a client without decode_responses: {entry_id!r}")
    return LogEntry(id=entry_id.decode(), fields={_bytes(k): _bytes(v) for k, v in fields.items()})


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes from a client without decode_responses, got {value!r}")
    return value
