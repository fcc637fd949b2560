"""An ``AGENT_MODULES`` entry that forgot its ``AGENTS`` list."""

AGENT = "not a list"
