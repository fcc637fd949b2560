"""The agents a client may call, as plain data: what ``GET /api/v1/agents`` lists.

The built-in agents are known to every process. Agents added by ``AGENT_MODULES`` are known to
the workers that load them; each such worker publishes their specs to Redis when it starts
(``contract.keys.AGENT_CATALOG``), and the web process reads them from there: the web never
imports agent code (a plugin's LLM client, its dependencies) to list or accept an agent.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import orjson


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What a client may know about an agent."""

    id: str
    description: str
    needs_llm: bool


BUILTIN_AGENTS: dict[str, AgentSpec] = {
    spec.id: spec
    for spec in (
        AgentSpec(
            id="echo",
            description="Streams your message back word by word. Works offline; the demo agent.",
            needs_llm=False,
        ),
        AgentSpec(
            id="simple_llm_agent",
            description="Answers with the configured OpenAI-compatible LLM (LLM_BASE_URL).",
            needs_llm=True,
        ),
    )
}


def encode_specs(specs: Iterable[AgentSpec]) -> dict[str, bytes]:
    """Specs as the fields of the published catalogue hash (id -> JSON)."""
    return {spec.id: orjson.dumps(asdict(spec)) for spec in specs}


def decode_specs(fields: Mapping[bytes | str, bytes | str]) -> dict[str, AgentSpec]:
    """The published catalogue hash back as specs; a field that is not a spec is skipped."""
    specs: dict[str, AgentSpec] = {}
    for raw in fields.values():
        try:
            value = orjson.loads(raw)
            spec = AgentSpec(
                id=str(value["id"]),
                description=str(value["description"]),
                needs_llm=bool(value["needs_llm"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        specs[spec.id] = spec
    return specs
