"""The broker connection the worker's Celery app opens: kombu's, reconnecting sooner.

Celery's consumer reconnects after a lost broker with kombu's ``ensure_connection`` and its
default pauses: 2 s, then 4, 6 ... up to 30 s between attempts. A Redis restart or failover lasts
a second or two, so its first retry usually meets a closed port and the second comes 4 s later:
a worker took new tasks again about 4 s after Redis was back. Here the pauses start at 0.25 s and
grow by 0.25 s to at most 2 s, so a worker is back within about a second of Redis, and a long
outage costs one connection attempt (and one log line) every 2 s. Only the defaults change: a
caller that passes its own pauses keeps them.
"""

from typing import Any

from celery.app.amqp import AMQP
from kombu import Connection

#: Seconds before the first reconnect attempt, added per attempt, and the most between two.
FIRST_PAUSE, PAUSE_STEP, LONGEST_PAUSE = 0.25, 0.25, 2.0


class BrokerConnection(Connection):
    """kombu's ``Connection`` whose reconnect pauses default to the ones above."""

    def _ensure_connection(  # type: ignore[override]  # kombu's stubs say int; floats work
        self,
        errback: Any = None,
        max_retries: int | None = None,
        interval_start: float = FIRST_PAUSE,
        interval_step: float = PAUSE_STEP,
        interval_max: float = LONGEST_PAUSE,
        **kwargs: Any,
    ) -> Any:
        ensure: Any = super()._ensure_connection
        return ensure(errback, max_retries, interval_start, interval_step, interval_max, **kwargs)


class BrokerAMQP(AMQP):
    """Celery's messaging layer, opening ``BrokerConnection``s (Celery's ``amqp`` argument)."""

    Connection = BrokerConnection
    BrokerConnection = BrokerConnection


#: The value of Celery's ``amqp`` argument that selects ``BrokerAMQP``.
BROKER_AMQP = "worker.broker_connection:BrokerAMQP"
