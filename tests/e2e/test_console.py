"""The browser console (``/console``) in headless Chromium, against the real stack: a person
enters a key, asks an agent, watches the answer stream in, cancels, reopens a task by id, and
keeps reading while the web process is killed and started again.

The page runs under its own Content-Security-Policy (nothing here bypasses it). Set
``CONSOLE_SCREENSHOTS`` to a directory to keep the screenshots the README shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.e2e.conftest import Stack
from tests.support.browser import PageRecorder, launch_chromium
from teststack.llm.control import LLMControl
from teststack.polling import poll_until_done, submit
from teststack.stack import API_KEYS
from teststack.web_restart import RestartableWeb

pytestmark = pytest.mark.e2e

ALICE_KEY = API_KEYS["alice"]
PHONE: ViewportSize = {"width": 375, "height": 740}
DESKTOP: ViewportSize = {"width": 1000, "height": 900}
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
EXPECTED_NETWORK_ERRORS = re.compile(r"net::ERR_(CONNECTION_REFUSED|INCOMPLETE_CHUNKED_ENCODING)")


@pytest.fixture(scope="module")
def console_web(stack: Stack) -> Iterator[RestartableWeb]:
    """A web process of its own beside the stack's (same Redis, same worker), which the restart
    test may kill."""
    with RestartableWeb(stack.redis_url) as web:
        yield web


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile per test: an empty sessionStorage, and a record of every URL requested."""
    context = browser.new_context(viewport=DESKTOP)
    urls: list[str] = []
    context.on("request", lambda request: urls.append(request.url))
    try:
        yield context
    finally:
        context.close()
    assert not [url for url in urls if ALICE_KEY in url], "the API key appeared in a URL"


@dataclass
class Console:
    """The console open in a tab, and what the browser reported as errors meanwhile."""

    page: Page
    errors: list[str] = field(default_factory=list)
    #: (status, URL) of every response to an event-stream request, oldest first.
    streams: list[tuple[int, str]] = field(default_factory=list)

    def script_errors(self) -> list[str]:
        """Errors other than the browser's own notes of a stream cut by a killed web process
        and of the reconnects that found nobody listening."""
        return [error for error in self.errors if not EXPECTED_NETWORK_ERRORS.search(error)]


def _open_console(context: BrowserContext, web: RestartableWeb) -> Console:
    page = context.new_page()
    console = Console(page)
    page.on("pageerror", lambda error: console.errors.append(str(error)))
    page.on(
        "console",
        lambda message: console.errors.append(message.text) if message.type == "error" else None,
    )
    page.on(
        "response",
        lambda response: (
            console.streams.append((response.status, response.url))
            if "/events?" in response.url
            else None
        ),
    )
    page.goto(f"{web.base_url}/console")
    return console


def _use_key(page: Page, key: str = ALICE_KEY) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Use key", exact=True).click()
    expect(page.locator("#key-message")).to_contain_text("Key accepted")


def _send(page: Page, agent: str, message: str) -> str:
    page.get_by_label("Agent", exact=True).select_option(agent)
    page.get_by_label("Message", exact=True).fill(message)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#send-message")).to_contain_text("Sent as task")
    task_id = page.locator("#task-id").text_content()
    assert task_id is not None
    return task_id


def _screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.locator("main").screenshot(path=str(Path(SCREENSHOTS) / name))


def _assert_grew_in_order(texts: list[str], final: str) -> None:
    """Each text the answer showed is the start of the final answer: chunks were appended in
    order, none twice."""
    shown = [text for text in texts if text]
    assert shown, "the answer never showed any text"
    wrong = [text for text in shown if not final.startswith(text)]
    assert not wrong, f"the answer showed text that is not a prefix of {final!r}: {wrong[:3]}"


def _tokens(count: int, *, word: str = "word") -> list[str]:
    return [f"{word}{i:02d} " for i in range(count)]


#: An answer that reads like one, for the tests whose screenshots the README shows.
PROSE = (
    "Server-Sent Events keep one HTTP response open and let the server write an event down it "
    "whenever it has one: a line naming the event, a line of data, a blank line. The browser's "
    "EventSource reads them as they come, and when the connection drops it reconnects by "
    "itself, sending the id of the last event it saw, so the server can carry on from there. "
)


def _prose_tokens(repeat: int = 1) -> list[str]:
    return [word + " " for word in (PROSE * repeat).split()]


