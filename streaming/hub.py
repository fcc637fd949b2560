"""The web side of task streams: ONE pub/sub connection per process, fanned out in process.

A listener (one SSE client) is an async iterator over a task's events after a cursor. It first
subscribes (the hub subscribes the task's channel when its first local listener arrives and waits
for Redis to confirm), then replays the log after its cursor, then yields live announcements,
dropping ids it has already yielded: no gap, no duplicate. The task's channel is unsubscribed when
its last listener leaves, in a shielded ``finally`` so an abrupt disconnect cannot leak it.

Announcements only wake listeners up; the log is the truth. Each listener's buffer is bounded: one
that falls behind is marked lagging and catches up from the log instead of growing memory. After a
reconnect of the pub/sub connection (announcements may have been lost) every listener catches up,
and every ``idle_check`` seconds one read per task finds the idle listeners the log is ahead of,
so nothing waits on a lost announcement for long.

::

    Redis ─PUBLISH─▶ [one pub/sub connection] ─▶ hub reader ─┬─▶ listener buffer ─▶ SSE client
          ◀─XRANGE── listener catch-up (join, lag, reconnect, idle) └─▶ listener buffer ─▶ ...
"""

import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from contract import keys
from streaming.event_log import EventLogReader, decode_announcement
from streaming.events import Event
from streaming.subscription import Listener, Subscription

logger = logging.getLogger("agent_service.streaming.hub")


class _Channel:
    __slots__ = ("confirmed", "listeners", "task_id")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.listeners: set[Listener] = set()
        self.confirmed = anyio.Event()


