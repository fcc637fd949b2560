"""Printing a followed task: its answer on stdout, everything about it on stderr.

``TerminalPrinter`` (stdout and stderr are a terminal) shows the answer as it streams above a
progress bar with the stage (``cli.terminal``), and a closing line with the usage. ``PlainPrinter``
(stdout is a pipe or a file) writes the answer's text as it arrives and nothing else; stderr
hears only of trouble. With ``show_text=False`` (``--no-stream``) either prints the whole answer
once, when the task completes.

Text on stdout cannot be taken back. When a reset replaces an answer of which whole lines were
already printed (a retry after the LLM failed mid-answer), the new attempt is printed after a
newline, with a note on stderr; ``--no-stream`` gives exactly the final answer.
"""

from __future__ import annotations

from typing import Protocol, TextIO

from rich.console import Console
from rich.text import Text

from cli.errors import CliError
from cli.events import Answer, TextChange
from cli.terminal import LiveRegion


class Printer(Protocol):
    def update(self, answer: Answer, change: TextChange | None) -> None: ...
    def retrying(self, error: CliError, pause: float) -> None: ...
    def note(self, message: str) -> None: ...
    def hide(self) -> None: ...
    def finish(self, answer: Answer) -> None: ...


def describe_usage(usage: object) -> str:
    if not isinstance(usage, dict):
        return ""
    names = ("prompt_tokens", "completion_tokens", "total_tokens")
    prompt, completion, total = (usage.get(name) for name in names)
    if isinstance(total, int) and isinstance(prompt, int) and isinstance(completion, int):
        return f"{prompt} prompt + {completion} completion = {total} tokens"
    if isinstance(total, int):
        return f"{total} tokens"
    return ""


def describe_failure(data: object) -> str:
    if isinstance(data, dict) and data.get("type") and data.get("message"):
        return f"{data['type']}: {data['message']}"
    return "the task failed"


def _label(answer: Answer) -> str:
    if answer.status != "running":
        return answer.status
    status = f"running (attempt {answer.attempt})" if answer.attempt > 1 else "running"
    return f"{status} · {answer.stage}" if answer.stage else status


class PlainPrinter:
    def __init__(self, out: TextIO, err: Console, *, show_text: bool = True) -> None:
        self.out = out
        self.err = err
        self.show_text = show_text
        self.printed = False  # some of the answer is on stdout
        self.line_open = False  # and its last line has no newline yet
        self.retry_note = ""

    def update(self, answer: Answer, change: TextChange | None) -> None:
        self.retry_note = ""
        if change is None or not self.show_text:
            return
        if change.replaced is not None:
            if self.printed:
                self.note(f"attempt {answer.attempt} starts the answer over")
                self._write("\n")
            self._write(change.replaced)
        else:
            self._write(change.appended)

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.printed = True
            self.line_open = not text.endswith("\n")

    def retrying(self, error: CliError, pause: float) -> None:
        if str(error) != self.retry_note:  # once per kind of trouble, not at every attempt
            self.retry_note = str(error)
            self.note(f"{error} (trying again)")

    def note(self, message: str) -> None:
        self.err.print(Text(f"agent-service: {message}"), soft_wrap=True)

    def hide(self) -> None:
        """Nothing is drawn: nothing to hide."""

    def finish(self, answer: Answer) -> None:
        if not self.show_text and answer.text:
            self._write(answer.text)
        if self.line_open:
            self._write("\n")


class TerminalPrinter:
    def __init__(self, out: TextIO, err: Console, *, task_id: str, show_text: bool = True):
        self.err = err
        self.show_text = show_text
        self.task_id = task_id
        self.region = LiveRegion(out, err)
        self.region.note(Text(f"task {task_id}", style="dim"))
        self.retry_note = ""

    def update(self, answer: Answer, change: TextChange | None) -> None:
        self.retry_note = ""
        if change is not None and self.show_text:
            if change.replaced is not None:
                self.region.discard_partial()
                if self.region.lines_written:
                    self.region.note(
                        Text(f"attempt {answer.attempt} starts the answer over", style="yellow")
                    )
                self.region.write(change.replaced)
            else:
                self.region.write(change.appended)
        self.region.set_progress(answer.progress, _label(answer))

    def retrying(self, error: CliError, pause: float) -> None:
        if str(error) != self.retry_note:  # once per kind of trouble, not at every attempt
            self.retry_note = str(error)
            self.region.note(Text(f"{error} (trying again)", style="yellow"))

    def note(self, message: str) -> None:
        self.region.note(Text(message, style="dim"))

    def hide(self) -> None:
        self.region.hide()

    def finish(self, answer: Answer) -> None:
        if not self.show_text:
            self.region.write(answer.text)
        self.region.close()
        outcome = answer.outcome
        if outcome is None:
            return
        if outcome.type == "result":
            usage = describe_usage(outcome.data.get("usage"))
            text = "completed" + (f" · {usage}" if usage else "")
            self.err.print(Text(f"✓ {text}", style="green"), soft_wrap=True)
