"""A task's events as the CLI reads them, and the answer they build.

``Answer.apply`` is the whole of the stream protocol as the CLI understands it: a ``chunk``
appends, a ``reset`` replaces, ``progress`` and ``status`` move the progress bar, and ``result``,
``error`` and ``cancelled`` end it. It says what changed in the text, so a printer can show just
that. A type it does not know changes nothing: new event types never break the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TERMINAL = frozenset({"result", "error", "cancelled"})


@dataclass(frozen=True)
class TaskEvent:
    id: str
    type: str
    data: Any

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


@dataclass(frozen=True)
class TextChange:
    """How the answer's text changed: ``appended`` to it, or all of it ``replaced``."""

    appended: str = ""
    replaced: str | None = None


@dataclass
class Answer:
    """The answer so far, and where the task stands."""

    text: str = ""
    status: str = "queued"
    progress: int = 0
    stage: str = ""
    attempt: int = 1
    outcome: TaskEvent | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def apply(self, event: TaskEvent) -> TextChange | None:
        """Take in one event; the change to the text, if any."""
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "chunk" and isinstance(data.get("text"), str):
            self.text += data["text"]
            return TextChange(appended=data["text"])
        if event.type == "reset" and isinstance(data.get("content"), str):
            self.attempt = data.get("attempt", self.attempt)
            return self._replace(data["content"])
        if event.type == "progress":
            self._progress(data)
        elif event.type == "status" and isinstance(data.get("status"), str):
            self.status = data["status"]
            if isinstance(data.get("attempt"), int):
                self.attempt = data["attempt"]
        elif event.type in TERMINAL:
            self.outcome = event
            self.status = {"result": "completed", "error": "failed"}.get(event.type, event.type)
            if event.type == "result":
                self.progress, self.stage = 100, "completed"
            content = data.get("content")
            if isinstance(content, str) and content != self.text:
                return self._replace(content)
        return None

    def _replace(self, content: str) -> TextChange:
        if content.startswith(self.text):
            # What we hold is the start of it (a late cursor's reset): only the rest is new.
            change = TextChange(appended=content[len(self.text) :])
        else:
            change = TextChange(replaced=content)
        self.text = content
        return change

    def _progress(self, data: dict[str, Any]) -> None:
        progress = data.get("progress")
        if isinstance(progress, int | float) and not isinstance(progress, bool):
            self.progress = max(0, min(100, round(progress)))
        if isinstance(data.get("stage"), str):
            self.stage = data["stage"]
