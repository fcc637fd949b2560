"""The event-stream decoder, fed in memory: every way a body can be split across reads must give
the same events (over a real socket the splits are up to the network; here all of them are
tried)."""

import pytest

from worker.agents.sse_decoder import EventTooLargeError, SSEDecoder

BODY = (
    b": a comment\n"
    b"data: first\n"
    b"\n"
    b"event: message\n"
    b"id: 7\n"
    b"retry: 100\n"
    b"data:second\n"
    b"data:  two lines\n"
    b"unknown: field\n"
    b"\n"
    b"data\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
EVENTS = [b"first", b"second\n two lines", b"", b"[DONE]"]


def decode(*pieces: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_feed_gives_same_events_when_body_is_split_at_any_two_points(newline: bytes) -> None:
    body = BODY.replace(b"\n", newline)

    for first in range(len(body) + 1):
        for second in range(first, len(body) + 1, 3):
            pieces = (body[:first], body[first:second], body[second:])
            assert decode(*pieces) == EVENTS, pieces


def test_feed_gives_same_events_when_body_arrives_byte_by_byte() -> None:
    body = b"\xef\xbb\xbf" + BODY.replace(b"\n", b"\r\n")

    assert decode(*(body[i : i + 1] for i in range(len(body)))) == EVENTS


def test_feed_drops_byte_order_mark_only_at_start() -> None:
    assert decode(b"\xef\xbb\xbfdata: a\n\n") == [b"a"]
    assert decode(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [b"a"]  # a field named BOM+data


def test_feed_keeps_event_pending_when_blank_line_has_not_arrived() -> None:
    decoder = SSEDecoder()

    assert decoder.feed(b"data: a\ndata: b\n") == []
    assert decoder.feed(b"\n") == [b"a\nb"]


def test_feed_gives_several_events_when_one_read_holds_them() -> None:
    assert decode(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4") == [b"1", b"2", b"3"]


def test_feed_ignores_blank_lines_when_no_data_came_before() -> None:
    assert decode(b"\n\n: ping\n\n\r\n") == []


def test_feed_raises_when_line_grows_past_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 90)

    with pytest.raises(EventTooLargeError):
        decoder.feed(b"x" * 20)


def test_feed_raises_when_event_data_grows_past_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=100)

    with pytest.raises(EventTooLargeError):
        decoder.feed(b"data: " + b"x" * 60 + b"\n" + b"data: " + b"x" * 60 + b"\n")