def test_console_streams_an_answer_in_order_keyboard_only_on_a_phone_screen(
    console_web: RestartableWeb, context: BrowserContext, llm: LLMControl
) -> None:
    key = "console: stream twenty words"
    tokens = _tokens(20)
    llm.script(key, tokens=tokens, delay=0.03)
    console = _open_console(context, console_web)
    page = console.page
    page.set_viewport_size(PHONE)
    recorder = PageRecorder(page, "answer", "task-stage", "task-status")

    def focused_label() -> str:
        label: str = page.evaluate(
            "document.activeElement.labels?.[0]?.textContent.trim()"
            " ?? document.activeElement.textContent.trim()"
        )
        return label

    page.keyboard.press("Tab")
    assert focused_label() == "API key"
    page.keyboard.type(ALICE_KEY)
    page.keyboard.press("Enter")
    expect(page.locator("#key-message")).to_contain_text("Key accepted")
    for expected in ("Use key", "Forget key", "Agent"):
        page.keyboard.press("Tab")
        assert focused_label() == expected
    page.keyboard.press("s")  # type-ahead picks simple_llm_agent in the focused select
    expect(page.get_by_label("Agent", exact=True)).to_have_value("simple_llm_agent")
    page.keyboard.press("Tab")
    assert focused_label() == "Message"
    page.keyboard.type(key)
    page.keyboard.press("Control+Enter")

    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    final = "".join(tokens)
    expect(page.locator("#answer")).to_have_text(final)
    expect(page.locator("#task-outcome")).to_have_text(
        re.compile(r"Usage: \d+ prompt, 20 completion, \d+ total tokens")
    )
    expect(page.locator("#task-progress")).to_have_attribute("value", "100")
    answers = recorder.texts("answer")
    _assert_grew_in_order(answers, final)
    assert len(answers) > 5, f"the answer arrived in {len(answers)} steps, not as it streamed"
    assert any("generating" in stage for stage in recorder.texts("task-stage"))
    assert recorder.texts("task-status")[-1] == "completed"
    # Nothing moved while the answer streamed, and nothing is wider than the phone.
    assert recorder.layout_shift() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert console.script_errors() == []
    storage = page.evaluate("[sessionStorage.length, localStorage.length]")
    assert storage == [1, 0], "the key belongs in sessionStorage only"


def test_console_cancels_mid_stream_and_keeps_the_partial_answer(
    console_web: RestartableWeb, context: BrowserContext, llm: LLMControl
) -> None:
    key = "Tell me everything about Server-Sent Events, at length."
    tokens = _prose_tokens(repeat=4)
    llm.script(key, tokens=tokens, delay=0.05)
    console = _open_console(context, console_web)
    page = console.page
    _use_key(page)
    _send(page, "simple_llm_agent", key)
    expect(page.locator("#answer")).to_contain_text("open and let", timeout=20_000)

    page.get_by_role("button", name="Cancel task", exact=True).click()

    expect(page.locator("#task-status")).to_have_text("cancelled", timeout=20_000)
    expect(page.get_by_role("button", name="Cancel task", exact=True)).to_be_disabled()
    expect(page.locator("#task-outcome")).to_contain_text("Cancelled")
    partial = page.locator("#answer").text_content() or ""
    assert "open and let" in partial
    full = "".join(tokens)
    assert full.startswith(partial)
    assert len(partial) < len(full)
    calls = llm.calls(key)
    assert len(calls) == 1
    assert calls[0]["disconnected"], "the LLM stream was not closed"
    assert console.script_errors() == []
    _screenshot(page, "console-cancelled.png")


@pytest.mark.parametrize("token_secret", ["kept", "changed"])
def test_console_completes_without_duplicates_when_the_web_restarts_mid_stream(
    console_web: RestartableWeb, context: BrowserContext, llm: LLMControl, token_secret: str
) -> None:
    """With the secret kept (``make dev``, production), the browser's own reconnect resumes
    the stream; with a new one, the server refuses the old token and the page resumes with a
    fresh one, after the last event it saw."""
    key = f"Explain Server-Sent Events in a few sentences ({token_secret} secret)."
    tokens = _prose_tokens()
    llm.script(key, tokens=tokens, delay=0.04)
    console = _open_console(context, console_web)
    page = console.page
    _use_key(page)
    recorder = PageRecorder(page, "answer", "task-connection")
    _send(page, "simple_llm_agent", key)
    expect(page.locator("#answer")).to_contain_text("open and let", timeout=20_000)
    before_kill = page.locator("#answer").text_content() or ""

    console_web.restart(new_token_secret=token_secret == "changed")

    final = "".join(tokens)
    expect(page.locator("#task-status")).to_have_text("completed", timeout=40_000)
    expect(page.locator("#answer")).to_have_text(final)
    assert len(before_kill) < len(final), "the answer had ended before the kill"
    _assert_grew_in_order(recorder.texts("answer"), final)
    assert "reconnecting…" in recorder.texts("task-connection")
    assert len(llm.calls(key)) == 1
    refused = "the server responded with a status of 401"
    assert [e for e in console.script_errors() if token_secret == "kept" or refused not in e] == []
    first_url = console.streams[0][1]
    if token_secret == "kept":
        assert {status for status, _ in console.streams} == {200}
        assert {url for _, url in console.streams} == {first_url}, "the page reconnected itself"
        _screenshot(page, "console-completed.png")
    else:
        assert 401 in [status for status, _ in console.streams]
        status, resumed = console.streams[-1]
        assert status == 200
        assert "token=" in resumed
        assert "last_event_id=" in resumed


