"""The agents this service offers, as plain data.

This is the one worker module the web process may import: it decides ``GET /api/v1/agents`` and
answers 404 for an unknown agent before anything is queued, without loading task bodies or LLM
clients. ``registry`` maps the same ids to implementations, and a test keeps the two in step.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What a client may know about an agent."""

    id: str
    description: str
    needs_llm: bool


AGENT_CATALOG: dict[str, AgentSpec] = {
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
