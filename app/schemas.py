"""Request and response bodies of the REST API.

Types are strict (a number is not a message, ``"yes"`` is not a boolean) and unknown fields are
refused, so a typo in a client surfaces as a 422 naming the field instead of being ignored.
Size limits that depend on settings are checked in the route, which answers 413.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

TaskStatusName = Literal["queued", "running", "retrying", "completed", "failed", "cancelled"]

SessionId = Annotated[
    StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: StrictStr = Field(description="What the user asks the agent.")
    session_id: SessionId | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form JSON object passed to the agent and the result."
    )
    stream: StrictBool = Field(
        default=False, description="Run the streaming task (chunks relayed as they come)."
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
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


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: StrictStr | None = Field(
        default=None,
        max_length=64,
        description="Scope the token to this task's event stream (it then opens nothing else).",
    )
    ttl_seconds: StrictInt | None = Field(
        default=None, ge=30, description="Lifetime; at most MAX_TOKEN_TTL (default 1 day)."
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

    token: StrictStr = Field(min_length=1, max_length=8192)


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
