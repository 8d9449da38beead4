"""Every error class of the tick-capture service, and the one table of exit codes.

    TickCaptureError
     ├── ConfigError          a setting, an argument or config/symbols.yaml is wrong: exit 2
     ├── AlreadyRunning       another process holds the worker's home (common/lock.py): exit 2
     ├── InvalidMessage       a stream or REST message that is not a valid trade: counted and
     │                        skipped (raised per malformed frame: its constructor stays cheap)
     ├── RestError            the exchange's REST API refused a request or kept failing
     │    └── RestStopped            the worker is stopping: the request was not made
     ├── RestShapeError       an answer of a shape the API does not document: never retried;
     │                        a worker meeting one exits 1 (a bug, or the exchange changed)
     ├── SinkError            InfluxDB refused or failed a write (or a read, for the tools)
     │    ├── RetryableWriteError     429, 5xx, timeouts, refused connections
     │    ├── PermanentWriteError     401, 403, 404, 400, 413: a person must fix something
     │    │    └── ContentRefused     the batch's content was refused (400, 413, 422)
     │    │         └── PartialWrite  the valid lines were stored, the others refused
     │    ├── NoMapping               InfluxQL reads find no database: a bucket without a DBRP
     │    │                           mapping (Cloud Serverless); the message is the fix
     │    └── LoadFailed              scripts/load-files gave up on InfluxDB: exit 3
     ├── NoData               scripts/plot found nothing to draw: exit 1
     └── ArchiveError         Binance's public archive: a file cannot be had or read now
          ├── NotPublished            404: not published yet (or never): try again later
          ├── ChecksumMismatch        the zip's sha256 is not its .CHECKSUM's: try again later
          └── ArchiveCorrupt          the zip or a CSV row cannot be read (a truncated file)

The classes are defined here and nowhere else; the modules that raise them import them from
here (and keep the old names importable: `from workers.storage.sink import PartialWrite`).
Standard library only: scripts and every room of `workers/` import this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

# ---- exit codes: the one table ---------------------------------------------------------------
# Every command of the project exits with one of these: the worker (`python -m workers`), the
# reconciler and scripts/apply-symbols, scripts/status, gap-audit, load-files, plot, the test
# rigs (exchange-sim, influx-rig, bench) and the shell scripts (which cannot import this: they
# use the same numbers and name this file). README "Exit codes" lists them once; each --help
# says what they mean for that command (exit_codes_help below).

# Done, nothing wrong: a requested stop (SIGTERM), every worker healthy, no gap left.
EXIT_OK = 0
# The command ran and found a problem: a worker unhealthy, gaps remain, nothing to draw, a file
# unreadable. Also an unexpected error: Python ends an uncaught exception with 1, so a crash
# shares the code (EXIT_UNEXPECTED names that use); supervisord restarts a worker exiting so.
EXIT_PROBLEM = 1
EXIT_UNEXPECTED = EXIT_PROBLEM
# Configuration: a setting, an argument (argparse's usage errors are 2 too), the symbols file, or
# a missing set-up (.venv, influxd). Retrying cannot help, a person must fix it: supervisord does
# not restart a worker that exits with it, and the reconciler does not revive it.
EXIT_CONFIG = 2
# A runtime failure: InfluxDB, the exchange or supervisord did not answer, failed or refused.
# Nothing needs editing (the command's line says what failed): try again later.
EXIT_RUNTIME = 3

EXIT_CODES: Dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_PROBLEM: "a problem found, or an unexpected error",
    EXIT_CONFIG: "configuration error",
    EXIT_RUNTIME: "runtime failure",
}

# The exits of a worker that supervisord must not restart (its `exitcodes=`, with
# autorestart=unexpected): a requested stop, and a configuration error that a restart would only
# repeat. EXIT_UNEXPECTED is restarted (after the worker's 5 s crash pause); EXIT_RUNTIME would be
# too, as "try again later" asks (a worker retries inside the process and does not exit with it).
NOT_RESTARTED: Tuple[int, ...] = (EXIT_OK, EXIT_CONFIG)


def exit_codes_help(ok: str, problem: str = "", config: str = "", runtime: str = "") -> str:
    """The `exit codes:` line of a command's --help: the table's codes, each with what it means
    for this command. An empty `problem` leaves only the unexpected error under 1; an empty
    `runtime` leaves 3 out (the command meets no runtime failure it reports as such)."""
    one = f"{problem}, or an unexpected error" if problem else "an unexpected error"
    two = f"configuration error ({config})" if config else "configuration error"
    parts = [f"{EXIT_OK} {ok}", f"{EXIT_PROBLEM} {one}", f"{EXIT_CONFIG} {two}"]
    if runtime:
        parts.append(f"{EXIT_RUNTIME} {runtime} (try again later)")
    return f"exit codes: {'; '.join(parts)}. (README: Exit codes)"


# ---- errors ------------------------------------------------------------------------------------

class TickCaptureError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(TickCaptureError):
    """A setting or a line of the symbols file is wrong; the message says how to fix it."""


class AlreadyRunning(TickCaptureError):
    """Another process runs this worker: it holds the lock file `path`; `pid` when it wrote one.

    Not a ConfigError: nothing is misconfigured, and the reconciler may start the worker again
    once the other process has gone (its log has no `event=config_error`).
    """

    def __init__(self, path: Path, pid: Optional[int]) -> None:
        super().__init__(f"{path} is locked by {'pid ' + str(pid) if pid else 'another process'}")
        self.path = path
        self.pid = pid


class InvalidMessage(TickCaptureError):
    """A message that is not a valid trade of a subscribed symbol; `reason` is a short category.

    Raised for every malformed frame, so the constructor does no more than store its fields.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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


