"""One stored UTC day of a pair compared with Binance's archive file of that day, id by id and
string by string; the result is a day check (storage/capture_days.py) written as a point.

    archive zip (rows in id order, times non-decreasing) --hour by hour--> compare <-- InfluxQL
                                                                              (that hour's points)

What is compared: every archive id must be stored (else `missing`), every id stored that day
must be in the archive (else `extra`: the archive lacks it, its defect or ours), and a trade in
both must be stored with the archive's price and quantity strings, side, millisecond (the
point's key) and µs (`time_us`); else it is `differing`. A point stored before the service kept
µs has no `time_us`: its millisecond is compared, its µs is not (the stored point does not
contradict the archive; README "History and verified days" says how to gain it).

Memory stays bounded for a day of millions of trades: the day is walked in windows of an hour
(WINDOW_MS), each holding that hour's archive trades and stored points only. A trade whose
stored time lies in the window next to the archive's (a millisecond across an hour) is still
matched: the unmatched trades of one window wait for the next before they count as missing or
extra. Missing and differing ids are kept (8 bytes each) for `--repair`.

`repair`: the missing and the differing trades are written again from the archive through the
history loader (the worker's write path, history/load.py), then the day is checked again.
Differing trades are re-written too: the archive's values are the ones every source writes, so
on InfluxDB 1.x/2.x the re-write replaces the wrong point; InfluxDB 3 may keep either version
of a re-written point (influxdb-servers.md), and the re-check then still says `differing`.
Extra ids are reported, never deleted: nothing proves the archive right about them.
"""
from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Container, Dict, Iterable, Iterator, List, Optional

from workers.errors import ArchiveCorrupt, ChecksumMismatch, NotPublished
from workers.exchange.archive import (
    ArchiveClient,
    ArchiveFile,
    Downloaded,
    archive_problem,
    day_span_ms,
    read_trades,
)
from workers.history.days import today_utc
from workers.settings import InfluxSettings, Settings
from workers.storage.capture_days import VERIFIED, DayCheck, is_verified, now_ns
from workers.storage.influx_query import InfluxQuery, quote_ident, quote_string
from workers.storage.lineproto import NS_PER_MS
from workers.storage.retry_write import write_with_retries
from workers.storage.sink import Sink
from workers.trade import Trade

log = logging.getLogger(__name__)

WINDOW_MS = 3_600_000  # an hour of a busy pair: ~100k trades in memory at once
SAMPLE_IDS = 5  # ids named in a day's line


@dataclass(frozen=True)
class Stored:
    """A trade as InfluxDB holds it: its point's millisecond and its string fields."""

    trade_id: int
    price: str
    qty: str
    buyer_maker: bool
    time_ms: int
    time_us: Optional[int]  # None: stored before the service kept µs


@dataclass
class DayDiff:
    """What comparing one day found. Ids are in archive (or stored) order."""

    symbol: str
    day: date
    trades: int = 0
    stored: int = 0
    first_id: int = 0
    last_id: int = 0
    missing: "array[int]" = field(default_factory=lambda: array("q"))
    extra: "array[int]" = field(default_factory=lambda: array("q"))
    differing: "array[int]" = field(default_factory=lambda: array("q"))
    problem: str = ""  # the archive file could not be read to its end

    @property
    def read_whole(self) -> bool:
        return not self.problem

    @property
    def verified(self) -> bool:
        return is_verified(len(self.missing), len(self.extra), len(self.differing),
                           self.read_whole)

    def check(self, sha256: str, checked_ns: int) -> DayCheck:
        return DayCheck(symbol=self.symbol, day=self.day, check=VERIFIED, trades=self.trades,
                        stored=self.stored, first_id=self.first_id, last_id=self.last_id,
                        missing=len(self.missing), extra=len(self.extra),
                        differing=len(self.differing), sha256=sha256,
                        verified=self.verified, checked_ns=checked_ns)


def differs(archived: Trade, stored: Stored) -> bool:
    """True when the stored trade says anything the archive's row does not."""
    return (archived.price != stored.price or archived.qty != stored.qty
            or archived.buyer_maker != stored.buyer_maker
            or archived.time_ms != stored.time_ms
            or (stored.time_us is not None and archived.time_us != stored.time_us))


StoredWindow = Callable[[int, int], Iterable[Stored]]


class _Walk:
    """The state of a day's walk: the unmatched trades of the previous window."""

    def __init__(self, diff: DayDiff) -> None:
        self.diff = diff
        self.archived: Dict[int, Trade] = {}
        self.stored: Dict[int, Stored] = {}

    def window(self, archived: Dict[int, Trade], stored: Iterable[Stored]) -> None:
        """Match one window's trades with each other and with the previous window's leftovers;
        what the previous window still leaves unmatched is final."""
        left_stored: Dict[int, Stored] = {}
        for one in stored:
            self.diff.stored += 1
            mate = archived.pop(one.trade_id, None) or self.archived.pop(one.trade_id, None)
            if mate is None:
                left_stored[one.trade_id] = one
            elif differs(mate, one):
                self.diff.differing.append(one.trade_id)
        for trade_id in list(archived):
            late = self.stored.pop(trade_id, None)
            if late is not None:
                mate = archived.pop(trade_id)
                if differs(mate, late):
                    self.diff.differing.append(trade_id)
        self.settle()
        self.archived, self.stored = archived, left_stored

    def settle(self) -> None:
        self.diff.missing.extend(sorted(self.archived))
        self.diff.extra.extend(sorted(self.stored))
        self.archived, self.stored = {}, {}


