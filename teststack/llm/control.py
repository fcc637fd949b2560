"""A synchronous client of the loopback LLM server's control API: script a scenario, read the
calls it took, forget everything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit

import httpx

from teststack.llm.scenarios import RecordedCall


class LLMControl:
    """Synchronous client for the server's control API."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._client = httpx.Client(base_url=f"{parts.scheme}://{parts.netloc}", timeout=10.0)

    def script(
        self,
        key: str,
        *,
        tokens: Sequence[str],
        delay: float = 0.0,
        failures: Sequence[Mapping[str, object]] = (),
        usage: bool = True,
        tool_rounds: Sequence[Sequence[Mapping[str, str]]] = (),
        piece_chars: int = 8,
    ) -> None:
        """Register (or replace) the scenario answered for ``key`` (the module's docstring
        describes the fields)."""
        body = {
            "tokens": list(tokens),
            "delay": delay,
            "failures": [dict(f) for f in failures],
            "usage": usage,
            "tool_rounds": [[dict(call) for call in calls] for calls in tool_rounds],
            "piece_chars": piece_chars,
        }
        self._client.put(self._path(key), json=body).raise_for_status()

    def calls(self, key: str) -> list[RecordedCall]:
        """The calls recorded for ``key``, oldest first."""
        response = self._client.get(f"{self._path(key)}/calls")
        response.raise_for_status()
        calls: list[RecordedCall] = response.json()["calls"]
        return calls

    def reset(self) -> None:
        """Forget all scenarios and recorded calls."""
        self._client.delete("/_scenarios").raise_for_status()

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _path(key: str) -> str:
        return f"/_scenarios/{quote(key, safe='')}"
