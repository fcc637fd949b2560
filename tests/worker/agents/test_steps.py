"""Agents that report their own steps: stages with progress, tool calls and their results."""

from typing import Any

import pytest

from contract.events import EventType
from worker.agents.base import AgentReply, AgentRequest, ChunkSink, StepReporter
from worker.agents.progress import ProgressTracker
from worker.agents.steps import AgentSteps, takes_steps

pytestmark = pytest.mark.anyio


class Stream:
    """Records what would go to the task's stream: progress reports and queued events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], bool]] = []

    async def report(self, meta: dict[str, Any], *, urgent: bool = True) -> None:
        self.events.append(("progress", meta, urgent))

    async def queue(self, kind: EventType, payload: dict[str, Any]) -> None:
        self.events.append((kind.value, payload, False))


def _steps(stream: Stream) -> tuple[AgentSteps, ProgressTracker]:
    tracker = ProgressTracker(stream.report, stage="starting", progress=5)
    return AgentSteps(stream.queue, progress=tracker), tracker


async def test_stages_carry_progress_that_never_goes_back_and_stays_below_100() -> None:
    stream = Stream()
    steps, _ = _steps(stream)

    await steps.stage("searching", progress=40, detail="three sources")
    await steps.stage("reading", progress=20)
    await steps.stage("writing", progress=250)
    await steps.stage("checking")

    assert [meta for _, meta, _ in stream.events] == [
        {"progress": 40, "stage": "searching", "detail": "three sources"},
        {"progress": 40, "stage": "reading"},
        {"progress": 99, "stage": "writing"},
        {"progress": 99, "stage": "checking"},
    ]
    assert not any(urgent for _, _, urgent in stream.events)  # coalesced with the next batch


async def test_once_the_agent_reports_a_stage_chunk_counting_no_longer_moves_progress() -> None:
    stream = Stream()
    steps, tracker = _steps(stream)

    await tracker.chunks(1)  # before: the fallback reports
    await steps.stage("drafting", progress=30)
    for count in range(2, 60):
        await tracker.chunks(count)

    assert [meta["stage"] for _, meta, _ in stream.events] == ["generating", "drafting"]


async def test_tool_calls_and_results_become_events_with_bounded_summaries() -> None:
    stream = Stream()
    steps, _ = _steps(stream)

    await steps.tool_call("call-1", "calculator", {"expression": "2+2"})
    await steps.tool_result("call-1", ok=True, summary="4" * 2000)

    (call, result) = stream.events
    assert call[:2] == (
        "tool_call",
        {"id": "call-1", "name": "calculator", "arguments": {"expression": "2+2"}},
    )
    assert result[0] == "tool_result"
    assert result[1]["ok"] is True
    assert len(result[1]["summary"]) == 500


class Plain:
    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply:
        return AgentReply(content="")


class Stepping:
    async def run(
        self, request: AgentRequest, *, on_chunk: ChunkSink, steps: StepReporter
    ) -> AgentReply:
        return AgentReply(content="")


def test_only_agents_that_declare_steps_get_them() -> None:
    assert takes_steps(Stepping.run)
    assert not takes_steps(Plain.run)
