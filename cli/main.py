"""The ``agent-service`` command: ``agents``, ``invoke``, ``tail``, ``status`` and ``cancel``.

typer turns these functions into commands (options from their type hints, each readable from
an environment variable), and rich draws on the terminal. ``cli.errors`` says which exit status
each failure ends with; ``follow_task`` is shared by ``invoke`` and ``tail``, including what
Ctrl-C does while a task streams: ask whether to cancel the task or detach from it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text

from cli.client import ServiceClient
from cli.config import DEFAULT_URL, KEY_VARIABLE, URL_VARIABLE, ClientConfig
from cli.errors import CliError, ConfigurationError, ExitCode
from cli.events import Answer
from cli.follow import Follower
from cli.output import PlainPrinter, Printer, TerminalPrinter, describe_failure, describe_usage

app = typer.Typer(
    name="agent-service",
    help="Ask the agents of an agent-service deployment, and follow their tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar=URL_VARIABLE,
        help=f"Where the service is (default: {DEFAULT_URL}).",
        show_default=False,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=KEY_VARIABLE,
        help="Your API key (prefer the environment variable: flags end up in shell history).",
        show_default=False,
    ),
]
ReconnectOption = Annotated[
    float,
    typer.Option(
        "--reconnect-for",
        min=0,
        help="Seconds to keep reconnecting to a stream whose connection dropped.",
    ),
]
#: Longest task id the service issues or accepts.
MAX_TASK_ID = 64


def _task_id(value: str) -> str:
    if len(value) > MAX_TASK_ID:
        raise typer.BadParameter(
            f"{value[:20]!r}... is not a task id: ids are at most {MAX_TASK_ID} characters"
        )
    return value


TaskIdArgument = Annotated[
    str, typer.Argument(help="The task's id, as invoke printed it.", callback=_task_id)
]


def _message_text(message: str) -> str:
    """The message to send (``-``: read from stdin), refused unless it is UTF-8 text (bytes
    that are not arrive as lone surrogates, which no JSON encoder writes)."""
    try:
        if message == "-":
            message = sys.stdin.read()
        message.encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise ConfigurationError("the message is not valid UTF-8 text; nothing was sent") from None
    return message


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


@contextmanager
def _client(url: str | None, api_key: str | None) -> Iterator[ServiceClient]:
    """A client for the command, its failures printed on stderr and turned into the exit
    status each stands for."""
    try:
        with ServiceClient(ClientConfig.resolve(url=url, api_key=api_key)) as client:
            yield client
    except CliError as exc:
        _stderr().print(Text(f"agent-service: {exc}", style="red"))
        raise typer.Exit(exc.exit_code) from None


@app.command()
def agents(url: UrlOption = None, api_key: KeyOption = None) -> None:
    """List the agents you can invoke."""
    with _client(url, api_key) as client:
        listed = client.agents()
    out = _stdout()
    if not out.is_terminal:
        for agent in listed:
            print(f"{agent['id']}\t{agent['description']}")
        return
    table = Table("agent", "description", box=None, header_style="bold")
    for agent in listed:
        table.add_row(agent["id"], agent["description"])
    out.print(table)


@app.command()
def invoke(
    agent: Annotated[str, typer.Argument(help="The agent's id (see `agent-service agents`).")],
    message: Annotated[str, typer.Argument(help="What to ask; - reads it from stdin.")],
    session: Annotated[
        str | None, typer.Option("--session", help="Continue this session's conversation.")
    ] = None,
    no_stream: Annotated[
        bool,
        typer.Option("--no-stream", help="Run without streaming; print the answer once done."),
    ] = False,
    reconnect_for: ReconnectOption = 60.0,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Ask an agent and print its answer as it streams (progress on stderr in a terminal)."""
    with _client(url, api_key) as client:
        message = _message_text(message)
        accepted = client.invoke(agent, message, session_id=session, stream=not no_stream)
        code = follow_task(
            client, accepted["task_id"], show_text=not no_stream, reconnect_for=reconnect_for
        )
    raise typer.Exit(code)


