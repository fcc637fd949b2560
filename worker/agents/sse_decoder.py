"""Server-sent events from the raw bytes of a response body: the data of each event, and no more.

``SSEDecoder.feed`` takes the body as it arrives, split anywhere, and returns the data of the
events each piece completes. It follows the event-stream parsing rules of the HTML standard
wherever they decide what data a client sees:

- a line ends with LF, CRLF or CR (a CRLF split across two reads ends one line, not two);
- a blank line ends an event; the ``data:`` lines of one event are joined with LF, and one space
  after the colon is dropped (``data`` alone is an empty line of data);
- lines starting with ``:`` are comments (heartbeats) and are skipped, as are ``event:``, ``id:``,
  ``retry:`` and unknown fields: an OpenAI-compatible stream does not use them, and this client
  never reconnects;
- an event the stream ends in the middle of (no blank line after it) is not dispatched, and a
  byte order mark at the very start is dropped.

The data stays bytes (orjson parses bytes), so the usual read costs one ``split`` and no decoding.
A line or an event longer than ``max_event_bytes`` raises ``EventTooLargeError`` instead of
growing without bound.
"""

_BOM = b"\xef\xbb\xbf"
#: Far above any chunk of an LLM stream (a few hundred bytes), far below a worry for memory.
MAX_EVENT_BYTES = 4 * 1024 * 1024


class EventTooLargeError(ValueError):
    """A line, or an event's data, grew past the decoder's bound."""


class SSEDecoder:
    """Turns the bytes of one event stream into the data of its events, in order."""

    __slots__ = ("_after_cr", "_data", "_max", "_pending", "_started")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._pending = b""  # the start of a line whose end has not arrived
        self._data: bytes | None = None  # the data of the event being read, if it has any
        self._after_cr = False  # the last piece ended with CR: an LF starting the next is its end
        self._started = False  # the byte order mark is only looked for at the very start

    def feed(self, piece: bytes) -> list[bytes]:
        """The data of every event ``piece`` completes (an empty list if none)."""
        if not piece:
            return []
        if self._after_cr:
            self._after_cr = False
            if piece[:1] == b"\n":
                piece = piece[1:]
        if not self._started:
            piece = self._pending + piece
            self._pending = b""
            if len(piece) < len(_BOM) and _BOM.startswith(piece):
                self._pending = piece  # too short to tell yet
                return []
            self._started = True
            piece = piece.removeprefix(_BOM)
        if b"\r" in piece:
            self._after_cr = piece.endswith(b"\r")
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = (self._pending + piece if self._pending else piece).split(b"\n")
        self._pending = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data is not None:
                    events.append(data)
                    data = None
                continue
            if line.startswith(b"data:"):
                value = line[6:] if line.startswith(b"data: ") else line[5:]
            elif line == b"data":
                value = b""
            else:  # a comment, another field, or a line without a colon: no data
                continue
            data = value if data is None else data + b"\n" + value
            if len(data) > self._max:
                raise EventTooLargeError(f"an event's data is longer than {self._max} bytes")
        self._data = data
        if len(self._pending) > self._max:
            raise EventTooLargeError(f"a line is longer than {self._max} bytes")
        return events
