"""Request and response bodies of the REST API.

Types are strict (a number is not a message, ``"yes"`` is not a boolean) and unknown fields are
refused, so a typo in a client surfaces as a 422 naming the field instead of being ignored.
Strings and metadata are of the ``app.storable`` types: what the service could not store, encode
or stream (a lone surrogate, an integer beyond 64 bits, nesting past ``MAX_JSON_DEPTH``) is a
422 too. Size limits that depend on settings are checked in the route, which answers 413.

The error bodies are here as well, so that the OpenAPI document describes every answer.
"""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

from app.storable import MAX_JSON_DEPTH, JsonObject, StorableStr
from contract.tasks import DEFAULT_PRIORITY

#: A character that is not whitespace as JSON Schema's (ECMAScript's) ``\S`` reads it, so that
#: the schema's pattern and the check agree on every string.
_NOT_WHITESPACE = re.compile(
    "[^\t\n\v\f\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
)

TaskStatusName = Literal["queued", "running", "retrying", "completed", "failed", "cancelled"]

# Ids are ASCII by pattern: neither can hold a lone surrogate.
SessionId = Annotated[
    StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
#: Task ids are UUIDs; one that could not be ours is refused before any look-up.
TaskId = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: StorableStr = Field(
        min_length=1,
        description="What the user asks the agent: some text that is not whitespace, no NUL.",
        # What _not_blank checks, for clients and fuzzers that read the schema.
        json_schema_extra={"pattern": r"\S", "not": {"pattern": r"\u0000"}},
    )
    session_id: SessionId | None = None
    metadata: JsonObject | None = Field(
        default=None,
        description="Free-form JSON object passed to the agent and the result: at most "
        f"{MAX_JSON_DEPTH} levels of objects and arrays (itself included), valid Unicode "
        "strings and keys, finite numbers within the 64-bit integer range.",
    )
    stream: StrictBool = Field(
        default=False, description="Run the streaming task (chunks relayed as they come)."
    )
    priority: StrictInt = Field(
        default=DEFAULT_PRIORITY,
        ge=0,
        le=9,
        description="0-9, 9 the most urgent: a task waiting in the queue is taken before those "
        "of a lower priority. From 7 up, a smaller per-user cap applies "
        "(MAX_URGENT_TASKS_PER_USER).",
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not _NOT_WHITESPACE.search(value):
            raise ValueError("message must not be empty")
        if "\x00" in value:  # no database stores it in text, and no LLM wants it
            raise ValueError("message must not contain NUL characters")
        return value


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["queued"] = "queued"
    status_url: str
    stream_url: str


class TaskError(BaseModel):
    """What went wrong; some errors add fields (a timeout: ``reason`` and the partial
    ``content``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="The error's class, e.g. LLMRequestRejectedError.")
    message: str


class TaskStatus(BaseModel):
    task_id: str
    state: str = Field(description="Celery's state: PENDING, STARTED, PROGRESS, RETRY, ...")
    status: TaskStatusName
    progress: int = Field(ge=0, le=100)
    stage: str | None = None
    detail: str | None = Field(
        default=None, description="What the agent says of its current stage, if anything."
    )
    result: dict[str, Any] | None = None
    error: TaskError | None = None


class AgentInfo(BaseModel):
    id: str
    description: str


class AgentList(BaseModel):
    agents: list[AgentInfo]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: Literal["ok", "unreachable"] | None = None
    database: Literal["ok", "unreachable"] | None = None
    #: The database's schema against the code's migrations (when the database answered).
    database_schema: Literal["ok", "behind"] | None = None
    #: Why the service is not ready, in a sentence, when it is not.
    detail: str | None = None


def _integral_float_as_int(value: object) -> object:
    """``60.0`` is an integer to JSON Schema (and to JavaScript, which cannot tell them apart)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


TokenTtl = Annotated[StrictInt, Field(ge=30), BeforeValidator(_integral_float_as_int)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: TaskId | None = Field(
        default=None,
        description="Scope the token to this task's event stream (it then opens nothing else).",
    )
    ttl_seconds: TokenTtl | None = Field(
        default=None, description="Lifetime; at most MAX_TOKEN_TTL (default 1 day)."
    )


class TokenIssued(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name)
    expires_in: int
    expires_at: datetime
    scope: Literal["api", "task:events"]
    task_id: str | None = None
    jti: str


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: StorableStr = Field(min_length=1, max_length=8192)


class TokenRevoked(BaseModel):
    jti: str
    revoked: bool = Field(description="False when the token had expired already.")
    expires_at: datetime


class SessionMessageOut(BaseModel):
    role: str
    content: str
    task_id: str
    created_at: datetime


class SessionOut(BaseModel):
    session_id: str
    created_at: datetime
    last_activity_at: datetime
    messages: list[SessionMessageOut] = Field(default_factory=list)


class ErrorMessage(BaseModel):
    """A refusal that a sentence explains (400, 401, 404, 409, 429, 503)."""

    detail: str


class CapReached(BaseModel):
    """A per-user cap refused the request (429)."""

    detail: str
    cap: Literal["active_tasks", "urgent_tasks", "streams", "token_mints"]
    limit: int


class ValidationErrorItem(BaseModel):
    loc: list[str | int] = Field(
        description="Where: 'body', 'query', 'header' or 'path', then the field's name and "
        "the keys or indexes inside it."
    )
    msg: str
    type: str = Field(description="A stable name of the problem, e.g. missing, too_large.")
    ctx: dict[str, Any] | None = Field(
        default=None, description="The limit that was crossed (413: {limit})."
    )


class ValidationErrors(BaseModel):
    """A refusal that names the fields at fault (413, 422)."""

    detail: list[ValidationErrorItem]
