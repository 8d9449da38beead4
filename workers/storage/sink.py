"""Where batches go: InfluxDB (one HTTP request per batch) or, with no database, local files.

Both raise RetryableWriteError or PermanentWriteError (ContentRefused and PartialWrite for what the
server refuses in a batch; all defined in errors.py); the retry policy lives in writer.py.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Optional, Protocol

from workers.common.atomic import append_durable
from workers.common.httputil import retry_after_s
from workers.common.timefmt import file_stamp
from workers.errors import (
    ContentRefused,
    PartialWrite,
    PermanentWriteError,
    RetryableWriteError,
)
from workers.settings import InfluxSettings
from workers.storage.influx_http import client_tls_options
from workers.storage.lineproto import PRECISION

log = logging.getLogger(__name__)


class Sink(Protocol):
    def write(self, body: str) -> None: ...

    def close(self) -> None: ...


class InfluxSink:
    """Writes through influxdb-client's SYNCHRONOUS API, one pre-joined body per call.

    Not the library's batching mode: it drops a batch after its retries, queues without bound,
    has a no-op flush() (write_api.py; influxdb-client-python issue #697) and costs ~20 us of CPU
    per point (measured: README, "Why these choices").
    """

    def __init__(self, settings: InfluxSettings) -> None:
        # Imported here so that the no-database mode does not pay for the library's import.
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        # The reads' TLS trust too (influx_http): verified against the system's CA directory.
        self.client = InfluxDBClient(url=settings.url, token=settings.token, org=settings.org,
                                     timeout=int(settings.timeout_s * 1000),
                                     enable_gzip=settings.gzip, **client_tls_options(settings))
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: str) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        s = self.settings
        try:
            # The library takes the precision's string form too ("ns"); its stubs say enum only.
            self.api.write(bucket=s.bucket, org=s.org, record=body,
                           write_precision=PRECISION)  # type: ignore[arg-type]
        except ApiException as exc:
            if not exc.status:  # no answer: the library's form of a TLS failure (status 0)
                raise RetryableWriteError(f"InfluxDB at {s.url} unreachable: "
                                          f"{' '.join(str(exc.reason).split())[:300]}") from None
            raise classify_status(exc.status, str(exc.body or exc.reason or "")[:300],
                                  retry_after_s(exc.headers), s) from None
        except (Urllib3Error, OSError) as exc:
            raise RetryableWriteError(f"InfluxDB at {s.url} unreachable: "
                                      f"{type(exc).__name__}") from None

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]  # influxdb-client leaves it untyped
        self.client.close()  # type: ignore[no-untyped-call]


def classify_status(status: int, body: str, retry_after: Optional[float],
                    s: InfluxSettings) -> Exception:
    """The error for an HTTP answer, with a message that names what to fix. `body` may be JSON,
    empty or an HTML page (Cloud Serverless, a proxy: influxdb-servers.md, Writes, "error
    body"): messages show it as one line (`shown_body`)."""
    shown = shown_body(body)
    if status == 429 or status >= 500 or (status == 400 and overloaded(body)):
        return RetryableWriteError(f"InfluxDB answered {status}: {shown[:200]}", status,
                                   retry_after)
    if status in (401, 403):
        return PermanentWriteError(
            f"InfluxDB refused the token ({status}): check INFLUXDB_TOKEN in .env.local; it needs "
            f"write access to bucket {s.bucket!r} of org {s.org!r}", status)
    if status == 404:
        return PermanentWriteError(
            f"InfluxDB answered 404 ({shown[:120]}): check that bucket {s.bucket!r} exists in org "
            f"{s.org!r}; InfluxDB 1.x needs 1.8+ for the v2 write API that this service uses",
            status)
    if status == 413:
        return ContentRefused("InfluxDB refused the request size (413): lower "
                              "WRITE_BATCH_SIZE", status, "request too large (413)")
    reason = server_message(body)
    if status in (400, 422) and "partial write" in body:
        return PartialWrite(f"InfluxDB stored part of a batch and rejected the rest: "
                            f"{shown[:300]}", status, reason[:1000], dropped_count(body))
    return ContentRefused(f"InfluxDB rejected the batch ({status}): {shown[:300]}", status,
                          reason[:1000])


def overloaded(body: str) -> bool:
    """3 Core's answer at its request limit: 400 `invalid` "this service is overloaded, please
    try again later" (influxdb3 RequestLimit; influxdb-servers.md, Writes, "quota / overload").
    Busy, not a refusal of the batch: retried."""
    return "service is overloaded" in server_message(body)


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def shown_body(body: str) -> str:
    """An answer's body for a one-line message: JSON as it came (its words are the server's),
    an HTML page as its title (a proxy's error page: nginx answers 413 so), a body with no
    text as saying so, anything else on one line."""
    text = body.strip()
    if not text:
        return "(an empty body)"
    if text.startswith("{"):
        return " ".join(text.split())
    if text[:200].lower().lstrip().startswith(("<!doctype html", "<html", "<head", "<body")):
        title = _TITLE.search(text)
        words = title.group(1) if title else _TAG.sub(" ", text)
        return f"{' '.join(words.split())[:150]} (an HTML page, likely from a proxy)"
    return " ".join(text.split())


_MESSAGE_FIELD = re.compile(r'"(?:message|error)"\s*:\s*"((?:[^"\\]|\\.)*)')


def server_message(body: str) -> str:
    """The server's words in an error body: its JSON `message` (2.x) or `error` (1.x), else the
    body itself on one line (`shown_body`: an HTML page's title). Works on a body cut short too
    (the JSON then does not parse)."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            for key in ("message", "error"):
                if isinstance(doc.get(key), str):
                    return str(doc[key])
    except ValueError:
        match = _MESSAGE_FIELD.search(body)
        if match:
            try:
                return str(json.loads(f'"{match.group(1)}"'))
            except ValueError:
                return match.group(1)
    return shown_body(body)


def dropped_count(text: str) -> Optional[int]:
    """The `dropped=N` of a partial-write answer, or None when it has none."""
    found = re.findall(r"dropped=(\d+)", text)
    return int(found[-1]) if found else None


# The file format of 1.x `influx -import`: an optional `# DDL` section of InfluxQL statements it
# runs first, then `# DML` and the context lines, then line protocol. `CREATE DATABASE` of a
# database that exists changes nothing (1.x), so a file can be imported any number of times.
LP_HEADER_DDL = "# DDL\nCREATE DATABASE {quoted}\n\n"
LP_HEADER_TEMPLATE = "# DML\n# CONTEXT-DATABASE: {db}\n"
LP_HEADER_RP = "# CONTEXT-RETENTION-POLICY: {rp}\n"
DDL_PREFIX = "CREATE DATABASE "  # never a valid line-protocol line (no field has a `=`)


def lp_header(database: str, create: bool = True) -> str:
    """The header that lets 1.x `influx -import` load a file into `database`.

    With `create` it begins with a `# DDL` section creating the database, so the import works
    on a server that does not have it yet; without, it is only `# DML` and the context, for
    files of a database the worker already writes to (the spool and rejected.lp: a replay
    must not meet a statement). A 1.8 bucket `db/rp` names the retention policy too. Readers
    of the data (`is_point_line`) skip every header line.
    """
    db, _, rp = database.partition("/")
    text = LP_HEADER_DDL.format(quoted=quote_identifier(db)) if create else ""
    text += LP_HEADER_TEMPLATE.format(db=db)
    return text + (LP_HEADER_RP.format(rp=rp) if rp else "")


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes: any database name works (`my-db`, `1ticks`)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def is_point_line(line: str) -> bool:
    """False for what a line-protocol file holds besides points: comments (`#`), blank lines
    and the `CREATE DATABASE` of the import header."""
    text = line.strip()
    return bool(text) and not text.startswith("#") and not text.startswith(DDL_PREFIX)


def compress_file(path: Path) -> Path:
    """Gzip `path` to `path.gz` (atomically), remove the original, return the new path."""
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    with open(tmp, "rb") as done:
        os.fsync(done.fileno())
    os.replace(tmp, target)
    path.unlink()
    return target


class FileSink:
    """No database configured: line-protocol files under `directory`, rotated and gzipped.

    The open file is plain text, appended and fsynced per batch (atomic.append_durable), so a
    crash loses nothing and leaves a readable file; it is gzipped when it rotates (or on the
    next start).
    """

    def __init__(self, directory: Path, worker: str, database: str, rotate_s: float) -> None:
        self.directory = directory
        self.worker = worker
        self.database = database
        self.rotate_s = rotate_s
        self._header = lp_header(database).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in sorted(self.directory.glob(f"{worker}-*.lp")):
            log.info("worker=%s event=compress_leftover file=%s", worker, leftover.name)
            compress_file(leftover)
        self._file: Optional[Path] = None  # the open file: batches go there until it rotates
        self._opened = 0.0

    def _open(self) -> None:
        stamp = file_stamp()
        path = self.directory / f"{self.worker}-{stamp}.lp"
        n = 1
        while path.exists() or path.with_name(path.name + ".gz").exists():
            n += 1
            path = self.directory / f"{self.worker}-{stamp}-{n}.lp"
        self._file = path
        self._opened = time.monotonic()

    def write(self, body: str) -> None:
        try:
            if self._file is None or time.monotonic() - self._opened >= self.rotate_s:
                self.rotate()
                self._open()
            assert self._file is not None
            append_durable(self._file, body.encode("utf-8") + b"\n", self._header)
        except OSError as exc:
            raise RetryableWriteError(f"cannot write {self._file}: {exc}") from None

    def rotate(self) -> None:
        """Gzip the open file, if any (a file whose first write failed does not exist)."""
        path, self._file = self._file, None
        if path is not None and path.exists():
            done = compress_file(path)
            log.info("worker=%s event=file_rotated file=%s", self.worker, done.name)

    def close(self) -> None:
        self.rotate()