class ContentRefused(PermanentWriteError):
    """The server refused (part of) a batch for what it contains: sending it again cannot help.

    `reason` is the server's own message (the `message`/`error` of its JSON answer).
    """

    def __init__(self, message: str, status: Optional[int], reason: str) -> None:
        super().__init__(message, status)
        self.reason = " ".join(reason.split()) or message


class PartialWrite(ContentRefused):
    """The server stored the valid lines of a batch and rejected the others (1.x/3.x 400, 2.x 422).

    `dropped` is the server's `dropped=N` (None when it gives none). It never says WHICH lines:
    the writer finds them by writing the batch again in parts (storage/writer.py).
    """

    def __init__(self, message: str, status: Optional[int], reason: str,
                 dropped: Optional[int]) -> None:
        super().__init__(message, status, reason)
        self.dropped = dropped


class NoMapping(SinkError):
    """/query answered `database not found` (Cloud Serverless does, in a 200 body, until the
    bucket has a DBRP mapping: influxdb-servers.md, Reads). Its one line is the fix: the
    `influx v1 dbrp create` command, with the bucket's id where the token can read it."""


class LoadFailed(SinkError):
    """scripts/load-files: InfluxDB cannot take more now (unreachable past the retry budget,
    token or bucket refused): stop, nothing more can be loaded (exit 3)."""


class NoData(TickCaptureError):
    """scripts/plot: nothing to draw for the range or the symbol (exit 1)."""


class ArchiveError(TickCaptureError):
    """A file of Binance's public archive cannot be had or read now (exchange/archive.py).

    Every kind is "try again later" for the tools: the archive publishes late, re-publishes
    and once served a truncated file with a matching checksum (binance.md, The public archive).
    `name` is the file's name (e.g. BTCUSDT-trades-2025-03-04.zip).
    """

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class NotPublished(ArchiveError):
    """The archive answers 404 for the file or its .CHECKSUM: not published yet, or never."""


class ChecksumMismatch(ArchiveError):
    """The downloaded zip's sha256 differs from its .CHECKSUM (a re-publication under way, or
    a broken download)."""


class ArchiveCorrupt(ArchiveError):
    """The zip cannot be opened or a CSV row is not a trade (`line`: the row's number)."""

    def __init__(self, name: str, detail: str, line: Optional[int] = None) -> None:
        super().__init__(name, f"line {line}: {detail}" if line is not None else detail)
        self.line = line
