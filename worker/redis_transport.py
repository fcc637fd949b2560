"""The Redis broker transport the workers use: kombu's, repaired so that a worker outlives a
Redis restart, a full memory and a failover, and taking the most urgent priority first.

**Priorities.** A message waits in the list of its priority (0-9, ``contract.tasks``), and a
worker's ``BRPOP`` names the lists in its priority steps' order, taking from the first that has
a message. kombu orders them from 0 up, so that 0 comes first; here the steps run from 9 down,
so that 9, the most urgent, comes first, as on RabbitMQ (``x-max-priority``) and as the seed's
``apply_async(priority=9)`` means it. Every priority has a list of its own, so a priority is its
own step.

**A Redis restart.**

Celery 5.7.0's consumer, when it loses the broker, first ``collect()``s the kombu connection and
then ``close()``s it (``Consumer.on_connection_error_after_connected``; added by
celery/celery#10242, "prevent graceful shutdown regression in connection recovery", first
released in 5.7.0). ``collect()`` ends by cutting the transport loose from its connection
(``transport.client = None``). Its close of the default channel usually stops early, because the
channel first reads the reply of its pending ``BRPOP`` from the dead socket, so the channel is
not marked closed; the second ``close()`` then closes it for real, and that close restores the
unacknowledged messages (every task running or reserved) through a new connection pool, whose
parameters kombu reads from ``transport.client.hostname``: ``AttributeError: 'NoneType' object
has no attribute 'hostname'``. Celery ignores only connection and channel errors there, so the
AttributeError ends the worker ("Unrecoverable error": it lets its running tasks finish, leaves
their deliveries unacknowledged and exits). It takes both a delivery held (a task running or
reserved) and a ``BRPOP`` in flight (a free slot) when the connection drops: an idle worker, or
one whose every slot is busy, survives. Celery 5.6 never closed a collected connection.

``Transport`` is kombu's Redis transport whose channels remember their connection parameters, so
that close (and the acknowledgements of tasks that were running across the outage, which go
through the same channel) reach Redis again instead of raising. Select it with Celery's
documented ``broker_transport`` setting (``BROKER_TRANSPORT``); the ``redis://`` or ``rediss://``
URL, its TLS options and the transport options keep working as with kombu's own transport (the
worker's banner and "Connected to" lines then name the transport class instead of ``redis``).

**One client per pool.** kombu builds a new ``redis.Redis`` for every bookkeeping operation of
every delivery (``conn_or_acquire``: the unacknowledged record, the acknowledgement); the channel
here keeps one per connection pool (a client holds no connection of its own and is thread-safe),
and builds a new one when kombu replaces the pool (after a fork, or a lost connection).

**A Redis that refuses writes.** With ``maxmemory`` reached under the ``noeviction`` policy,
Redis refuses every write that could grow its memory, and, inside ``MULTI``, every command; a
primary a failover demoted to a replica refuses every write (``READONLY``) and ends the
``BRPOP`` in flight (``UNBLOCKED``). kombu's bookkeeping is such writes: the unacknowledged
record of a message ``BRPOP`` just took (it is then in no list and nowhere in Redis), its
acknowledgement or its return to the queue, a publish (a retry's next attempt, a rate limit's
later turn) and the queue size and binding it asks for first. Celery treats those refusals
(``ResponseError``s, not connection errors) as unrecoverable: the worker exited, the taken
message with it. Here each of them is made again, with growing pauses, until Redis takes it
(after a replica's refusal on a new connection, which finds the primary the broker's address
names now), or until the worker has been asked to stop (SIGTERM) for 10 s; the wait is logged
once a minute. A ``BRPOP`` ended by a demotion is a lost connection: the consumer reconnects, as
after a restart. What returns other deliveries to their queues is not held up: kombu's periodic
return of those past their visibility timeout skips a refused turn, and the lease thread (which
returns a dead worker's deliveries and sends lost messages again) raises every refusal at once
(``raise_refusals_in_this_thread``), so that its pass fails, the next one tries again, and its
renewals of this worker's own deliveries never wait.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery.worker import state as worker_state
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from contract.tasks import PRIORITIES
from streaming.outage import pause
from worker.observability.logs import ThrottledLog

logger = logging.getLogger("agent_service.worker.broker")
#: A Redis that keeps refusing writes is said once a minute, not once per try.
REFUSED = ThrottledLog(logger)
T = TypeVar("T")

#: The value of Celery's ``broker_transport`` setting that selects this transport.
BROKER_TRANSPORT = "worker.redis_transport:Transport"


#: Refusals that say Redis cannot take a write now, not that the write was wrong: its memory is
#: full, or it is a replica now (a failover demoted it; its name may lead to the new primary).
REFUSALS = (OutOfMemoryError, ReadOnlyError)


#: Seconds a refused write is still tried once the worker was asked to stop (SIGTERM): a stop
#: during a long refusal must not wait for its end (a delivery given up on then stays in
#: kombu's unacknowledged record, or, only if it was not yet recorded, is lost with the worker).
PATIENCE_WHEN_STOPPING = 10.0
#: Threads that must not be held up by a refusing Redis (``raise_refusals_in_this_thread``).
_IMPATIENT = threading.local()


def raise_refusals_in_this_thread() -> None:
    """Make every refused write of the calling thread raise at once instead of waiting: for a
    thread that has other work to keep up (the lease thread's renewals)."""
    _IMPATIENT.active = True


def _stopping() -> bool:
    """Whether the worker was asked to stop (Celery's own test of its shutdown flags)."""
    return any(
        flag is not None and flag is not False
        for flag in (worker_state.should_stop, worker_state.should_terminate)
    )


def until_taken(call: Callable[[], T], *, what: str, pool: Callable[[], Any]) -> T:
    """``call()``, made again while Redis refuses it (``REFUSALS``; see the module). After a
    replica's refusal the idle connections of ``pool()`` are closed, so that the next try
    connects anew and finds the primary the broker's address names now."""
    attempt = 0
    stopping_since: float | None = None
    while True:
        try:
            return call()
        except REFUSALS as exc:
            if getattr(_IMPATIENT, "active", False):
                raise
            if _stopping():
                stopping_since = stopping_since or time.monotonic()
                if time.monotonic() - stopping_since >= PATIENCE_WHEN_STOPPING:
                    raise
            if isinstance(exc, ReadOnlyError):
                pool().disconnect(inuse_connections=False)
            REFUSED.log(
                logging.WARNING,
                "broker_write_refused",
                key=what,
                doing=what,
                error=str(exc),
                hint=_HINTS[type(exc)],
            )
            time.sleep(pause(attempt))
            attempt += 1


_HINTS = {
    OutOfMemoryError: "Redis is at maxmemory: raise it, or free memory",
    ReadOnlyError: "Redis is a replica: waiting for the broker's address to lead to a primary",
}


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation, riding out a Redis that refuses writes (see the
    module)."""

    def _pool_now(self) -> Any:
        channel: Any = self.channel
        return channel.pool

    def append(self, message: Any, delivery_tag: Any) -> None:
        until_taken(
            lambda: super(QoS, self).append(message, delivery_tag),
            what="recording a delivery",
            pool=self._pool_now,
        )

    def ack(self, delivery_tag: Any) -> None:
        until_taken(
            lambda: super(QoS, self).ack(delivery_tag),
            what="acknowledging a delivery",
            pool=self._pool_now,
        )

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        until_taken(
            lambda: super(QoS, self).reject(delivery_tag, requeue=requeue),
            what="returning a delivery to its queue" if requeue else "rejecting a delivery",
            pool=self._pool_now,
        )

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        with contextlib.suppress(*REFUSALS):  # its next turn comes in a few seconds
            super().restore_visible(start=start, num=num, interval=interval)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, which can still open connections after kombu collected its
    transport, and takes the most urgent priority first (see the module's docstring)."""

    #: BRPOP's order: the most urgent first (the transport options cannot reorder it: kombu
    #: needs its steps in ascending order to round a priority down to one).
    priority_steps = sorted(PRIORITIES, reverse=True)

    def priority(self, n: int) -> int:
        """Every priority is a step of its own (kombu rounds down to the nearest step)."""
        return max(min(int(n), PRIORITIES[-1]), PRIORITIES[0])

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        #: The kombu ``Connection`` whose URL, credentials and TLS options this channel uses.
        self._conninfo = connection.client
        #: The synchronous client of ``self.pool``, built on first use (see the module).
        self._pool_client: Any = None
        super().__init__(connection, *args, **kwargs)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool
        client = self._pool_client
        if client is None or client.connection_pool is not pool:
            client = self._pool_client = super()._create_client()  # type: ignore[misc]
        return client

    QoS = QoS

    def _pool_now(self) -> Any:
        return self.pool

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        until_taken(
            lambda: super(Channel, self)._put(queue, message, **kwargs),
            what="publishing a task",
            pool=self._pool_now,
        )

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        until_taken(
            lambda: super(Channel, self)._queue_bind(exchange, routing_key, pattern, queue),  # type: ignore[misc]
            what="declaring a queue",
            pool=self._pool_now,
        )

    def _size(self, queue: str) -> int:
        size: int = until_taken(
            lambda: super(Channel, self)._size(queue),
            what="reading a queue's size",
            pool=self._pool_now,
        )
        return size

    def _brpop_read(self, **options: Any) -> Any:
        """kombu's, where a ``BRPOP`` a demoted primary ends (``UNBLOCKED``, or ``READONLY`` to
        a new one) is a lost connection: the consumer reconnects, as after a restart, instead
        of exiting on the ``ResponseError``."""
        try:
            return super()._brpop_read(**options)  # type: ignore[misc]
        except ResponseError as exc:
            if not isinstance(exc, ReadOnlyError) and not str(exc).startswith("UNBLOCKED"):
                raise
            self.client.connection.disconnect()
            raise RedisConnectionError(f"the broker stopped being a primary: {exc}") from exc

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None:  # closed for good: say so the way kombu's callers expect
            raise RedisConnectionError("the broker channel is closed")
        if transport.client is None:
            # Collected by Celery 5.7's reconnect (celery/celery#10242), then asked for a pool
            # to restore or acknowledge messages: give it back the parameters it was made with.
            transport.client = self._conninfo
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with ``Channel``; the same URLs and options."""

    Channel = Channel
