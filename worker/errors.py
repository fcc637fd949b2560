"""The errors an agent invocation can end with, and which of them are worth another attempt.

::

    AgentError
    ├── TransientAgentError           retried with exponential backoff
    │   ├── LLMUnavailableError       the LLM answered 429 or 5xx (``retry_after`` from the header)
    │   ├── LLMConnectionError        connect error, read timeout, connection dropped mid-stream
    │   ├── StorageUnavailableError   the database (session memory) did not answer
    │   └── RedisUnavailableError     Redis did not take the task's events (an outage past
    │                                 REDIS_OUTAGE_LIMIT) or failed another call of the task
    └── PermanentAgentError           fails the task at once
        ├── AgentConfigurationError   e.g. no LLM_BASE_URL for an agent that needs one
        ├── UnknownAgentError         no agent registered under that id
        ├── UnknownSessionError       no such session for the task's user
        ├── SessionStorageError       the database refused to store the session's exchange
        ├── LLMRequestRejectedError   the LLM answered another 4xx (bad request, auth, ...)
        ├── LLMProtocolError          the LLM's stream could not be parsed
        ├── AgentTimeoutError         the task's time limit ran out inside the event loop
        └── TaskCancelledError        someone cancelled the task (it ends ``cancelled``, not failed)

LLM clients translate their HTTP library's exceptions into these at the boundary
(``raise ... from exc``), so the Celery task decides on retries without knowing httpx. Celery stores
a failure as the exception's class name and message; the web process shows both, so the messages
are written for the person who submitted the task.
"""


class AgentError(Exception):
    """Base of everything an agent invocation raises on purpose.

    ``details`` are added to the task's ``error`` as clients see it (e.g. the partial content).
    """

    details: dict[str, object]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.details = {}


class TransientAgentError(AgentError):
    """The call may succeed if tried again later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMUnavailableError(TransientAgentError):
    """The LLM answered 429 (rate limited) or a 5xx status."""


class LLMConnectionError(TransientAgentError):
    """The LLM could not be reached, went silent, or dropped the connection."""


class StorageUnavailableError(TransientAgentError):
    """The database holding the session's memory did not answer."""


class RedisUnavailableError(TransientAgentError):
    """Redis, which carries the task's stream, did not answer for long enough to give up."""


class PermanentAgentError(AgentError):
    """Trying again would fail the same way."""


class AgentConfigurationError(PermanentAgentError):
    """The agent cannot run with this deployment's settings."""


class UnknownAgentError(PermanentAgentError):
    """No agent is registered under the requested id."""


class UnknownSessionError(PermanentAgentError):
    """The task names a session that does not exist, or that belongs to another user."""


class SessionStorageError(PermanentAgentError):
    """The database refused the session's exchange (not a connection problem)."""


class LLMRequestRejectedError(PermanentAgentError):
    """The LLM refused the request with a 4xx other than 429."""


class LLMProtocolError(PermanentAgentError):
    """The LLM's answer did not follow the OpenAI streaming protocol."""


class AgentTimeoutError(PermanentAgentError):
    """The task's time limit ran out before the agent finished."""


class TaskCancelledError(PermanentAgentError):
    """A cancel request reached the task; it ends as cancelled."""
