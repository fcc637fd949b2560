"""``simple_llm_agent``: the user's message (after the session's earlier turns) sent to the
configured OpenAI-compatible LLM, its answer streamed back as it is generated."""

from worker.agents.base import AgentReply, AgentRequest, ChatMessage, ChunkSink
from worker.agents.openai_client import OpenAICompatibleClient


class SimpleLLMAgent:
    def __init__(self, client: OpenAICompatibleClient, *, system_prompt: str | None = None) -> None:
        self._client = client
        self._system_prompt = system_prompt

    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply:
        messages: list[ChatMessage] = []
        if self._system_prompt:
            messages.append(ChatMessage(role="system", content=self._system_prompt))
        messages.extend(request.history)
        messages.append(ChatMessage(role="user", content=request.message))
        completion = await self._client.stream_chat(messages, on_chunk=on_chunk)
        return AgentReply(
            content=completion.content,
            usage=completion.usage,
            metadata={"model": completion.model, "finish_reason": completion.finish_reason},
        )