def compare_day(symbol: str, day: date, archive: Iterable[Trade], stored_window: StoredWindow,
                window_ms: int = WINDOW_MS) -> DayDiff:
    """Compare the archive's trades of `day` with the points `stored_window(start_ms, end_ms)`
    reads, window by window over the whole UTC day. An archive that cannot be read to its end
    (ArchiveCorrupt) stops the walk: `problem` says so, and the day is not verified."""
    diff = DayDiff(symbol, day)
    walk = _Walk(diff)
    start, day_end = day_span_ms(day)
    rows = _counted(archive, diff)
    try:
        pending = next(rows, None)
        while start < day_end:
            end = min(start + window_ms, day_end)
            window: Dict[int, Trade] = {}
            # rows past the day's end (an archive defect) go to its last window
            while pending is not None and (pending.time_ms < end or end == day_end):
                window[pending.trade_id] = pending
                pending = next(rows, None)
            walk.window(window, stored_window(start, end))
            start = end
    except ArchiveCorrupt as exc:
        diff.problem = str(exc)
    walk.settle()
    return diff


def _counted(archive: Iterable[Trade], diff: DayDiff) -> Iterator[Trade]:
    for trade in archive:
        if not diff.trades:
            diff.first_id = trade.trade_id
        diff.trades += 1
        diff.last_id = trade.trade_id
        yield trade


class StoredDay:
    """Reads the stored trades of a symbol, one window at a time, over InfluxQL."""

    def __init__(self, query: InfluxQuery, influx: InfluxSettings, symbol: str) -> None:
        self.query = query
        self.prefix = (f"SELECT trade_id, price_str, qty_str, buyer_maker, time_us FROM "
                       f"{quote_ident(influx.measurement)} WHERE symbol = {quote_string(symbol)}")

    def __call__(self, start_ms: int, end_ms: int) -> Iterator[Stored]:
        q = f"{self.prefix} AND time >= {start_ms * NS_PER_MS} AND time < {end_ms * NS_PER_MS}"
        for series in self.query.query(q):
            yield from parse_stored(series)


def parse_stored(series: Dict[str, Any]) -> Iterator[Stored]:
    """The trades of one series of a StoredDay answer (`time` in ns: epoch=ns)."""
    columns: List[str] = series.get("columns") or []
    at = {name: columns.index(name) for name in columns}
    for row in series.get("values") or []:
        time_us = row[at["time_us"]] if "time_us" in at else None
        yield Stored(int(row[at["trade_id"]]), str(row[at["price_str"]]),
                     str(row[at["qty_str"]]), row[at["buyer_maker"]] is True,
                     int(row[at["time"]]) // NS_PER_MS, None if time_us is None else int(time_us))


Repair = Callable[[Downloaded, Container[int]], int]  # trades written again of those ids


@dataclass
class DayResult:
    """A verify of one day: its check, or why the archive could not be had now."""

    symbol: str
    day: date
    check: Optional[DayCheck] = None
    diff: Optional[DayDiff] = None
    not_now: str = ""  # "not published yet", a checksum mismatch: try again later
    unpublished: bool = False
    repaired: int = 0  # trades written again from the archive by --repair


class DayVerifier:
    """Verifies days of symbols: download, compare, repair when asked, store the check."""

    def __init__(self, settings: Settings, influx: InfluxSettings, client: ArchiveClient,
                 query: InfluxQuery, sink: Sink, workdir: Path,
                 repairer: Optional[Callable[[str], Repair]] = None) -> None:
        self.settings = settings
        self.influx = influx
        self.client = client
        self.query = query
        self.sink = sink
        self.workdir = workdir
        self.repairer = repairer

    def verify(self, symbol: str, day: date, repair: bool = False) -> DayResult:
        """Check one day (daily file only). Raises SinkError or LoadFailed when InfluxDB fails,
        ArchiveError when the archive cannot be reached."""
        result = DayResult(symbol, day)
        try:
            downloaded = self.client.download(ArchiveFile(symbol, day.isoformat()), self.workdir)
        except (NotPublished, ChecksumMismatch, ArchiveCorrupt) as exc:  # late, re-published
            result.not_now = archive_problem(exc, day, today_utc())
            result.unpublished = isinstance(exc, NotPublished)
            return result
        try:
            diff = self.compare(downloaded)
            if repair and self.repairer is not None and diff.read_whole and (
                    diff.missing or diff.differing):
                ids = set(diff.missing) | set(diff.differing)
                result.repaired = self.repairer(symbol)(downloaded, ids)
                diff = self.compare(downloaded)
        finally:
            downloaded.path.unlink()
        result.diff = diff
        result.check = diff.check(downloaded.sha256, now_ns())
        write_with_retries(self.sink, result.check.line(), self.settings.write)
        log.info("event=day_verified symbol=%s day=%s verified=%s trades=%d missing=%d extra=%d "
                 "differing=%d", symbol, day, result.check.verified, diff.trades,
                 len(diff.missing), len(diff.extra), len(diff.differing))
        return result

    def compare(self, downloaded: Downloaded) -> DayDiff:
        symbol = downloaded.file.symbol
        return compare_day(symbol, downloaded.file.first_day,
                           read_trades(downloaded.path, symbol, downloaded.file.name),
                           StoredDay(self.query, self.influx, symbol))
