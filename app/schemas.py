"""Request and response bodies of the REST API.

Types are strict (a number is not a message, ``"yes"`` is not a boolean) and unknown fields are
refused, so a typo in a client surfaces as a 422 naming the field instead of being ignored.
Size limits that depend on settings are checked in the route, which answers 413.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

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