@app.command()
def tail(
    task_id: TaskIdArgument,
    reconnect_for: ReconnectOption = 60.0,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Follow a task's answer from its start to its end (a finished task's is replayed)."""
    with _client(url, api_key) as client:
        code = follow_task(client, task_id, show_text=True, reconnect_for=reconnect_for)
    raise typer.Exit(code)


@app.command()
def status(
    task_id: TaskIdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Show where a task stands: status, progress, error, usage."""
    with _client(url, api_key) as client:
        found = client.status(task_id)
    if as_json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return
    _stdout().print(Text("\n".join(_status_lines(found))))


def _status_lines(found: dict[str, Any]) -> list[str]:
    lines = [
        f"task      {found['task_id']}",
        f"status    {found['status']} ({found['state']})",
        f"progress  {found['progress']}%" + (f" {found['stage']}" if found.get("stage") else ""),
    ]
    if found.get("error"):
        lines.append(f"error     {describe_failure(found['error'])}")
    result = found.get("result")
    if isinstance(result, dict):
        usage = describe_usage(result.get("usage"))
        if usage:
            lines.append(f"usage     {usage}")
        content = result.get("content")
        if isinstance(content, str):
            lines.append(f"answer    {len(content)} characters (agent-service tail shows it)")
    return lines


@app.command()
def cancel(task_id: TaskIdArgument, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel a task: a queued one never runs, a running one stops within moments."""
    with _client(url, api_key) as client:
        found = client.cancel(task_id)
    if found["status"] in {"completed", "failed", "cancelled"}:
        print(f"task {task_id} had already ended ({found['status']}): nothing to cancel")
    else:
        print(f"cancel requested: task {task_id} was {found['status']}")


class AfterInterrupt(StrEnum):
    CANCEL = "c"
    DETACH = "d"
    RESUME = "r"


def _ask_after_interrupt(err: Console, task_id: str) -> AfterInterrupt:
    """Cancel, detach or resume? Detach when nobody can answer (stdin is not a terminal), and
    on a second Ctrl-C or end of input."""
    if not sys.stdin.isatty():
        return AfterInterrupt.DETACH
    try:
        answer = Prompt.ask(
            Text(
                f"\nTask {task_id} is still running. [c]ancel it, [d]etach (it keeps running) "
                "or [r]esume watching?"
            ),
            choices=[choice.value for choice in AfterInterrupt],
            default=AfterInterrupt.DETACH.value,
            console=err,
        )
    except (KeyboardInterrupt, EOFError):
        return AfterInterrupt.DETACH
    return AfterInterrupt(answer)


def follow_task(
    client: ServiceClient, task_id: str, *, show_text: bool, reconnect_for: float
) -> ExitCode:
    """Print the task's answer until its terminal event; the exit status its outcome means."""
    err = _stderr()
    printer: Printer
    if sys.stdout.isatty() and err.is_terminal and not err.is_dumb_terminal:
        printer = TerminalPrinter(sys.stdout, err, task_id=task_id, show_text=show_text)
    else:
        printer = PlainPrinter(sys.stdout, err, show_text=show_text)
    answer = Answer()
    follower = Follower(client, task_id, reconnect_for=reconnect_for, on_retry=printer.retrying)
    while not answer.finished:
        try:
            for event in follower.events():
                printer.update(answer, answer.apply(event))
        except KeyboardInterrupt:
            printer.hide()
            choice = _ask_after_interrupt(err, task_id)
            if choice is AfterInterrupt.DETACH:
                printer.finish(answer)
                err.print(
                    Text(
                        f"agent-service: detached; task {task_id} keeps running "
                        f"(`agent-service tail {task_id}` follows it, "
                        f"`agent-service cancel {task_id}` stops it)"
                    )
                )
                return ExitCode.DETACHED
            if choice is AfterInterrupt.CANCEL:
                client.cancel(task_id)
                printer.note("cancel requested; waiting for the task to stop")
    printer.finish(answer)
    return _outcome(err, answer, task_id)


def _outcome(err: Console, answer: Answer, task_id: str) -> ExitCode:
    outcome = answer.outcome
    assert outcome is not None
    if outcome.type == "result":
        return ExitCode.OK
    if outcome.type == "cancelled":
        err.print(Text(f"agent-service: task {task_id} was cancelled", style="yellow"))
        return ExitCode.TASK_CANCELLED
    failure = describe_failure(outcome.data)
    err.print(Text(f"agent-service: task {task_id} failed: {failure}", style="red"))
    return ExitCode.TASK_FAILED


def main() -> None:
    app()
