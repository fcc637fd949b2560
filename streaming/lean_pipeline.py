"""A pipeline with the least client-side work: the hot path's way of talking to Redis.

Every streamed answer sends a few dozen script calls (its events, its claim, its outcome). Through
redis-py's ``Pipeline`` most of each one's client-side CPU goes to packing arguments in Python;
packed by hiredis into one buffer, written at once, and read back in order, it costs a fraction
of that (bench/README.md, "The event writer's pipeline"). The replies come back in order,
each one the command's answer or its error (a ``ResponseError``: a script Redis does not have, a
key of the wrong type), so one command's error never hides the others'.

The replies of one round trip share one deadline (``READ_TIMEOUT``) rather than one timer per
reply as redis-py's reads have. A lost connection, a deadline passed or a cancellation while
replies are pending closes the connection instead of returning it to the pool: a connection with
unread replies must never answer someone else.

**Callers share round trips.** The commands of every caller of ``execute`` on one client in one
iteration of the event loop go out in one write and come back in one read (what other clients
call auto-pipelining): a hundred tasks on a worker's loop end, claim and write events at the
same moments, and each round trip costs a pool checkout, a send and a wake-up for the replies.
Each caller still gets its own commands' replies, in order, and its own errors (a command it
cannot pack, the connection cut before its replies came). A caller cancelled before the round
trip leaves is left out of it; once sent, its commands may apply though nobody waits for them.
"""

import asyncio
import hashlib
import math
import weakref
from collections.abc import Sequence

from hiredis import pack_command
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Seconds the replies of one round trip may take.
READ_TIMEOUT = 10.0

Command = Sequence[bytes | str | int | float]


def script_sha(source: str) -> str:
    """The name ``EVALSHA`` calls a script by, computed once per script where it is defined
    (redis-py's ``register_script`` hashes the source again for every object it makes)."""
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis names scripts so)


async def execute(redis: "Redis", commands: Sequence[Command]) -> list[object]:
    """Send ``commands`` in one write, with those of the other callers of this loop iteration,
    and return their replies (an error as its exception).

    A connection that turns out dead before any reply came (Redis restarted while it sat in the
    pool) is replaced and the commands sent once more, as redis-py's own retry does. Redis may
    have applied them before the connection failed, so every command sent through here must be
    safe to send twice: each script applies once (the event log's batches are numbered, a task's
    acceptance and a run's claim recognise themselves) or is a no-op the second time. A command
    that cannot be packed (an argument Redis cannot take) raises here, in its caller alone."""
    packed = b"".join(
        pack_command(tuple(command))  # type: ignore[arg-type]
        for command in commands
    )
    loop = asyncio.get_running_loop()
    shared = _SHARED.get(redis)
    if shared is None or shared.loop is not loop:
        shared = _SHARED[redis] = _SharedRoundTrip(loop)
    return await shared.join(redis, packed, len(commands))


class _SharedRoundTrip:
    """The callers of one client on one loop whose commands go out together: those that join
    before the round trip's task first runs (the next iteration of the loop). It holds no
    reference to the client: ``_SHARED`` lets go of it with the client."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: list[_Caller] = []
        #: The round trip that has not taken its commands yet, if one is scheduled.
        self._gathering: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # referenced until done

    def join(self, redis: "Redis", packed: bytes, count: int) -> "asyncio.Future[list[object]]":
        future: asyncio.Future[list[object]] = self.loop.create_future()
        self._waiting.append((packed, count, future))
        if self._gathering is None:
            task = self._gathering = self.loop.create_task(self._round_trip(redis))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return future

    async def _round_trip(self, redis: "Redis") -> None:
        """Send the commands of every caller still waiting (one cancelled before now is left
        out; once sent, its commands may apply though it no longer waits for them); a caller
        whose replies all came before the connection failed gets them, the others the error."""
        waiting = [caller for caller in self._waiting if not caller[2].done()]
        self._waiting = []
        self._gathering = None
        if not waiting:
            return
        packed = b"".join(caller[0] for caller in waiting)
        count = sum(caller[1] for caller in waiting)
        replies: list[object] = []
        try:
            try:
                await _execute_once(redis, packed, count, replies=replies)
            except _NoReplyError:
                replies.clear()
                await _execute_once(redis, packed, count, replies=replies, retrying=True)
        except BaseException as exc:  # a cancellation: the loop is closing
            _settle(waiting, replies, exc)
            if not isinstance(exc, Exception):
                raise
            return
        _settle(waiting, replies, None)


_Caller = tuple[bytes, int, "asyncio.Future[list[object]]"]


def _settle(waiting: list[_Caller], replies: list[object], error: BaseException | None) -> None:
    """Give each caller its replies, or (past the replies that came) its own copy of
    ``error``: one exception object raised in many tasks would mix their tracebacks."""
    start = 0
    for _, count, future in waiting:
        mine = replies[start : start + count]
        start += count
        if future.done():  # its caller was cancelled
            continue
        if len(mine) == count:
            future.set_result(mine)
        elif isinstance(error, asyncio.CancelledError) or error is None:
            future.cancel()
        else:
            future.set_exception(_own_copy(error))


def _own_copy(error: BaseException) -> BaseException:
    """An exception of ``error``'s type and arguments, caused by it."""
    try:
        copy = type(error)(*error.args)
    except Exception:  # a type that cannot be made again from its arguments
        return error
    copy.__cause__ = error
    return copy


#: Each client's callers waiting for a round trip (a client serves one loop at a time).
_SHARED: "weakref.WeakKeyDictionary[Redis, _SharedRoundTrip]" = weakref.WeakKeyDictionary()


class _NoReplyError(Exception):
    """The connection failed before the first reply: nothing is known to have been done."""


async def _execute_once(
    redis: "Redis",
    packed: bytes,
    count: int,
    *,
    replies: list[object],
    retrying: bool = False,
) -> list[object]:
    """Send ``packed`` (``count`` commands) and read their replies into ``replies`` (what came
    before a failure stays there)."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        try:
            await connection.send_packed_command(packed, check_health=False)
            async with asyncio.timeout(READ_TIMEOUT):
                for _ in range(count):
                    try:
                        replies.append(await connection.read_response(timeout=math.inf))
                    except ResponseError as error:
                        replies.append(error)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no reply from Redis within {READ_TIMEOUT:g} s") from exc
        except (RedisConnectionError, OSError) as exc:
            if replies or retrying:
                raise
            raise _NoReplyError() from exc
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
    return replies
