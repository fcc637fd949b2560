"""How an agent task's arguments and result are shown wherever Celery shows them.

Celery copies a repr of a task's arguments into the message's headers (``argsrepr``,
``kwargsrepr``), into its task events (what Flower shows) and into ``celery inspect``, and a
repr of the return value into the ``task-succeeded`` event. An agent task's arguments hold the
user's message and its return value the LLM's answer, neither of which any log or monitoring view
may show: these functions give what they show instead, the ids and the sizes. The web sends them
with each task; the worker puts them in place of whatever a foreign producer sent.
"""

from collections.abc import Mapping
from typing import Any

#: The longest id shown (an id is never a message, but a foreign producer may send anything).
MAX_ID_CHARS = 128
#: What a task event shows of an agent task's return value.
RESULT_REPR = "<answer not shown>"


def _id(value: object) -> object:
    if isinstance(value, str):
        return value[:MAX_ID_CHARS]
    return None if value is None else f"<{type(value).__name__}>"


def _size(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, str):
        return f"<{len(value)} characters>"
    if isinstance(value, Mapping):
        return f"<{len(value)} keys>"
    return f"<{type(value).__name__}>"


def agent_kwargs_repr(kwargs: object) -> str:
    """An agent task's kwargs as views show them: its ids, and the sizes of its message and
    metadata (never their text)."""
    if not isinstance(kwargs, Mapping):
        return f"<{type(kwargs).__name__}>"
    shown: dict[str, Any] = {}
    for name, value in kwargs.items():
        key = str(name)[:MAX_ID_CHARS]
        shown[key] = _id(value) if key.endswith("_id") else _size(value)
    return repr(shown)


def agent_args_repr(args: object) -> str:
    """Positional arguments (the contract sends none): their count only."""
    if isinstance(args, list | tuple):
        return f"<{len(args)} arguments>" if args else "()"
    return f"<{type(args).__name__}>"
