"""``Answer``: the stream protocol as the CLI applies it."""

from cli.events import Answer, TaskEvent, TextChange


def _event(type_: str, data: object, id_: str = "1-0") -> TaskEvent:
    return TaskEvent(id=id_, type=type_, data=data)


def test_answer_appends_chunks_and_follows_progress() -> None:
    answer = Answer()

    changes = [
        answer.apply(_event("status", {"status": "running", "attempt": 1})),
        answer.apply(_event("progress", {"progress": 40.4, "stage": "generating"})),
        answer.apply(_event("chunk", {"text": "Hello", "index": 0})),
        answer.apply(_event("chunk", {"text": " world", "index": 1})),
    ]

    assert changes == [None, None, TextChange(appended="Hello"), TextChange(appended=" world")]
    assert (answer.text, answer.status, answer.progress, answer.stage) == (
        "Hello world",
        "running",
        40,
        "generating",
    )
    assert not answer.finished


def test_answer_replaces_its_text_when_a_retry_resets_it() -> None:
    answer = Answer(text="half an ans")

    change = answer.apply(_event("reset", {"attempt": 2, "content": ""}))

    assert change == TextChange(replaced="")
    assert (answer.text, answer.attempt) == ("", 2)


def test_answer_appends_only_the_rest_when_a_reset_extends_what_it_holds() -> None:
    answer = Answer(text="The answer")

    change = answer.apply(_event("reset", {"attempt": 1, "content": "The answer so far"}))

    assert change == TextChange(appended=" so far")
    assert answer.text == "The answer so far"


def test_answer_ignores_event_types_it_does_not_know() -> None:
    answer = Answer(text="kept")

    assert answer.apply(_event("tool", {"name": "search", "text": "not the answer"})) is None
    assert answer.apply(_event("step", "not even an object")) is None
    assert answer.text == "kept"
    assert not answer.finished


def test_answer_ends_with_the_result_and_takes_its_content() -> None:
    answer = Answer(text="partial")

    change = answer.apply(_event("result", {"content": "partial and whole", "usage": {}}))

    assert change == TextChange(appended=" and whole")
    assert (answer.finished, answer.status, answer.progress) == (True, "completed", 100)


def test_answer_ends_cancelled_with_the_partial_answer() -> None:
    answer = Answer(text="par")

    answer.apply(_event("cancelled", {"reason": "cancelled", "content": "part"}))

    assert (answer.text, answer.status, answer.finished) == ("part", "cancelled", True)
