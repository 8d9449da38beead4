"""Binance's public trade archive (data.binance.vision): which files hold a span of days, their
checksums, and their trades, streamed out of the zip (binance.md, "The public archive").

    {BINANCE_ARCHIVE_URL}/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2025-03-04.zip
    {BINANCE_ARCHIVE_URL}/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2025-03.zip
    ... and each with `.CHECKSUM` appended: `<sha256 hex>  <zip name>`

A zip holds one CSV without a header: `id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch`,
booleans `True`/`False`, `time` in ms up to 2024-12-31 and in µs from 2025-01-01 (told apart by
magnitude). Its ids, price and qty strings and side are the stream's and REST's, so a trade read
here is built by the same `make_trade` and renders the same line (same key, same fields,
`time_us` by the same rule): a trade stored live and loaded again overwrites itself.

The archive's known defects (late files, re-published files with a new checksum, a truncated
file whose checksum matched, missing trades published later) all end as an ArchiveError, which
every caller treats as "not now": a file is either read whole or not at all. The download is
written to disk as it arrives, hashed on the way, and the CSV is read out of the zip row by row,
so memory stays bounded whatever the file's size (a monthly file of a busy pair is > 1 GB).
"""
from __future__ import annotations

import calendar
import hashlib
import io
import logging
import os
import re
import threading
import time
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Optional

import urllib3

from workers.common.backoff import SYSTEM_CLOCK, Backoff, Clock
from workers.common.httputil import retry_after_s, system_ca_dir
from workers.errors import (
    ArchiveCorrupt,
    ArchiveError,
    ChecksumMismatch,
    InvalidMessage,
    NotPublished,
)
from workers.exchange.protocol import make_trade
from workers.trade import Trade

log = logging.getLogger(__name__)

DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
CHUNK_BYTES = 1 << 20  # read and hashed per step of a download
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 60.0
# A 5xx or a dropped connection is retried this many times, waits doubling from 1 s to 60 s;
# then the file counts as "not now" (ArchiveError), to be tried again on a later run.
ATTEMPTS, RETRY_INITIAL_S, RETRY_MAX_S = 6, 1.0, 60.0
_CHECKSUM = re.compile(r"\s*([0-9a-fA-F]{64})\s+\*?(\S+)\s*")
DAY_MS = 86_400_000
# Spot days are usually out within 4-6 hours; multi-day delays happened (binance.md, "The
# public archive"). A 404 a week after the day is more likely a day the pair did not trade.
LATE_DAYS = 7


@dataclass(frozen=True)
class ArchiveFile:
    """One file of the archive: a UTC day (`period` 2025-03-04) or a month (2025-03) of a pair."""

    symbol: str
    period: str

    @property
    def monthly(self) -> bool:
        return len(self.period) == 7

    @property
    def name(self) -> str:
        return f"{self.symbol}-trades-{self.period}.zip"

    @property
    def path(self) -> str:
        kind = "monthly" if self.monthly else "daily"
        return f"/data/spot/{kind}/trades/{self.symbol}/{self.name}"

    @property
    def first_day(self) -> date:
        return date.fromisoformat(self.period + "-01" if self.monthly else self.period)

    @property
    def last_day(self) -> date:
        first = self.first_day
        if not self.monthly:
            return first
        return first.replace(day=calendar.monthrange(first.year, first.month)[1])

    def days(self) -> List[date]:
        """The UTC days the file covers."""
        return list(day_range(self.first_day, self.last_day))

    def daily_files(self) -> List["ArchiveFile"]:
        """The daily files that hold the same trades (where a monthly one is not published)."""
        return [ArchiveFile(self.symbol, d.isoformat()) for d in self.days()]


def day_range(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def day_span_ms(day: date) -> tuple[int, int]:
    """[start, end) of a UTC day in epoch ms: the trades a daily file holds."""
    start = calendar.timegm(day.timetuple()) * 1000
    return start, start + DAY_MS


def utc_day(time_ms: int) -> date:
    return datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc).date()


