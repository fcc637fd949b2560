"""How late the shared event loop wakes up, and who was running when it stalled.

On the shared loop one blocking call (a synchronous client, a CPU-heavy parse) holds up every
task of the worker process. The monitor sleeps a short interval over and over; how much later
than asked it wakes is the loop's lag. A lag above the threshold is logged with the ids of the
tasks running at the time (one of them blocked the loop), and the latest lag is kept for metrics.
"""

import logging
from collections.abc import Callable, Collection

import anyio

from worker.observability.logs import log_event

logger = logging.getLogger("agent_service.worker.loop")


class LoopLagMonitor:
    def __init__(
        self,
        *,
        threshold: float,
        running: Callable[[], Collection[str]],
        interval: float = 0.05,
    ) -> None:
        self._threshold = threshold
        self._running = running
        self._interval = interval
        #: The lag of the latest wake-up, in seconds.
        self.lag = 0.0
        #: The longest lag seen since the monitor started, in seconds.
        self.max_lag = 0.0

    async def run(self) -> None:
        while True:
            started = anyio.current_time()
            await anyio.sleep(self._interval)
            self.lag = max(0.0, anyio.current_time() - started - self._interval)
            self.max_lag = max(self.max_lag, self.lag)
            if self.lag >= self._threshold:
                log_event(
                    logger,
                    logging.WARNING,
                    "event_loop_blocked",
                    lag_ms=round(self.lag * 1000),
                    tasks=",".join(sorted(self._running())) or None,
                )
