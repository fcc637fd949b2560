"""A task's durable, ordered event log in Redis: appending (worker and web) and reading (web).

One server-side script appends a batch of events to the task's capped Stream, keeps the answer
so far (chunk texts appended, replaced by a ``reset``), refreshes the expiry and announces each
event on the task's pub/sub channel: one round trip, atomically, so a listener can never see an
announcement whose entry is not in the log yet.

Reading after a cursor the capped log no longer holds yields one ``reset`` carrying the answer so
far, then what the log holds: never a silent gap.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from contract import keys
from contract.events import EventType, lua_log_has_ended
from streaming.events import Event, encode_payload, parse_event_id

#: A Lua function that appends events to a task's log: for each (type, data, text, attempt) in
#: ``argv`` from index ``first``, XADD to the capped Stream, keep the answer so far (a chunk's text
#: appended, a reset's content set, with its attempt) and PUBLISH the announcement; then refresh
#: the expiry of the three keys. Returns the entry ids. Every script that writes events includes
#: it, so there is one way to append.
APPEND_FUNCTION = """
local function append_events(log, content, attempt, channel, maxlen, ttl, argv, first)
  local ids = {}
  for i = first, #argv, 4 do
    local kind, data, text, number = argv[i], argv[i + 1], argv[i + 2], argv[i + 3]
    local id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'e', kind, 'd', data)
    if kind == 'chunk' then
      redis.call('APPEND', content, text)
    elseif kind == 'reset' then
      redis.call('SET', content, text)
      redis.call('SET', attempt, number)
    end
    redis.call('PUBLISH', channel, id .. '\\n' .. kind .. '\\n' .. data)
    ids[#ids + 1] = id
  end
  redis.call('EXPIRE', log, ttl)
  redis.call('EXPIRE', content, ttl)
  redis.call('EXPIRE', attempt, ttl)
  return ids
end
"""

# KEYS: events, content, attempt, and the task's Celery state key when ARGV[5] is not empty.
# ARGV: channel, maxlen, ttl, unless_ended ('1': write nothing if the log already ends with a
# terminal event), the Celery state to store ('' for none), its expiry, then events.
APPEND_SCRIPT = (
    APPEND_FUNCTION
    + f"""
if ARGV[4] == '1' and {lua_log_has_ended("KEYS[1]")} then
  return {{}}
end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6])
end
return append_events(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV, 7)
"""
)

#: A new event: its type and its JSON-serialisable payload.
NewEvent = tuple[EventType, Any]


def event_args(events: Sequence[NewEvent]) -> list[bytes | str]:
    """``events`` as the (type, data, text, attempt) quadruples ``append_events`` reads."""
    args: list[bytes | str] = []
    for kind, payload in events:
        text, attempt = "", ""
        if kind is EventType.CHUNK:
            text = payload["text"]
        elif kind is EventType.RESET:
            text, attempt = payload["content"], str(payload["attempt"])
        args += [kind.value, encode_payload(payload), text, attempt]
    return args


def log_keys(task_id: str) -> list[str]:
    """The keys ``append_events`` writes: the log, the answer so far, its attempt."""
    return [keys.task_events(task_id), keys.task_content(task_id), keys.task_attempt(task_id)]


def script_call(
    task_id: str,
    events: Sequence[NewEvent],
    *,
    maxlen: int,
    ttl: int,
    unless_ended: bool = False,
    state: tuple[bytes, int] | None = None,
) -> tuple[list[str], list[bytes | str | int]]:
    """Keys and arguments of ``APPEND_SCRIPT``; ``state`` is the task's Celery state record and
    its expiry, stored with the events (and, with ``unless_ended``, only if they are)."""
    task_keys = log_keys(task_id)
    args: list[bytes | str | int] = [keys.task_channel(task_id), maxlen, ttl]
    args += ["1" if unless_ended else "0", state[0] if state else "", state[1] if state else 0]
    if state is not None:
        task_keys.append(keys.celery_task_meta(task_id))
    args += event_args(events)
    return task_keys, args


def _ids(raw: Sequence[bytes | str]) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else i for i in raw]


class EventLog:
    """Appends events to task logs, from async code (the web process's ``queued``)."""

    def __init__(self, redis: "Redis", *, maxlen: int, ttl: int) -> None:
        self._script = redis.register_script(APPEND_SCRIPT)
        self._maxlen = maxlen
        self._ttl = ttl

    async def append(
        self, task_id: str, events: Sequence[NewEvent], *, unless_ended: bool = False
    ) -> list[str]:
        """Append ``events`` in order; their entry ids (none if ``unless_ended`` found the log
        ended)."""
        task_keys, args = script_call(
            task_id, events, maxlen=self._maxlen, ttl=self._ttl, unless_ended=unless_ended
        )
        return _ids(await self._script(keys=task_keys, args=args))


def decode_entry(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Event:
    event_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Event(id=event_id, type=EventType(fields[b"e"].decode()), data=fields[b"d"])


def decode_announcement(message: bytes) -> Event:
    """An event from its pub/sub announcement (``id\\ntype\\ndata``)."""
    event_id, kind, data = message.split(b"\n", 2)
    return Event(id=event_id.decode(), type=EventType(kind.decode()), data=data)


def _predecessor(event_id: str) -> str:
    ms, seq = parse_event_id(event_id)
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2**64 - 1}"


#: The answer so far and the log's newest entry, read at one moment (a chunk written between
#: them would make a reset carry text its id does not cover, or miss some). A read-only script:
#: Redis runs one even while it refuses writes (its memory full), where it refuses MULTI.
SNAPSHOT_SCRIPT = """#!lua flags=no-writes
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]),
        redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)}
"""


class EventLogReader:
    """Reads task logs for listeners (web side)."""

    def __init__(self, redis: "Redis", *, page_size: int = 500) -> None:
        self._redis = redis
        self.page_size = page_size
        self._snapshot_script = redis.register_script(SNAPSHOT_SCRIPT)

    async def read_after(self, task_id: str, cursor: str | None) -> list[Event]:
        """Up to a page of events after ``cursor`` (None: from the start).

        When the log was trimmed past the cursor, the page starts with a ``reset`` that carries
        the answer so far and stands for everything up to the entry after it.
        """
        key = keys.task_events(task_id)
        start = f"({cursor}" if cursor else "-"
        # Not in MULTI, which a Redis refusing writes (its memory full) refuses too: the range
        # first, then the trim state, so that a trim between them makes the check below find a
        # loss (and send a reset, always right) rather than miss one.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, min=start, max="+", count=self.page_size)
            pipe.xinfo_stream(key)
            entries, info = await pipe.execute(raise_on_error=False)
        if isinstance(entries, Exception):  # the key is not a stream, a cursor Redis refused
            raise entries
        if isinstance(info, Exception):  # no log yet
            return []
        if _lost_after(info, cursor):
            return await self._snapshot(task_id)
        return [decode_entry(entry_id, fields) for entry_id, fields in entries]

    async def last(self, task_id: str) -> Event | None:
        """The newest event of the task's log, if any."""
        entries: Any = await self._redis.xrevrange(keys.task_events(task_id), count=1)
        if not entries:
            return None
        ((entry_id, fields),) = entries
        return decode_entry(entry_id, fields)

    async def _snapshot(self, task_id: str) -> list[Event]:
        task_keys = [keys.task_content(task_id), keys.task_attempt(task_id)]
        content, attempt, last_entries = await self._snapshot_script(
            keys=[*task_keys, keys.task_events(task_id)]
        )
        ((last_id, flat_fields),) = last_entries
        last = decode_entry(last_id, dict(zip(flat_fields[::2], flat_fields[1::2], strict=True)))
        payload = {
            "attempt": int(attempt) if attempt else 1,
            "content": (content or b"").decode(),
        }
        if last.terminal:  # the content is complete before it: deliver it after the reset
            reset = Event(_predecessor(last.id), EventType.RESET, encode_payload(payload))
            return [reset, last]
        return [Event(last.id, EventType.RESET, encode_payload(payload))]


def _lost_after(info: Mapping[str, Any], cursor: str | None) -> bool:
    """Did trimming drop entries after ``cursor``? (Trimmed entries precede the first one.)"""
    if int(info["entries-added"]) <= int(info["length"]):
        return False
    if cursor is None:
        return True
    first = _text(info["recorded-first-entry-id"])
    return parse_event_id(cursor) < parse_event_id(first)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
