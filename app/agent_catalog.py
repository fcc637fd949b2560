"""The agents a client may call, as the web process knows them: the built-in ones, and those the
workers' ``AGENT_MODULES`` add, which each worker publishes to Redis when it starts
(``contract.agents``). The web never imports agent code.

The published specs are cached for ``refresh_after`` seconds; an id not in the cache is looked
up again (at most once a second), so an agent is callable as soon as a worker that runs it has
started. Redis not answering leaves the cache as it was: the built-in agents are always known.
"""

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from contract import keys
from contract.agents import BUILTIN_AGENTS, AgentSpec, decode_specs

logger = logging.getLogger("agent_service.web.agents")

#: Least seconds between two lookups caused by an id the cache does not know.
MISS_REFRESH_SECONDS = 1.0


class AgentCatalog:
    def __init__(self, redis: "Redis", *, refresh_after: float = 10.0) -> None:
        self._redis = redis
        self._refresh_after = refresh_after
        self._published: dict[str, AgentSpec] = {}
        self._read_at = float("-inf")

    async def all(self) -> list[AgentSpec]:
        """Every agent, the built-in ones first."""
        await self._refresh(older_than=self._refresh_after)
        published = [spec for key, spec in self._published.items() if key not in BUILTIN_AGENTS]
        return [*BUILTIN_AGENTS.values(), *published]

    async def get(self, agent_id: str) -> AgentSpec | None:
        if agent_id in BUILTIN_AGENTS:
            return BUILTIN_AGENTS[agent_id]
        await self._refresh(older_than=self._refresh_after)
        if agent_id not in self._published:
            await self._refresh(older_than=MISS_REFRESH_SECONDS)
        return self._published.get(agent_id)

    async def _refresh(self, *, older_than: float) -> None:
        now = time.monotonic()
        if now - self._read_at < older_than:
            return
        self._read_at = now
        try:
            fields = await self._redis.hgetall(keys.AGENT_CATALOG)
        except (RedisError, OSError) as exc:
            logger.warning("agent catalogue unavailable (%r); keeping the last one", exc)
            self._read_at = time.monotonic()  # a read that took its time does not start again
            return
        self._published = decode_specs(fields)
