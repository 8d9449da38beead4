"""Errors of the tick-capture service, and the exit codes they map to.

    TickCaptureError
     ├── ConfigError        a setting or config/symbols.yaml is wrong: exit 2, do not restart
     ├── RestError          the exchange's REST API refused a request or kept failing
     │    └── RestStopped          the worker is stopping: the request was not made
     ├── RestShapeError     an answer of a shape the API does not document: never retried;
     │                      a worker meeting one exits 1 (a bug, or the exchange changed)
     └── SinkError          InfluxDB refused or failed a write
          ├── RetryableWriteError     429, 5xx, timeouts, refused connections
          └── PermanentWriteError     401, 403, 404, 400, 413: a person must fix something
"""
from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # a bug or an unforeseen failure: supervisord restarts the worker
EXIT_CONFIG = 2  # a configuration error: restarting cannot help, so supervisord must not
EXIT_RUNTIME = 3  # a tool (gap-audit) could not reach InfluxDB or the exchange: try again later


class TickCaptureError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(TickCaptureError):
    """A setting or a line of the symbols file is wrong; the message says how to fix it."""


class RestError(TickCaptureError):
    """The exchange refused a request, or it still failed after the retries."""

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[int] = None):
        super().__init__(message)
        self.status = status
        self.code = code


class RestStopped(RestError):
    """The worker is stopping: the request was not made, or its retry wait was cut short."""


class RestShapeError(TickCaptureError):
    """An answer of a shape the API does not document: a bug or an exchange change, not retried.

    Not a RestError on purpose, so `except RestError` retry paths do not swallow it.
    """

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: unexpected answer: {detail}")
        self.path = path
        self.detail = detail


class SinkError(TickCaptureError):
    """A batch could not be written."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableWriteError(SinkError):
    """Worth trying again later: the server is busy, down or unreachable."""

    def __init__(self, message: str, status: Optional[int] = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class PermanentWriteError(SinkError):
    """Trying again with the same request cannot succeed until a person acts."""