class EventHub:
    """Fans task events out to local listeners; use as an async context manager (a lifespan).

    The pub/sub connection is opened by the first subscription and, once nothing has been
    subscribed for ``release_after`` seconds, closed together with the idle connections of the
    client's pool: an idle web process holds no Redis connection for streaming.
    """

    def __init__(
        self,
        redis: "Redis",
        *,
        buffer_size: int = 256,
        idle_check: float = 5.0,
        release_after: float = 2.0,
        reconnect_delay: float = 0.5,
        confirm_timeout: float = 5.0,
    ) -> None:
        self._redis = redis
        self._reader = EventLogReader(redis)
        self._buffer_size = buffer_size
        self._idle_check = idle_check
        self._release_after = release_after
        self._reconnect_delay = reconnect_delay
        self._confirm_timeout = confirm_timeout
        self._channels: dict[str, _Channel] = {}
        #: Per channel, UNSUBSCRIBEs whose confirmation has not arrived yet. Redis answers in
        #: command order, so a SUBSCRIBE confirmation that arrives while one is outstanding
        #: answers a SUBSCRIBE sent before it: stale, and no proof the channel is subscribed now.
        self._unsubscribing: dict[str, int] = {}
        self._pubsub: PubSub = redis.pubsub()
        self._wanted = anyio.Event()
        self._task_group: TaskGroup | None = None
        self._lock = anyio.Lock()

    @property
    def listener_count(self) -> int:
        return sum(len(c.listeners) for c in self._channels.values())

    async def __aenter__(self) -> Self:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._read_forever)
        self._task_group.start_soon(self._check_idle_forever)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def subscribe(self, task_id: str) -> "Subscription":
        """Subscribe a new listener to the task's channel, confirmed by Redis.

        Raises ``StreamUnavailableError`` when Redis does not confirm within ``confirm_timeout``.
        """
        listener = Listener(self._buffer_size)
        try:
            with anyio.fail_after(self._confirm_timeout):
                await self._attach(task_id, listener)
        except (TimeoutError, RedisError, OSError) as exc:
            with anyio.CancelScope(shield=True):
                await self._detach(task_id, listener)
            raise StreamUnavailableError("the event stream is unavailable") from exc
        except BaseException:  # cancelled while waiting (the client left): leave no listener
            with anyio.CancelScope(shield=True):
                await self._detach(task_id, listener)
            raise
        return Subscription(task_id, listener, reader=self._reader, detach=self._detach)

    async def listen(self, task_id: str, *, after: str | None = None) -> AsyncIterator[Event]:
        """Subscribe, then the task's events after ``after``; unsubscribes however it ends."""
        subscription = await self.subscribe(task_id)
        try:
            async for event in subscription.events(after=after):
                yield event
        finally:
            await subscription.close()

    async def _attach(self, task_id: str, listener: Listener) -> None:
        channel_name = keys.task_channel(task_id)
        async with self._lock:
            channel = self._channels.get(channel_name)
            if channel is None:
                channel = self._channels[channel_name] = _Channel(task_id)
                channel.listeners.add(listener)
                await self._pubsub.subscribe(channel_name)
                if self._pubsub.connection is not None:
                    self._pubsub.connection.register_connect_callback(self._on_reconnect)
                self._wanted.set()
            else:
                channel.listeners.add(listener)
        await channel.confirmed.wait()

    async def _detach(self, task_id: str, listener: Listener) -> None:
        channel_name = keys.task_channel(task_id)
        async with self._lock:
            channel = self._channels.get(channel_name)
            if channel is None:
                return
            channel.listeners.discard(listener)
            if channel.listeners:
                return
            del self._channels[channel_name]
            # Counted before the command is sent: its confirmation may be read (by the pump,
            # which takes no lock) before the send returns.
            self._unsubscribing[channel_name] = self._unsubscribing.get(channel_name, 0) + 1
            try:
                await self._pubsub.unsubscribe(channel_name)
            except (RedisError, OSError):
                logger.warning("unsubscribe failed channel=%s", channel_name)
                self._forget_unsubscribe(channel_name)
            except BaseException:  # cancelled mid-send: no confirmation may come for it
                self._forget_unsubscribe(channel_name)
                raise

    async def _check_idle_forever(self) -> None:
        """Every ``idle_check`` seconds, one read per task with listeners: its log's newest id.
        A listener behind it that yielded nothing since the last check missed an announcement,
        and goes back to the log; the others are not touched (ten thousand idle clients of a
        hundred tasks cost a hundred cheap reads)."""
        while True:
            await anyio.sleep(self._idle_check)
            for channel in list(self._channels.values()):
                if not channel.listeners:
                    continue
                try:
                    last = await self._reader.last(channel.task_id)
                except (RedisError, OSError) as exc:
                    logger.warning("idle check failed (%r)", exc)
                    break
                if last is None:
                    continue
                for listener in list(channel.listeners):
                    if listener.seen < last.order and listener.seen == listener.seen_at_check:
                        listener.fall_behind()
                    listener.seen_at_check = listener.seen

    async def _read_forever(self) -> None:
        while True:
            await self._wanted.wait()
            try:
                await self._pump()
            except (RedisError, OSError) as exc:
                logger.warning("pub/sub connection lost (%s); reconnecting", exc)
                self._all_fall_behind()
                await anyio.sleep(self._reconnect_delay)

    async def _pump(self) -> None:
        """Dispatch announcements until nothing has been subscribed for ``release_after``."""
        while True:
            message = await self._pubsub.get_message(timeout=self._release_after)
            if message is not None:
                self._dispatch(message)
                continue
            async with self._lock:
                if self._channels:
                    continue
                if self._pubsub.connection is not None:
                    self._pubsub.connection.deregister_connect_callback(self._on_reconnect)
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                await self._redis.connection_pool.disconnect(inuse_connections=False)
                self._pubsub = self._redis.pubsub()
                self._unsubscribing.clear()
                self._wanted = anyio.Event()
                return

    async def _on_reconnect(self, connection: Any) -> None:
        self._unsubscribing.clear()  # a new connection: no confirmation of the old one will come
        self._all_fall_behind()

    def _all_fall_behind(self) -> None:
        for channel in self._channels.values():
            for listener in channel.listeners:
                listener.fall_behind()

    def _forget_unsubscribe(self, channel_name: str) -> None:
        outstanding = self._unsubscribing.get(channel_name, 0) - 1
        if outstanding > 0:
            self._unsubscribing[channel_name] = outstanding
        else:
            self._unsubscribing.pop(channel_name, None)

    def _dispatch(self, message: dict[str, Any]) -> None:
        name = message["channel"]
        channel_name = name.decode() if isinstance(name, bytes) else str(name)
        if message["type"] == "unsubscribe":
            self._forget_unsubscribe(channel_name)
            return
        channel = self._channels.get(channel_name)
        if channel is None:
            return
        if message["type"] == "subscribe":
            if not self._unsubscribing.get(channel_name):
                channel.confirmed.set()
        elif message["type"] == "message":
            try:
                event = decode_announcement(message["data"])
            except ValueError:
                logger.warning("unreadable announcement on %s ignored", channel_name)
                return
            for listener in channel.listeners:
                listener.offer(event)


class StreamUnavailableError(Exception):
    """Redis did not confirm a subscription: the stream cannot start."""
