"""A loopback stand-in for Sentry: an HTTP server that accepts what a real ``sentry-sdk`` sends
to a DSN like ``http://public@127.0.0.1:PORT/1`` and keeps every envelope's raw bytes.

It answers ``POST /api/<project>/envelope/`` (and the older ``/store/``) with 200, after undoing
the transport's compression (gzip or deflate), so a test can read the events that left a process
and assert on the very bytes that crossed the wire.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Envelope:
    raw: bytes

    def items(self) -> list[tuple[dict[str, Any], bytes]]:
        """(item header, payload) of each item; the envelope header is left out."""
        lines = self.raw.split(b"\n")
        items, i = [], 1
        while i < len(lines) - 1:
            if not lines[i].strip():
                i += 1
                continue
            header = json.loads(lines[i])
            length = header.get("length")
            if length is None:
                payload, i = lines[i + 1], i + 2
            else:
                start = len(b"\n".join(lines[: i + 1])) + 1
                payload = self.raw[start : start + length]
                i += 1 + payload.count(b"\n") + 1
            items.append((header, payload))
        return items

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(payload) for header, payload in self.items() if header["type"] == "event"
        ]


class SentryReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._envelopes: list[Envelope] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding not in ("", "identity"):
                    self.send_response(415)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver._envelopes.append(Envelope(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self._server.server_address[1]}/1"

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes() for event in envelope.events()]

    def raw(self) -> bytes:
        return b"\n".join(envelope.raw for envelope in self.envelopes())

    def __enter__(self) -> SentryReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
