"""What can go wrong for the CLI, each with the exit status it ends the command with.

::

    CliError                        printed on stderr; the command exits with its .exit_code
    ├── ConfigurationError       2  no API key, a URL that is not http(s)
    ├── ServerUnreachableError   7  nothing answers at the URL (refused, unknown host, timeout)
    └── ApiError                 9  the server refused the request (a status not below),
        │                           or answered with something not the API's (UnexpectedAnswerError)
        ├── UnauthorizedError    3  401: the key (or token) was refused
        ├── NotFoundError        4  404: no such agent, task or session for this key
        ├── RateLimitedError     5  429: too many requests (.retry_after: when to try again)
        └── UnavailableError     6  503: the service cannot serve now (Redis, broker, database)

Besides these, a command that followed a task exits 0 when it completed, 1 when it failed, 8 when
it was cancelled, and 130 when the user detached from it with Ctrl-C (``ExitCode``).

httpx's errors are translated where the HTTP calls are made (``cli.client``), with ``from exc``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    TASK_FAILED = 1
    USAGE = 2
    UNAUTHORIZED = 3
    NOT_FOUND = 4
    RATE_LIMITED = 5
    UNAVAILABLE = 6
    UNREACHABLE = 7
    TASK_CANCELLED = 8
    REFUSED = 9
    DETACHED = 130


class CliError(Exception):
    exit_code: ExitCode = ExitCode.REFUSED


class ConfigurationError(CliError):
    exit_code = ExitCode.USAGE


class ServerUnreachableError(CliError):
    exit_code = ExitCode.UNREACHABLE


class ApiError(CliError):
    """The server answered with an error status; ``detail`` is its own explanation."""

    exit_code = ExitCode.REFUSED

    def __init__(self, message: str, *, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class UnauthorizedError(ApiError):
    exit_code = ExitCode.UNAUTHORIZED


class NotFoundError(ApiError):
    exit_code = ExitCode.NOT_FOUND


class RateLimitedError(ApiError):
    exit_code = ExitCode.RATE_LIMITED

    def __init__(
        self, message: str, *, status: int, detail: str, retry_after: float | None
    ) -> None:
        super().__init__(message, status=status, detail=detail)
        self.retry_after = retry_after


class UnavailableError(ApiError):
    exit_code = ExitCode.UNAVAILABLE

    def __init__(
        self, message: str, *, status: int, detail: str, retry_after: float | None
    ) -> None:
        super().__init__(message, status=status, detail=detail)
        self.retry_after = retry_after
