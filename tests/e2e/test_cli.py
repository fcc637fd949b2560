"""The ``agent-service`` command, installed as a console script, against the real stack: piped
(plain text) and in a pseudo-terminal (answer above a progress bar, read back from a terminal
emulator), Ctrl-C, a web process restarted under ``tail``, and every refusal's exit status."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pexpect
import pyte
import pytest

from cli.errors import ExitCode
from scripts.embedded_redis import free_port
from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import poll_until_done, submit
from teststack.processes import wait_for
from teststack.stack import API_KEYS, headers_for, start_web
from teststack.web_restart import RestartableWeb

pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).with_name("agent-service")
COLUMNS, LINES = 100, 24
#: Where the CLI's redraws begin: at each escape sequence (cursor up, clear to the end).
_REDRAW = re.compile(rb"(?=\x1b\[)")


def _env(url: str, *, key: str = API_KEYS["alice"]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES", "NO_COLOR"}}
    return {**env, "AGENT_SERVICE_URL": url, "AGENT_SERVICE_API_KEY": key, "TERM": "xterm"}


def _run(url: str, *args: str, key: str = API_KEYS["alice"]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        env=_env(url, key=key),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class PipedRun:
    """The command with stdout and stderr on pipes, read as they arrive."""

    def __init__(self, url: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [str(CLI), *args],
            env=_env(url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.reads: list[bytes] = []
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while data := os.read(self.process.stdout.fileno(), 65536):
            self.reads.append(data)

    @property
    def stdout(self) -> str:
        return b"".join(self.reads).decode()

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return code


class TerminalRun:
    """The command in a pseudo-terminal, its screen kept by a terminal emulator."""

    def __init__(self, url: str, *args: str) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self._stream = pyte.ByteStream(self.screen)
        # Without an encoding, pexpect reads bytes (which the stubs cannot infer).
        self.child: pexpect.spawn[bytes] = pexpect.spawn(
            str(CLI), list(args), env=_env(url), dimensions=(LINES, COLUMNS), timeout=30
        )
        self.screens: list[str] = []

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    def _pump(self) -> list[str] | None:
        """Read what there is and return the screens it passed through; None once the command
        has exited and all is read.

        What was read is fed redraw by redraw (each begins with an escape sequence), so a
        screen that a busy machine let the command replace before this read is still seen."""
        try:
            data = self.child.read_nonblocking(65536, timeout=0.05)
        except pexpect.TIMEOUT:
            return []
        except pexpect.EOF:
            return None
        passed: list[str] = []
        for piece in _REDRAW.split(data):
            self._stream.feed(piece)
            text = self.text()
            if not self.screens or self.screens[-1] != text:
                self.screens.append(text)
                passed.append(text)
        return passed

    def wait_for(self, condition: Callable[[str], bool], *, what: str, timeout: float = 30) -> str:
        """The first screen, from the current one on, that meets ``condition``."""
        found = [self.text()] if condition(self.text()) else []

        def met() -> bool:
            passed = self._pump()
            if passed is None:
                raise AssertionError(f"exited before {what}:\n{self.text()}")
            found.extend(screen for screen in passed if condition(screen))
            return bool(found)

        wait_for(met, timeout=timeout, interval=0, message=lambda: f"{what}:\n{self.text()}")
        return found[0]

    def wait_exit(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self._pump() is not None:
            assert time.monotonic() < deadline, f"still running:\n{self.text()}"
        self.child.close()
        assert self.child.exitstatus is not None, self.child.signalstatus
        return int(self.child.exitstatus)


def _tokens(count: int, word: str = "word") -> list[str]:
    return [f"{word}{i:02d} " for i in range(count)]


@pytest.fixture(scope="module")
def restartable_web(stack: Stack) -> Iterator[RestartableWeb]:
    with RestartableWeb(stack.redis_url) as web:
        yield web


def test_cli_is_installed_as_a_console_script(stack: Stack) -> None:
    result = _run(stack.web.base_url, "--help")

    assert result.returncode == 0
    for command in ("agents", "invoke", "tail", "status", "cancel"):
        assert command in result.stdout


def test_cli_lists_agents_one_per_line_when_piped(stack: Stack) -> None:
    result = _run(stack.web.base_url, "agents")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("echo\tStreams your message back") for line in lines)
    assert any(line.startswith("simple_llm_agent\t") for line in lines)


def test_cli_prints_the_answer_as_plain_text_as_it_streams_when_piped(
    stack: Stack, llm: LLMControl
) -> None:
    key = "cli: twenty words through a pipe"
    tokens = _tokens(20)
    llm.script(key, tokens=tokens, delay=0.05)

    run = PipedRun(stack.web.base_url, "invoke", "simple_llm_agent", key)
    code = run.wait()

    assert code == ExitCode.OK, run.stderr
    assert run.stdout == "".join(tokens) + "\n"
    assert run.stderr == b""
    assert "\x1b" not in run.stdout
    # It was written as it arrived, not all at the end.
    assert len(run.reads) >= 5, f"the answer came in {len(run.reads)} writes"


def test_cli_prints_the_whole_answer_once_without_streaming(stack: Stack) -> None:
    result = _run(stack.web.base_url, "invoke", "echo", "all at once please", "--no-stream")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "all at once please\n"


def test_cli_continues_a_session(stack: Stack) -> None:
    created = stack.web.client.post("/api/v1/sessions", headers=headers_for("alice"))
    session_id = created.json()["session_id"]

    result = _run(stack.web.base_url, "invoke", "echo", "remember this", "--session", session_id)

    assert result.returncode == 0, result.stderr
    session = stack.web.client.get(f"/api/v1/sessions/{session_id}", headers=headers_for("alice"))
    turns = [(m["role"], m["content"]) for m in session.json()["messages"]]
    assert turns == [("user", "remember this"), ("assistant", "remember this")]


def test_cli_status_and_tail_show_a_finished_task(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "finished before anyone looked", stream=True)
    poll_until_done(stack.web.client, task_id)

    tail = _run(stack.web.base_url, "tail", task_id)
    status = _run(stack.web.base_url, "status", task_id)
    as_json = _run(stack.web.base_url, "status", task_id, "--json")

    assert (tail.returncode, tail.stdout) == (0, "finished before anyone looked\n")
    assert status.returncode == 0
    assert "status    completed (SUCCESS)" in status.stdout
    assert "usage     4 prompt + 4 completion = 8 tokens" in status.stdout
    polled = stack.web.client.get(f"/api/v1/agents/tasks/{task_id}", headers=headers_for("alice"))
    assert json.loads(as_json.stdout) == polled.json()


def test_cli_cancel_stops_a_running_task(stack: Stack, llm: LLMControl) -> None:
    key = "cli: cancelled by command"
    llm.script(key, tokens=_tokens(200), delay=0.05)
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)
    wait_for(lambda: len(llm.calls(key)) == 1, timeout=20, message="the LLM was not called")

    result = _run(stack.web.base_url, "cancel", task_id)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cancel requested: task {task_id} was ")
    assert poll_until_done(stack.web.client, task_id)["status"] == "cancelled"
    again = _run(stack.web.base_url, "cancel", task_id)
    assert again.stdout == f"task {task_id} had already ended (cancelled): nothing to cancel\n"


def test_cli_shows_the_answer_above_a_progress_bar_in_a_terminal(
    stack: Stack, llm: LLMControl
) -> None:
    key = "cli: a terminal watches"
    tokens = _tokens(12)  # 84 columns: one line of the terminal
    llm.script(key, tokens=tokens, delay=0.08)
    final = "".join(tokens).strip()

    run = TerminalRun(stack.web.base_url, "invoke", "simple_llm_agent", key)
    streaming = run.wait_for(
        lambda text: "word03" in text and "% running · generating" in text,
        what="the answer growing above the bar",
    )
    code = run.wait_exit()

    lines = streaming.splitlines()
    bar = next(i for i, line in enumerate(lines) if "% running · generating" in line)
    assert lines[bar - 1].startswith("word00 word01 word02 word03"), streaming
    assert code == ExitCode.OK
    screen = run.text()
    assert screen.count(final) == 1, screen
    assert re.search(r"✓ completed · \d+ prompt \+ 12 completion = \d+ tokens", screen), screen
    assert "%" not in screen, "the progress bar was left on the screen"
    grown = [s for s in run.screens if "word00" in s]
    assert len(grown) > 5, "the answer did not appear as it streamed"


def test_cli_ctrl_c_in_a_terminal_asks_and_cancels_the_task(stack: Stack, llm: LLMControl) -> None:
    key = "cli: interrupted in a terminal"
    llm.script(key, tokens=_tokens(200), delay=0.05)

    run = TerminalRun(stack.web.base_url, "invoke", "simple_llm_agent", key)
    run.wait_for(lambda text: "word03" in text, what="some of the answer")
    run.child.sendintr()
    run.wait_for(lambda text: "[c/d/r]" in text, what="the question")
    run.child.send("c\r")
    code = run.wait_exit()

    assert code == ExitCode.TASK_CANCELLED
    assert "was cancelled" in run.text()
    calls = llm.calls(key)
    assert len(calls) == 1
    assert calls[0]["disconnected"], "the LLM stream was not closed"


def test_cli_interrupted_without_a_terminal_detaches_and_the_task_goes_on(
    stack: Stack, llm: LLMControl
) -> None:
    key = "cli: detached from a pipe"
    tokens = _tokens(30)
    llm.script(key, tokens=tokens, delay=0.05)

    run = PipedRun(stack.web.base_url, "invoke", "simple_llm_agent", key)
    wait_for(lambda: "word02" in run.stdout, timeout=20, message="no answer yet")
    run.process.send_signal(signal.SIGINT)
    code = run.wait()

    assert code == ExitCode.DETACHED
    message = run.stderr.decode()
    assert "detached; task " in message
    task_id = message.split("detached; task ", 1)[1].split()[0]
    assert f"agent-service tail {task_id}" in message
    final = poll_until_done(stack.web.client, task_id)
    assert final["status"] == "completed"
    assert final["result"]["content"] == "".join(tokens)


def test_cli_tail_resumes_without_duplicates_when_the_web_restarts(
    restartable_web: RestartableWeb, llm: LLMControl
) -> None:
    key = "cli: tail across a restart"
    tokens = _tokens(80)  # 8 s: the restart lands mid-stream even on a busy machine
    llm.script(key, tokens=tokens, delay=0.1)
    task_id = submit(restartable_web.web.client, "simple_llm_agent", key, stream=True)

    run = PipedRun(restartable_web.base_url, "tail", task_id)
    wait_for(lambda: "word05" in run.stdout, timeout=20, message="no answer yet")
    restartable_web.restart()
    code = run.wait()

    assert code == ExitCode.OK, run.stderr
    assert run.stdout == "".join(tokens) + "\n"
    assert b"trying again" in run.stderr
    assert len(llm.calls(key)) == 1


def test_cli_says_when_the_key_is_refused(stack: Stack) -> None:
    result = _run(stack.web.base_url, "agents", key="not-a-key")

    assert result.returncode == ExitCode.UNAUTHORIZED
    assert result.stderr.startswith("agent-service: the server refused the API key (401: ")
    assert "AGENT_SERVICE_API_KEY" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("invoke", "no_such_agent", "hi"), "not found (404): unknown agent 'no_such_agent'"),
        (("status", "00000000-0000-0000-0000-000000000000"), "not found (404): task not found"),
        (("tail", "00000000-0000-0000-0000-000000000000"), "not found (404): task not found"),
    ],
)
def test_cli_says_what_was_not_found(stack: Stack, args: tuple[str, ...], message: str) -> None:
    result = _run(stack.web.base_url, *args)

    assert result.returncode == ExitCode.NOT_FOUND
    assert result.stderr.startswith(f"agent-service: {message}")


def test_cli_says_when_nothing_answers_at_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = _run(url, "invoke", "echo", "hello?")

    assert result.returncode == ExitCode.UNREACHABLE
    assert result.stderr.startswith(f"agent-service: cannot reach the service at {url}: ")
    assert "Is it running?" in result.stderr


def test_cli_says_when_the_service_is_unavailable() -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    web = start_web(dead_redis, ready_path="/healthz")
    try:
        result = _run(web.base_url, "invoke", "echo", "hello?")
    finally:
        web.stop()

    assert result.returncode == ExitCode.UNAVAILABLE
    assert result.stderr.startswith(
        "agent-service: the service is unavailable (503): task store unavailable; "
        "nothing was queued; try again in 5 s"
    )


class _TooManyRequests(BaseHTTPRequestHandler):
    """A server that refuses everything with 429, as a rate limit in front of the service may."""

    def do_GET(self) -> None:
        self._refuse()

    def do_POST(self) -> None:
        self._refuse()

    def _refuse(self) -> None:
        body = json.dumps({"detail": "too many active tasks for this user"}).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_cli_says_when_to_try_again_after_too_many_requests() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TooManyRequests)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = _run(f"http://127.0.0.1:{server.server_port}", "invoke", "echo", "hi")
    finally:
        server.shutdown()
        server.server_close()

    assert result.returncode == ExitCode.RATE_LIMITED
    assert result.stderr == (
        "agent-service: too many requests (429): too many active tasks for this user; "
        "try again in 7 s\n"
    )


class _NotTheService(BaseHTTPRequestHandler):
    """Another server at the URL: it answers 200 with what the path names (a page, text that is
    not JSON, JSON of another shape)."""

    ANSWERS: ClassVar[dict[str, tuple[bytes, str]]] = {
        "page": (b"<html><body>Sign in</body></html>", "text/html"),
        "not-json": (b"{not json", "application/json"),
        "list": (b"[1, 2, 3]", "application/json"),
        "other-object": (b'{"agents": "none", "task_id": 5, "status": null}', "application/json"),
    }
    answer = ANSWERS["page"]

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        body, content_type = self.answer
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("answer", sorted(_NotTheService.ANSWERS))
@pytest.mark.parametrize(
    "args",
    [("agents",), ("invoke", "echo", "hi"), ("status", "t1"), ("cancel", "t1")],
    ids=["agents", "invoke", "status", "cancel"],
)
def test_cli_says_when_another_server_answers_at_the_url(
    answer: str, args: tuple[str, ...]
) -> None:
    handler = type("Handler", (_NotTheService,), {"answer": _NotTheService.ANSWERS[answer]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        result = _run(url, *args)
    finally:
        server.shutdown()
        server.server_close()

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == ExitCode.REFUSED
    assert result.stderr.startswith(
        f"agent-service: the server at {url} did not answer as agent-service does (200: "
    ), result.stderr
    assert "check AGENT_SERVICE_URL or --url" in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("invoke", "echo", "-"), b"hi \xff\xfe there", "the message is not valid UTF-8"),
        (("invoke", "echo", "hi \udcff there"), b"", "the message is not valid UTF-8"),
        (("status", "a" * 70_000), b"", "is not a task id"),
        (("tail", "a" * 70_000), b"", "is not a task id"),
        (("agents", "--api-key", "clé"), b"", "printable ASCII"),
        (("agents", "--url", "http://[::1"), b"", "must be an http(s) URL"),
    ],
    ids=["stdin-not-utf8", "argument-not-utf8", "long-id", "long-id-tail", "key", "url"],
)
def test_cli_says_what_is_wrong_with_its_input_without_a_traceback(
    stack: Stack, args: tuple[str, ...], stdin: bytes, message: str
) -> None:
    result = subprocess.run(
        [os.fsencode(CLI), *(os.fsencode(arg) for arg in args)],
        env=_env(stack.web.base_url),
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )

    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    assert result.returncode == ExitCode.USAGE, stderr
    assert message in stderr
