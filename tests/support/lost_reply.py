"""A Redis reply lost on the way back: the command ran, its answer never came.

``lean_pipeline`` sends the commands again when a connection dies before any reply, so every
script it sends must be safe to run twice; this double makes the first round trip that Redis
applied (not a NOSCRIPT) end that way, once.
"""

import pytest

from streaming import lean_pipeline


def lose_first_reply(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Patch the pipeline so its first applied round trip loses its reply; the list returned
    holds one item once that has happened."""
    real = lean_pipeline._execute_once
    lost: list[bool] = []

    async def reply_lost_once(*args: object, **kwargs: object) -> list[object]:
        replies = await real(*args, **kwargs)  # type: ignore[arg-type]
        if not lost and not isinstance(replies[0], Exception):  # applied (not NOSCRIPT)
            lost.append(True)
            raise lean_pipeline._NoReplyError
        return replies

    monkeypatch.setattr(lean_pipeline, "_execute_once", reply_lost_once)
    return lost
