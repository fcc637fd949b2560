"""The echo agent, with no pause between words."""

import pytest

from worker.agents.base import AgentReply, AgentRequest
from worker.agents.echo import EchoAgent

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def __call__(self, text: str, /) -> None:
        self.chunks.append(text)


async def echo(message: str) -> tuple[list[str], AgentReply]:
    sink = Recorder()
    request = AgentRequest(agent_id="echo", message=message, user_id="alice")
    reply = await EchoAgent(word_delay=0).run(request, on_chunk=sink)
    return sink.chunks, reply


async def test_echo_streams_words_with_leading_space_after_first() -> None:
    chunks, reply = await echo("hello brave new world")

    assert chunks == ["hello", " brave", " new", " world"]
    assert reply.content == "hello brave new world"
    assert "".join(chunks) == reply.content


async def test_echo_joins_words_with_single_spaces_when_message_has_extra_whitespace() -> None:
    chunks, reply = await echo("  hello \n\t  world  ")

    assert chunks == ["hello", " world"]
    assert reply.content == "hello world"


async def test_echo_sends_one_chunk_without_space_when_message_is_one_word() -> None:
    chunks, reply = await echo("hi")

    assert chunks == ["hi"]
    assert reply.content == "hi"


async def test_echo_counts_words_as_tokens_in_usage() -> None:
    _, reply = await echo("one two three four five")

    assert reply.usage == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert reply.metadata == {"finish_reason": "stop"}
