"""Agents: what an invocation runs. ``catalog`` names them (and is safe to import anywhere);
``registry`` builds them; the other modules are the agents and the LLM clients they call."""
