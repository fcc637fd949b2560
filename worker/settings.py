"""Typed settings of the worker and beat processes, read once per process from the environment.

The names follow the Celery deployment this service replaces (``CELERY_*``) so that an existing
``.env`` keeps working. Values that would make the worker unsafe or unable to keep its promises
(a soft limit above the hard one, a broker visibility timeout shorter than a task may run, which
would make Redis hand a running task to a second worker) are refused at start-up.
"""

import os
import re
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from contract.metrics_access import Network, parse_networks
from contract.tasks import INVOKE_AGENT_ASYNC, INVOKE_AGENT_WITH_STREAMING, TIME_LIMITS
from storage.settings import DatabaseSettings
from streaming.redis_settings import RedisSettings

#: The longest hard time limit of a task in the contract (seconds).
LONGEST_TASK_LIMIT = max(TIME_LIMITS.values())

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float | None:
    """Calls per second of ``"100/m"``; None for an empty setting (no limit)."""
    if not text.strip():
        return None
    match = _RATE.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(
            f"{text!r} is not a rate limit: write <calls>/<s|m|h>, e.g. 100/m, or leave it empty"
        )
    return float(match[1]) / _SECONDS[match[2]]


class WorkerSettings(RedisSettings, DatabaseSettings):
    """Everything a worker or beat process reads from its environment."""

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    sentry_dsn: SecretStr | None = None

    celery_task_default_queue: str = "agent-service"
    celery_task_default_retry_delay: float = Field(
        default=2.0,
        ge=0,
        description="Base of the exponential retry backoff, in seconds (doubles per attempt).",
    )
    celery_task_max_retries: int = Field(default=3, ge=0, le=20)
    celery_task_retry_backoff_max: float = Field(default=600.0, ge=0)
    celery_task_time_limit: int = Field(
        default=LONGEST_TASK_LIMIT,
        gt=0,
        description="Caps every task's hard time limit (seconds).",
    )
    celery_task_soft_time_limit: int = Field(
        default=LONGEST_TASK_LIMIT - 30,
        gt=0,
        description="Caps every task's soft time limit: the call ends with a timeout error.",
    )
    celery_worker_prefetch_multiplier: int = Field(default=1, ge=1)
    celery_worker_max_tasks_per_child: int | None = Field(default=1000, ge=1)
    celery_broker_visibility_timeout: int = Field(
        default=3600,
        description="Seconds before Redis redelivers an unacknowledged task; above every limit.",
    )
    celery_worker_send_task_events: bool = Field(
        default=False,
        description="Send task events (what Flower shows) from the start; Flower turns them on "
        "by itself when it starts.",
    )
    celery_task_log_lines: bool = Field(
        default=False,
        description="Keep Celery's own INFO lines for each task received and succeeded (ours: "
        "one structured line per outcome).",
    )
    worker_concurrency: int = Field(default=100, ge=1, le=2000)
    redis_outage_limit: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="Seconds a running task waits for Redis to come back (a restart, a failover) "
        "before it is retried as a transient error.",
    )
    worker_lease_seconds: int = Field(
        default=10,
        ge=2,
        le=300,
        description="A dead worker's tasks go back to the queue about this long after it died "
        "(to about twice it).",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve this worker's Prometheus metrics on this port (/metrics); unset: none. "
        "Each worker process on a machine needs a port of its own.",
    )
    worker_metrics_address: str = Field(
        default="127.0.0.1",
        description="The address the worker's metrics port listens on (0.0.0.0: every "
        "interface, for a Prometheus on another machine).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="In production, the metrics port answers a scrape that presents it as a "
        "bearer token (the web's /metrics takes the same).",
    )
    metrics_allowed_networks: str = Field(
        default="",
        description="In production, the metrics port answers scrapes from these addresses "
        "(comma-separated networks, e.g. '10.0.0.0/8,127.0.0.1').",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: one line per event; json: one JSON object per line.",
    )
    loop_lag_warning_ms: int = Field(
        default=100,
        ge=1,
        description="A stall of the shared event loop longer than this is logged with the "
        "tasks running then.",
    )
    agent_event_loop: Literal["auto", "per-task", "shared"] = Field(
        default="auto",
        description="One event loop per task, or one per worker process (auto: shared in the "
        "threads pool).",
    )

    agent_modules: str = Field(
        default="",
        description="Comma-separated modules whose AGENTS list adds agents (the web reads it too).",
    )
    agent_uvloop: bool = Field(
        default=True,
        description="Run the agent tasks' event loops on uvloop (where it is installed): less "
        "worker CPU per streamed token than asyncio's own loop (bench/README.md).",
    )

    agent_task_rate_limit: str = Field(
        default="100/m",
        description="Starts of invoke_agent_async for the whole deployment, e.g. 100/m, 2/s, "
        "600/h; empty: none.",
    )
    streaming_task_rate_limit: str = Field(
        default="50/m",
        description="Starts of invoke_agent_with_streaming for the whole deployment; empty: none.",
    )
    rate_limit_user_horizon: float = Field(
        default=5.0,
        gt=0,
        description="Seconds ahead one user may reserve start times under a rate limit: "
        "another user's task waits at most about this long behind that user's backlog.",
    )

    llm_base_url: str | None = Field(
        default=None, description="An OpenAI-compatible API root, e.g. https://api.openai.com/v1"
    )
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_connect_timeout: float = Field(default=10.0, gt=0)
    llm_read_timeout: float = Field(
        default=60.0, gt=0, description="Longest silence allowed between two streamed chunks."
    )
    tool_agent_max_turns: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Model turns tool_agent may take (each may call tools) before it gives up.",
    )
    tool_time_limit: float = Field(
        default=30.0,
        gt=0,
        description="Seconds one tool call may take; past it the task fails with ToolTimeoutError.",
    )
    progress_min_interval: float = Field(
        default=0.25,
        ge=0,
        description="Least seconds between two progress reports while generating.",
    )
    stream_coalesce_window: float = Field(
        default=0.005,
        ge=0,
        le=1,
        description="Seconds over which streamed chunks are merged into one event; 0: none.",
    )
    echo_word_delay: float = Field(
        default=0.05, ge=0, le=5, description="Pause between the words the echo agent streams."
    )

    session_history_messages: int = Field(
        default=50, ge=0, le=1000, description="Earlier turns of a session an agent receives."
    )
    session_expiry_hours: float = Field(
        default=24, gt=0, description="Sessions idle longer than this are deleted."
    )
    audit_log_retention_days: float = Field(
        default=90, gt=0, description="Audit rows older than this go to the archive."
    )
    audit_archive_url: str = Field(
        default="./var/audit-archive",
        description="Directory or fsspec URL (s3://bucket/prefix) of the audit archive.",
    )
    audit_archive_storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description='JSON options for the archive\'s filesystem, e.g. {"endpoint_url": "..."}.',
    )
    audit_archive_batch_size: int = Field(default=1000, ge=1, le=100_000)
    temp_dir: Path = Field(
        default=Path("/tmp/agent_service"),  # noqa: S108 (the documented default root)
        description="Root under which cleanup_temp_files may delete old files.",
    )
    schedule_cleanup_expired_sessions: str = "0 * * * *"
    schedule_archive_old_audit_logs: str = "0 2 * * *"
    schedule_cleanup_token_blacklist: str = "0 */6 * * *"  # noqa: S105 (a cron line)
    schedule_cleanup_temp_files: str = "0 3 * * *"

    @field_validator("worker_metrics_port", mode="before")
    @classmethod
    def _empty_port_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("metrics_allowed_networks")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        parse_networks(value)
        return value

    @cached_property
    def metrics_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.metrics_allowed_networks)

    @field_validator("temp_dir")
    @classmethod
    def _temp_dir_is_not_the_filesystem_root(cls, value: Path) -> Path:
        # Not resolved: a TEMP_DIR that is a symlink is refused when swept, never followed.
        normal = Path(os.path.normpath(value.expanduser().absolute()))
        if normal == Path(normal.anchor):
            raise ValueError("TEMP_DIR must not be the filesystem root")
        return normal

    @model_validator(mode="after")
    def _safe_in_production(self) -> "WorkerSettings":
        if self.environment != "production":
            return self
        problem = self.production_problem()
        if problem is not None:
            raise ValueError(problem)
        if "://" not in self.audit_archive_url and not os.path.isabs(self.audit_archive_url):
            raise ValueError(
                "AUDIT_ARCHIVE_URL is a directory relative to the working directory: in "
                "production archived audit logs must outlive the machine. Set it to "
                "s3://bucket/prefix or an absolute directory on persistent storage."
            )
        return self

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> "WorkerSettings":
        if self.celery_task_soft_time_limit >= self.celery_task_time_limit:
            raise ValueError(
                "CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT "
                f"({self.celery_task_soft_time_limit} >= {self.celery_task_time_limit})"
            )
        if self.celery_broker_visibility_timeout <= self.longest_time_limit:
            raise ValueError(
                "CELERY_BROKER_VISIBILITY_TIMEOUT must exceed the longest task time limit "
                f"({self.longest_time_limit} s), or Redis would hand a running task to a "
                "second worker"
            )
        return self

    @field_validator("agent_task_rate_limit", "streaming_task_rate_limit")
    @classmethod
    def _rate_limit_reads(cls, value: str | None) -> str:
        text = value or ""
        parse_rate(text)  # raises with the expected form
        return text

    def task_rates(self) -> dict[str, float]:
        """Starts per second of each rate-limited task."""
        rates = {
            INVOKE_AGENT_ASYNC: parse_rate(self.agent_task_rate_limit),
            INVOKE_AGENT_WITH_STREAMING: parse_rate(self.streaming_task_rate_limit),
        }
        return {name: rate for name, rate in rates.items() if rate is not None}

    @property
    def longest_time_limit(self) -> int:
        return min(LONGEST_TASK_LIMIT, self.celery_task_time_limit)

    def time_limits(self, task_limit: int) -> tuple[int, int]:
        """The (soft, hard) limits of a task whose own hard limit is ``task_limit``."""
        hard = min(task_limit, self.celery_task_time_limit)
        soft = min(task_limit - 30, self.celery_task_soft_time_limit, hard - 1)
        return max(soft, 1), hard


@lru_cache
def get_settings() -> WorkerSettings:
    """The process's settings, read from the environment (and ``.env``) on first use."""
    return WorkerSettings()