def files_for(symbol: str, first: date, last: date, monthly: bool = True) -> List[ArchiveFile]:
    """The files holding every trade of `symbol` from `first` to `last` (UTC days, inclusive):
    a monthly file for each whole calendar month inside the span (one download instead of ~30),
    a daily file for every other day. `monthly=False`: daily files only."""
    files: List[ArchiveFile] = []
    day = first
    while day <= last:
        month_end = day.replace(day=calendar.monthrange(day.year, day.month)[1])
        if monthly and day.day == 1 and month_end <= last:
            files.append(ArchiveFile(symbol, day.strftime("%Y-%m")))
            day = month_end + timedelta(days=1)
        else:
            files.append(ArchiveFile(symbol, day.isoformat()))
            day += timedelta(days=1)
    return files


def parse_checksum(text: str, name: str) -> str:
    """The sha256 hex of a `.CHECKSUM` body (`sha256sum` output naming `name`)."""
    match = _CHECKSUM.fullmatch(text)
    if not match or match.group(2) != name:
        raise ArchiveCorrupt(name, f".CHECKSUM is not '<sha256>  {name}': {text[:120]!r}")
    return match.group(1).lower()


@dataclass(frozen=True)
class Downloaded:
    """A zip on disk whose sha256 matched its `.CHECKSUM`."""

    file: ArchiveFile
    path: Path
    sha256: str
    size: int


