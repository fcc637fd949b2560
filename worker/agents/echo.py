"""The echo agent: streams the user's message back word by word, with no LLM at all.

It is the demo that works offline and the agent the tests use to check the pipeline without an LLM
in the way. The pause between words makes the streaming visible in a terminal.
"""

import anyio

from worker.agents.base import AgentReply, AgentRequest, ChunkSink


class EchoAgent:
    def __init__(self, *, word_delay: float) -> None:
        self._word_delay = word_delay

    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply:
        words = request.message.split()
        for index, word in enumerate(words):
            if self._word_delay and index:
                await anyio.sleep(self._word_delay)
            await on_chunk(word if index == 0 else f" {word}")
        count = len(words)
        return AgentReply(
            content=" ".join(words),
            usage={"prompt_tokens": count, "completion_tokens": count, "total_tokens": 2 * count},
            metadata={"finish_reason": "stop"},
        )
