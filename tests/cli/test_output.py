"""``PlainPrinter``: what a pipe receives, and what stderr hears."""

import io

from rich.console import Console

from cli.client import ConnectionLostError
from cli.events import Answer, TaskEvent
from cli.output import PlainPrinter


def _printer(*, show_text: bool = True) -> tuple[PlainPrinter, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    console = Console(file=err, width=200, color_system=None)
    return PlainPrinter(out, console, show_text=show_text), out, err


def _feed(printer: PlainPrinter, answer: Answer, *events: tuple[str, object]) -> None:
    for number, (type_, data) in enumerate(events):
        printer.update(answer, answer.apply(TaskEvent(id=f"{number}-0", type=type_, data=data)))


def test_plain_printer_writes_the_text_as_it_comes_and_ends_the_line() -> None:
    printer, out, err = _printer()
    answer = Answer()

    _feed(printer, answer, ("chunk", {"text": "Hello"}), ("progress", {"progress": 50}))
    assert out.getvalue() == "Hello"
    _feed(printer, answer, ("chunk", {"text": " world"}), ("result", {"content": "Hello world"}))
    printer.finish(answer)

    assert out.getvalue() == "Hello world\n"
    assert err.getvalue() == ""


def test_plain_printer_starts_a_new_attempt_on_a_new_line_and_says_so() -> None:
    printer, out, err = _printer()
    answer = Answer()

    _feed(
        printer,
        answer,
        ("chunk", {"text": "Half"}),
        ("reset", {"attempt": 2, "content": ""}),
        ("chunk", {"text": "Whole answer"}),
        ("result", {"content": "Whole answer"}),
    )
    printer.finish(answer)

    assert out.getvalue() == "Half\nWhole answer\n"
    assert err.getvalue() == "agent-service: attempt 2 starts the answer over\n"


def test_plain_printer_without_streaming_prints_the_answer_once_at_the_end() -> None:
    printer, out, _ = _printer(show_text=False)
    answer = Answer()

    _feed(printer, answer, ("chunk", {"text": "Hel"}), ("result", {"content": "Hello"}))
    assert out.getvalue() == ""
    printer.finish(answer)

    assert out.getvalue() == "Hello\n"


def test_plain_printer_notes_each_kind_of_trouble_once() -> None:
    printer, _, err = _printer()
    down = ConnectionLostError("cannot reach the service")

    for _ in range(5):
        printer.retrying(down, 1.0)

    assert err.getvalue() == "agent-service: cannot reach the service (trying again)\n"