class ArchiveClient:
    """Downloads archive files; thread-safe (a bounded pool of downloads shares one)."""

    def __init__(self, base_url: str = DEFAULT_ARCHIVE_URL, parallel: int = 4,
                 clock: Clock = SYSTEM_CLOCK, stopping: Optional[threading.Event] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.stopping = stopping or threading.Event()
        # The archive is S3 behind a CDN: keep-alive, one connection per parallel download.
        self.pool = urllib3.PoolManager(
            num_pools=2, maxsize=max(1, parallel), block=True, retries=False,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            ca_cert_dir=system_ca_dir(), headers={"User-Agent": "tick-capture"})

    def close(self) -> None:
        self.pool.clear()

    def url(self, file: ArchiveFile, suffix: str = "") -> str:
        return f"{self.base_url}{file.path}{suffix}"

    def checksum(self, file: ArchiveFile) -> str:
        """The published sha256 of `file`; NotPublished on 404."""
        parts: List[bytes] = []
        self._get(file, ".CHECKSUM", parts.append, restart=parts.clear)
        return parse_checksum(b"".join(parts).decode("utf-8", "replace"), file.name)

    def download(self, file: ArchiveFile, directory: Path,
                 progress: Optional[Callable[[int], None]] = None) -> Downloaded:
        """The zip of `file` into `directory`, checked against its `.CHECKSUM`.

        The checksum is read first, so a file re-published meanwhile fails the check (and is
        fetched again on the next run) instead of passing with a stale sum. `progress` gets the
        byte count of each chunk as it arrives. On any error nothing is left in `directory`.
        """
        expected = self.checksum(file)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / file.name
        partial = directory / (file.name + ".part")
        try:
            with open(partial, "wb") as out:
                receiver = _Receiver(out, progress)
                self._get(file, "", receiver.write, restart=receiver.restart)
            actual = receiver.digest.hexdigest()
            if actual != expected:
                raise ChecksumMismatch(file.name, f"sha256 {actual} is not the published "
                                                  f"{expected} (re-published meanwhile?)")
            os.replace(partial, target)
        finally:
            if partial.exists():
                partial.unlink()
        return Downloaded(file, target, expected, receiver.size)

    def _get(self, file: ArchiveFile, suffix: str, sink: Callable[[bytes], None],
             restart: Optional[Callable[[], None]] = None) -> None:
        """Stream one URL into `sink`, retrying 5xx, 429 and network errors a few times."""
        url = self.url(file, suffix)
        backoff = Backoff(RETRY_INITIAL_S, RETRY_MAX_S, clock=self.clock)
        problem, retry_after = "", 0.0
        for attempt in range(ATTEMPTS):
            if attempt:
                wait = backoff.next_delay(at_least=retry_after)
                log.info("event=archive_retry file=%s%s attempt=%d wait_s=%.1f reason=%s",
                         file.name, suffix, attempt + 1, wait, problem)
                if self.clock.sleep(wait, self.stopping):
                    raise ArchiveError(file.name + suffix, "stopped")
                if restart is not None:
                    restart()
            retry_after = 0.0
            try:
                response = self.pool.request("GET", url, preload_content=False)
            except urllib3.exceptions.HTTPError as exc:
                problem = type(exc).__name__
                continue
            try:
                status = response.status
                if status in (403, 404):  # S3 answers 403 for a key it does not list
                    raise NotPublished(file.name + suffix, f"not published yet ({status})")
                if status == 429 or status >= 500:
                    problem = f"http_{status}"
                    retry_after = retry_after_s(response.headers) or 0.0
                    continue
                if status != 200:
                    raise ArchiveError(file.name + suffix, f"HTTP {status} from {url}")
                try:
                    for chunk in response.stream(CHUNK_BYTES):
                        if self.stopping.is_set():  # Ctrl-C: not the rest of a 1 GB file
                            raise ArchiveError(file.name + suffix, "stopped")
                        sink(chunk)
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    problem = type(exc).__name__
                    continue
                return
            finally:
                response.release_conn()
        raise ArchiveError(file.name + suffix, f"failed {ATTEMPTS} times ({problem}) from {url}")


class _Receiver:
    """A download's bytes to disk, hashed and counted on the way; a retry starts over."""

    def __init__(self, out: BinaryIO, progress: Optional[Callable[[int], None]]) -> None:
        self.out = out
        self.progress = progress
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.out.write(chunk)
        self.size += len(chunk)
        if self.progress is not None:
            self.progress(len(chunk))

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.digest = hashlib.sha256()
        self.size = 0


def _flag(value: str) -> bool:
    if value == "True":
        return True
    if value == "False":
        return False
    raise InvalidMessage("wrong_type", f"isBuyerMaker={value!r}, not True or False")


def read_trades(path: Path, symbol: str, name: Optional[str] = None,
                now_ms: Optional[int] = None) -> Iterator[Trade]:
    """The trades of an archive zip, in file order, one row at a time.

    Each row is checked as a stream trade is (make_trade); a row that is not a trade, or a zip
    that cannot be read (a truncated file whose checksum matched), raises ArchiveCorrupt naming
    the file and the row: the caller must not keep a file read halfway.
    """
    label = name or path.name
    # the future-time bound read once per file, not once per row (make_trade would ask the
    # clock for each of a day's million rows): a file is read within minutes
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveCorrupt(label, f"not a readable zip ({exc})") from exc
    with archive:
        members = [m for m in archive.namelist() if m.endswith(".csv")]
        if len(members) != 1:
            raise ArchiveCorrupt(label, f"holds {len(members)} CSV files, not one")
        line = 0
        try:
            with archive.open(members[0]) as raw:
                for line, row in enumerate(io.TextIOWrapper(raw, "ascii", newline=""), 1):
                    cells = row.rstrip("\r\n").split(",")
                    if line == 1 and cells[0] == "id":
                        continue  # a header (futures files have one; spot may one day)
                    if len(cells) != 7:
                        raise ArchiveCorrupt(label, f"{len(cells)} columns, not 7", line)
                    yield make_trade(symbol, int(cells[0]), cells[1], cells[2], int(cells[4]),
                                     _flag(cells[5]), now_ms=now)
        except InvalidMessage as exc:
            raise ArchiveCorrupt(label, str(exc), line) from exc
        except ValueError as exc:  # int() of the id or time, or a non-ASCII byte
            raise ArchiveCorrupt(label, str(exc), line) from exc
        except (zipfile.BadZipFile, EOFError, OSError) as exc:  # CRC, a cut deflate stream
            raise ArchiveCorrupt(label, f"unreadable after row {line - 1} ({exc})") from exc


def archive_problem(exc: ArchiveError, day: date, today: date) -> str:
    """What the ArchiveError of a file starting on `day` means for a person, as scripts/history
    and scripts/verify both say it on the file's or the day's line. Every kind is "not now",
    but a 404 for a day long over most likely means the pair did not trade that day."""
    if isinstance(exc, NotPublished):
        waited = (today - day).days - 1  # whole days since `day` ended
        if waited < LATE_DAYS:
            return "not published yet: run again later"
        return (f"not in the archive {waited} days after it ended: the pair most likely did "
                "not trade that day (listed later, or delisted); if it did, run again later")
    if isinstance(exc, ChecksumMismatch):
        return f"checksum mismatch: {exc.detail}; run again later"
    if isinstance(exc, ArchiveCorrupt):
        return f"corrupt: {exc.detail}; run again later"
    return f"download failed: {exc.detail}; run again later"