def test_console_replaces_the_answer_when_a_retry_resets_it(
    console_web: RestartableWeb, context: BrowserContext, llm: LLMControl
) -> None:
    key = "console: fail halfway, then answer"
    tokens = _tokens(12, word="retry")
    failure = {"status": 503, "after_tokens": 4, "body": "overloaded"}
    llm.script(key, tokens=tokens, delay=0.05, failures=[failure])
    console = _open_console(context, console_web)
    page = console.page
    _use_key(page)
    recorder = PageRecorder(page, "answer", "task-status")
    _send(page, "simple_llm_agent", key)

    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    final = "".join(tokens)
    expect(page.locator("#answer")).to_have_text(final)
    timeline = recorder.timeline()
    statuses = recorder.texts("task-status")
    assert "running (attempt 2)" in statuses
    retrying = next(
        i for i, (element, text) in enumerate(timeline) if text.startswith("retrying after")
    )
    # The first attempt's text was on the page when the retry began. The second attempt
    # streams the same tokens again, so a page that appended them instead of starting over
    # would have shown "retry00 retry01 … retry00 …", which is not a prefix of the answer.
    assert [text for element, text in timeline[:retrying] if element == "answer" and text]
    _assert_grew_in_order(recorder.texts("answer"), final)


def test_console_reopens_a_task_by_id_from_its_start(
    stack: Stack, console_web: RestartableWeb, context: BrowserContext
) -> None:
    task_id = submit(stack.web.client, "echo", "reopened by id later", stream=True)
    poll_until_done(stack.web.client, task_id)
    console = _open_console(context, console_web)
    page = console.page
    _use_key(page)

    page.get_by_label("Task id", exact=True).fill(task_id)
    page.get_by_role("button", name="Open", exact=True).click()

    expect(page.locator("#task-status")).to_have_text("completed", timeout=20_000)
    expect(page.locator("#task-id")).to_have_text(task_id)
    expect(page.locator("#answer")).to_have_text("reopened by id later")
    expect(page.locator("#task-outcome")).to_contain_text("Usage:")

    page.get_by_label("Task id", exact=True).fill("00000000-0000-0000-0000-000000000000")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#open-message")).to_have_text(
        "No task 00000000-0000-0000-0000-000000000000 for this key (404)."
    )


def test_console_shows_a_readable_error_when_the_key_is_wrong(
    console_web: RestartableWeb, context: BrowserContext
) -> None:
    console = _open_console(context, console_web)
    page = console.page

    page.get_by_label("API key", exact=True).fill("not-a-key")
    page.get_by_role("button", name="Use key", exact=True).click()

    message = page.locator("#key-message")
    expect(message).to_have_text(
        re.compile(r"^The server refused this API key \(401\).*Check the key and enter it again\.$")
    )
    expect(message).to_have_class(re.compile(r"\berror\b"))
    expect(page.get_by_label("Agent", exact=True)).to_be_disabled()
    assert "not-a-key" not in page.url


def test_console_shows_an_agents_tool_calls_as_they_happen(
    console_web: RestartableWeb, context: BrowserContext, llm: LLMControl
) -> None:
    key = "console: six times seven?"
    llm.script(
        key,
        tool_rounds=[[{"name": "calculator", "arguments": '{"expression": "6 * 7"}'}]],
        tokens=_tokens(10),
        delay=0.05,
    )
    console = _open_console(context, console_web)
    page = console.page
    _use_key(page)
    recorder = PageRecorder(page, "task-stage")

    _send(page, "tool_agent", key)

    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    steps = page.locator("#steps li")
    expect(steps).to_have_count(1)
    expect(steps.first).to_have_text('calculator({"expression":"6 * 7"}) → 42')
    expect(page.get_by_role("heading", name="Steps")).to_be_visible()
    assert any("calling calculator" in stage for stage in recorder.texts("task-stage"))
    assert console.script_errors() == []
