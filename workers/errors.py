"""Errors of the tick-capture service, and the exit codes they map to.

    TickCaptureError
     ├── ConfigError        a setting or config/symbols.yaml is wrong: exit 2, do not restart
     ├── StreamError        the exchange connection failed (retried inside the worker)
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


class StreamError(TickCaptureError):
    """The exchange connection failed."""


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
