"""Agents: what an invocation runs. ``registry`` builds them by id (the built-in ones and those
of ``AGENT_MODULES``, loaded by ``plugins``); ``invocation`` runs one, with its ``progress`` and
its session's memory (``session_memory``); the other modules are the agents and the LLM client
they call."""
