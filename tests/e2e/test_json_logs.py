"""``LOG_FORMAT=json``: the web and the worker write one JSON object per line, with the task's
ids where known, and never a message, an answer or a token."""

import json
import uuid
from typing import Any

from tests.e2e.conftest import OpsStack
from teststack.llm.control import LLMControl
from teststack.polling import accept
from teststack.processes import ManagedProcess, wait_for
from teststack.sse import events_path, read_stream
from teststack.stack import API_KEYS

#: Celery prints its banner on stdout before logging is set up; everything after it is logged.
BANNER_END = "[tasks]"


def _log_lines(process: ManagedProcess) -> list[str]:
    text = process.output(tail=10**8)
    if BANNER_END in text:  # the worker's banner, then its task list, then a blank line
        text = text.split(BANNER_END, 1)[1].split("\n\n", 1)[1]
    return [line for line in text.splitlines() if line.strip()]


def _objects(lines: list[str]) -> list[dict[str, Any]]:
    objects = []
    for line in lines:
        value = json.loads(line)  # every line is one JSON object
        assert isinstance(value, dict), line
        assert {"time", "level", "logger", "message"} <= set(value), line
        objects.append(value)
    return objects


def test_json_lines_carry_the_task_ids_and_no_text(ops_stack: OpsStack, llm: LLMControl) -> None:
    worker_process = ops_stack.worker
    assert worker_process is not None
    message = f"json-log-message-{uuid.uuid4().hex}"
    answer = f"json-log-answer-{uuid.uuid4().hex}"
    llm.script(message, tokens=[answer])
    accepted = accept(ops_stack.web.client, "simple_llm_agent", message, stream=True)
    # The stream read with its token in the URL, as a browser does: the access log's line.
    events = read_stream(ops_stack.web.client, accepted.stream_url, headers={})
    assert events[-1].event == "result"
    task_id = accepted.task_id
    token = accepted.stream_token

    def logged_outcome() -> bool:
        return f'"task_id": "{task_id}"' in worker_process.output(tail=10**8)

    wait_for(logged_outcome, timeout=15, message="the worker never logged the outcome")
    worker = _objects(_log_lines(worker_process))
    web = _objects(_log_lines(ops_stack.web.process))

    (outcome,) = [
        o for o in worker if o.get("event") == "task_succeeded" and o["task_id"] == task_id
    ]
    assert outcome["agent_id"] == "simple_llm_agent"
    assert outcome["user_id"] == "alice"
    assert outcome["level"] == "INFO"
    assert any(
        o["logger"] == "uvicorn.access" and events_path(task_id) in o["message"] for o in web
    )
    everything = worker_process.output(tail=10**8) + ops_stack.web.process.output(tail=10**8)
    for secret in (message, answer, token, *API_KEYS.values()):
        assert secret not in everything
