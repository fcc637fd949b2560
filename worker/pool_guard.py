"""Which Celery pools can run the agents, and the one clear refusal for those that cannot.

The agents' work runs on asyncio event loops (``worker.runtime``). Celery's green pools (gevent,
eventlet) run every task as a greenlet of one OS thread, and asyncio keeps one running loop per
OS thread, so the tasks' loops trip over each other:

- a loop per task on asyncio's own loop: a task whose loop starts while another's runs fails
  (``Cannot run the event loop while another loop is running``, or ``Already running asyncio in
  this thread``), and is retried until it happens to run alone;
- a loop per task on uvloop (the default): uvloop blocks the thread in its own poll, so the
  tasks run one after the other, hundreds of times slower than in the threads pool;
- one shared loop (``AGENT_EVENT_LOOP=shared``): on uvloop the worker hangs; on asyncio's own
  loop it runs, but only because gevent patched the selector, without uvloop, and with every
  blocking call the loop hands to a thread running as a greenlet of that same thread (a blocking
  C call, such as SQLite's, stops every task). The threads pool runs the same loop without any
  of that.

The threads pool with the shared loop is what the green pools were for (a hundred I/O-bound
tasks in one process, on one event loop), so a worker started with a green pool stops at once
with one line that says what to use instead, rather than failing or crawling through its tasks.
"""

import os
import sys

#: Pool modules or names whose tasks are greenlets sharing one OS thread.
GREEN_POOLS = ("gevent", "eventlet")

REFUSAL = (
    "agent-service: the {pool} pool cannot run the agents: their asyncio event loops share one "
    "OS thread under {pool}, so tasks fail ('Already running asyncio in this thread') or stall. "
    "Start the worker with --pool threads (one shared event loop serves every task of the "
    "process: the I/O-bound set-up {pool} is meant for), or --pool prefork."
)


#: The exit status of a refused worker: a configuration error (``EX_CONFIG``).
EXIT_STATUS = getattr(os, "EX_CONFIG", 78)


class UnsupportedPoolError(SystemExit):
    """Stops the worker at start-up (a ``SystemExit``: Celery logs and ignores the ``Exception``
    a signal handler raises, which would leave the worker running its tasks into failure)."""


def green_pool_name(pool: object) -> str | None:
    """``gevent`` or ``eventlet`` when ``pool`` (a pool class, its dotted name or its alias) is
    one of Celery's green pools; None otherwise."""
    text = pool if isinstance(pool, str) else getattr(pool, "__module__", "") or repr(pool)
    lowered = text.lower()
    for name in GREEN_POOLS:
        if name in lowered:
            return name
    return None


def refuse_green_pool(pool: object) -> None:
    """If ``pool`` is a green pool, write the refusal line to stderr (the last thing an operator
    sees, whatever the logging set-up) and raise ``UnsupportedPoolError`` (exit status 78).

    Call it from the ``worker_init`` signal with the worker's ``pool_cls``.
    """
    name = green_pool_name(pool)
    if name is None:
        return
    print(REFUSAL.format(pool=name), file=sys.stderr, flush=True)
    raise UnsupportedPoolError(EXIT_STATUS)
