"""A delivery whose every view leaves out the user's message and the answer.

Celery shows a task's arguments in its ``task-received`` event (what Flower lists), in
``celery inspect active|reserved|query_task`` (``Request.info``) and in its "received" log line,
and a repr of the return value in its ``task-succeeded`` event. The web sends a redacted repr with
each task (``contract.task_repr``), but any Celery producer may send an agent task, with Celery's
own repr of its kwargs, message included. So for agent tasks the request puts the redacted reprs
in place of whatever the message carried, before anything reads them, and every event it sends
carries ``RESULT_REPR`` instead of the result.
"""

from typing import Any

from celery.worker.request import Request

from contract.task_repr import RESULT_REPR, agent_args_repr, agent_kwargs_repr
from contract.tasks import AGENT_TASK_PREFIX


class RedactedRequest(Request):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redacted = str(self.name).startswith(AGENT_TASK_PREFIX)
        if self._redacted:
            self._argsrepr = agent_args_repr(self.args)
            self._kwargsrepr = agent_kwargs_repr(self.kwargs)

    def info(self, safe: bool = False) -> Any:
        """What ``celery inspect`` shows: the redacted reprs even when asked for the values."""
        info = super().info(safe)
        if self._redacted:
            info["args"] = self._argsrepr
            info["kwargs"] = self._kwargsrepr
        return info

    def send_event(self, type: str, **fields: Any) -> None:
        if self._redacted and "result" in fields:
            fields["result"] = RESULT_REPR
        super().send_event(type, **fields)
