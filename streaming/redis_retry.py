"""What an async Redis client does with a connection that died while it sat in the pool.

After Redis restarts (or fails over), every connection a pool holds is dead, and nothing finds
out until a command is sent on it. A ``redis.asyncio`` client built on a pool of our own
(``BlockingConnectionPool(...)`` then ``Redis(connection_pool=pool)``) does not retry at all:
redis-py gives such connections ``Retry(NoBackoff(), 0)``, unlike the clients it builds itself.
So the first command on each dead connection failed (a 503 for the first submissions after a
restart). With ``retry=reconnect_retry()`` in the pool's options, a command that fails with a
connection error or a timeout is sent again on a new connection, after a short pause.

The retry covers a dead connection, not an outage: while Redis is down the command still fails
after a second at most, and the caller says so (503, a retried read, a task that waits). A client
with a socket timeout that must answer within it (the web's requests) retries connection errors
only (``on_timeout=False``): a Redis that stops answering would otherwise cost each command three
timeouts, and each new connection's handshake three more.
"""

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Attempts after the first: one for the dead connection, one for a server still loading.
RETRIES = 2
#: Pause before the first retry and the most any pause may be (seconds).
BASE_DELAY = 0.05
MAX_DELAY = 0.5


def reconnect_retry(*, on_timeout: bool = True) -> Retry:
    """A new retry policy for one pool (redis-py copies it into each connection)."""
    errors: tuple[type[Exception], ...] = (RedisConnectionError,)
    if on_timeout:
        errors += (RedisTimeoutError,)
    return Retry(
        ExponentialWithJitterBackoff(cap=MAX_DELAY, base=BASE_DELAY),
        RETRIES,
        supported_errors=errors,  # type: ignore[arg-type]
    )
