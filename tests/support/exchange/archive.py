"""The public archive of the simulator's own ledger, laid out like data.binance.vision
(binance.md "The public archive"):

    GET /data/spot/daily/trades/{SYMBOL}/{SYMBOL}-trades-{YYYY-MM-DD}.zip[.CHECKSUM]
    GET /data/spot/monthly/trades/{SYMBOL}/{SYMBOL}-trades-{YYYY-MM}.zip[.CHECKSUM]

A zip holds one CSV of the same name (`.csv`): no header, one line per trade (LF),
`id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch`, price, qty and quoteQty with 8 decimals
(quoteQty is REST's value, padded), booleans `True`/`False`, `time` in ms for days up to
2024-12-31 and in µs from 2025-01-01.  Its rows are the stored trades whose time falls in that
UTC day or month: the ids, strings and side the stream and REST served.  `.CHECKSUM` is
`sha256sum` output, `<hex>  <zip name>` and a newline.  No request weight is spent (the
archive is another host).

A file is published once its day or month is over on the simulator's clock (--clock) and it
has trades; otherwise 404 with S3's NoSuchKey body.  Trades trimmed by --history cannot be
archived: a period that may have lost some answers 404 as well (logged).

Zips are built on the first request, on disk under --archive-dir (default: a temp dir removed
at exit): the CSV is made chunk by chunk off the event loop and deflated as it is written, and
the file is served from disk (Range requests work), so a month of millions of trades never
sits in memory.

Defects, armed per file with the control action `archive_defect` (symbol, date = YYYY-MM-DD or
YYYY-MM, defect) and counted per response served under them in stats "archive_defects":
    unpublished  [seconds]      404 for the zip and its .CHECKSUM (until republish or clear)
    truncated    [keep=0.5]     only that fraction of the zip's bytes; the .CHECKSUM matches
                                the cut file (binance-public-data issue 39)
    missing      ids=[..] | count=1   those ids left out of the CSV (count: from mid-period)
    republish                   a new version of the file: new zip bytes and sha256, the
                                other defects lifted (the full period again)
    stale_checksum              the zip re-published (new bytes, as republish makes them)
                                while its .CHECKSUM still names the previous version's
                                sha256: a CDN's cached .CHECKSUM during a re-publication
                                (binance.md "The public archive", known defects:
                                "re-published files with changed checksums");
                                lifted by republish (a newer version, its own sha256) or
                                clear; counted as republish too (the zip is a new version)
"""
from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import math
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Container,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from aiohttp import web

from .config import ConfigError, SimConfig, day_start_us, fmt8, parse_day, quote_units
from .history import MAKER_FLAG, TradeHistory
from .market import MICROS_FROM, Market
from .stats import SimStats

if TYPE_CHECKING:
    from .market import SymbolState

log = logging.getLogger(__name__)

MICRO_FROM_US = day_start_us(MICROS_FROM)  # archive times are µs from here on, ms before
CHUNK_TRADES = 50_000  # trades formatted and deflated per step off the event loop
LINE_BOUND = 128  # bytes a CSV line never exceeds; past 2 GiB of them the zip needs zip64
PUBLISHED_AFTER = timedelta(hours=4)  # zip member time: "usually uploaded in 4-6 hours"
DEFECTS = ("unpublished", "truncated", "missing", "republish", "stale_checksum")
NAME_RE = re.compile(r"^(?P<base>.+)-trades-(?P<label>\d{4}-\d{2}(?:-\d{2})?)\.zip"
                     r"(?P<checksum>\.CHECKSUM)?$")
T = TypeVar("T")


class NotPublished(Exception):
    """The file does not exist (yet): answered with 404."""


# --- periods and file contents (pure) -------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """One archive file's UTC span: a day (`2025-01-01`) or a month (`2025-01`)."""

    symbol: str
    label: str
    start_us: int
    end_us: int  # exclusive

    @property
    def monthly(self) -> bool:
        return len(self.label) == 7

    @property
    def micro(self) -> bool:
        return self.start_us >= MICRO_FROM_US

    @property
    def zip_name(self) -> str:
        return f"{self.symbol}-trades-{self.label}.zip"

    @property
    def csv_name(self) -> str:
        return f"{self.symbol}-trades-{self.label}.csv"

    @property
    def path(self) -> str:
        kind = "monthly" if self.monthly else "daily"
        return f"/data/spot/{kind}/trades/{self.symbol}/{self.zip_name}"

    def published_at(self, version: int) -> datetime:
        end = datetime(1970, 1, 1) + timedelta(microseconds=self.end_us)
        return end + PUBLISHED_AFTER + timedelta(hours=version)


def parse_period(symbol: str, label: str) -> Period:
    """(`BTCUSDT`, `2025-01-01` or `2025-01`) -> Period; ConfigError for anything else."""
    if len(label) == 10:
        start = parse_day(label)
        end = start + timedelta(days=1)
    elif len(label) == 7 and label[4] == "-":
        start = parse_day(label + "-01", "month")
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    else:
        raise ConfigError(f"{label!r} is neither a day YYYY-MM-DD nor a month YYYY-MM")
    return Period(symbol, label, day_start_us(start), day_start_us(end))


@dataclass
class Rows:
    """A snapshot of consecutive stored trades `first_id..`, column by column."""

    first_id: int
    prices: Sequence[int]
    qtys: Sequence[int]
    times_us: Sequence[int]
    flags: bytes

    def csv(self, micro: bool, skip: Container[int] = frozenset()) -> str:
        """The archive's CSV lines of these trades, ids in `skip` left out."""
        lines: List[str] = []
        append = lines.append
        div = 1 if micro else 1000
        trade_id = self.first_id - 1
        for p, q, t_us, f in zip(self.prices, self.qtys, self.times_us, self.flags):
            trade_id += 1
            if trade_id in skip:
                continue
            side = "True" if f & MAKER_FLAG else "False"
            append(f"{trade_id},{fmt8(p)},{fmt8(q)},{fmt8(quote_units(p, q))},{t_us // div},"
                   f"{side},True\n")
        return "".join(lines)


def snapshots(history: TradeHistory, first: int, last: int, size: int = CHUNK_TRADES
              ) -> Iterator[Rows]:
    """Rows of ids first..last, `size` at a time; each slice is taken when asked for, so a
    caller on the event loop never sees the arrays change under it."""
    for start in range(first, last + 1, size):
        end = min(start + size, last + 1)
        i, j = start - history.base_id, end - history.base_id
        if i < 0:
            raise NotPublished(f"ids from {start} were trimmed by --history")
        yield Rows(start, history.prices[i:j], history.qtys[i:j], history.times_us[i:j],
                   bytes(history.flags[i:j]))


class ZipBuilder:
    """One CSV deflated into a zip file as it is written: never the whole CSV in memory."""

    def __init__(self, path: Path, period: Period, trades: int, version: int = 0) -> None:
        self.micro = period.micro
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo(period.csv_name, period.published_at(version).timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        self._member = self._zip.open(info, "w",
                                      force_zip64=trades * LINE_BOUND > zipfile.ZIP64_LIMIT)

    def add(self, rows: Rows, skip: Container[int] = frozenset()) -> None:
        self._member.write(rows.csv(self.micro, skip).encode("ascii"))

    def close(self) -> None:
        self._member.close()
        self._zip.close()


def write_zip(path: Path, period: Period, chunks: Iterable[Rows], trades: int,
              skip: Container[int] = frozenset(), version: int = 0) -> None:
    """The whole build in this thread (what the server does step by step off its loop)."""
    builder = ZipBuilder(path, period, trades, version)
    for rows in chunks:
        builder.add(rows, skip)
    builder.close()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def truncate_copy(src: Path, dst: Path, keep: float) -> None:
    """The first `keep` (0..1) of `src`'s bytes as `dst`: a transfer cut short, re-published."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = int(src.stat().st_size * keep)
        while left > 0:
            block = fin.read(min(left, 1 << 20))
            if not block:
                break
            fout.write(block)
            left -= len(block)


def checksum_text(sha256: str, zip_name: str) -> str:
    """The `.CHECKSUM` file: `sha256sum` output for the zip."""
    return f"{sha256}  {zip_name}\n"


def not_found_body(key: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
            f"<Message>The specified key does not exist.</Message><Key>{key}</Key></Error>")


def id_range(history: TradeHistory, period: Period) -> Optional[Tuple[int, int]]:
    """First and last stored id whose time is in `period` (times never go back), or None."""
    times = history.times_us
    lo = bisect.bisect_left(times, period.start_us)
    hi = bisect.bisect_left(times, period.end_us)
    if lo == hi:
        return None
    if lo == 0 and history.base_id > history.first_id:
        raise NotPublished(f"{period.zip_name}: its first trades may have been trimmed by "
                           "--history")
    return history.base_id + lo, history.base_id + hi - 1


# --- defects and the server side ------------------------------------------------------------

@dataclass
class FileDefects:
    """What is wrong with one file now; `version` counts its re-publications."""

    unpublished_until: Optional[float] = None  # monotonic; math.inf: until lifted
    truncated: Optional[float] = None  # fraction of the zip's bytes served
    missing: FrozenSet[int] = frozenset()
    version: int = 0
    # stale_checksum: the version whose sha256 the .CHECKSUM still names (a CDN's cache)
    checksum_of: Optional["FileDefects"] = None

    def in_force(self, now: float) -> List[str]:
        out = []
        if self.unpublished_until is not None and now < self.unpublished_until:
            out.append("unpublished")
        if self.truncated is not None:
            out.append("truncated")
        if self.missing:
            out.append("missing")
        if self.version:
            out.append("republish")
        if self.checksum_of is not None:
            out.append("stale_checksum")
        return out


@dataclass(frozen=True)
class Built:
    """A zip on disk and its sha256."""

    path: Path
    sha256: str


@dataclass
class Archive:
    """Builds, caches and serves the archive files of a market's stored trades."""

    config: SimConfig
    market: Market
    stats: SimStats
    defects: Dict[Tuple[str, str], FileDefects] = field(default_factory=dict)
    _built: Dict[Tuple[Any, ...], "asyncio.Future[Built]"] = field(default_factory=dict)
    _dir: Optional[Path] = None
    _own_dir: bool = False
    _seq: int = 0

    def directory(self) -> Path:
        if self._dir is None:
            if self.config.archive_dir is not None:
                self._dir = Path(self.config.archive_dir)
                self._dir.mkdir(parents=True, exist_ok=True)
            else:
                self._dir = Path(tempfile.mkdtemp(prefix="exchange-sim-archive-"))
                self._own_dir = True
        return self._dir

    def cleanup(self) -> None:
        if self._own_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def clear(self) -> None:
        self.defects.clear()

    # --- arming -------------------------------------------------------------------------

    def arm(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """The control action `archive_defect`: symbol, date, defect and its options."""
        state = self.market.get(str(params.get("symbol")))
        period = parse_period(state.name, str(params.get("date")))
        defect = str(params.get("defect"))
        if defect not in DEFECTS:
            raise ConfigError(f"defect must be one of {', '.join(DEFECTS)}")
        try:
            ids = id_range(state.history, period)
        except NotPublished as exc:
            raise ConfigError(str(exc)) from None
        current = self.defects.setdefault((state.name, period.label), FileDefects())
        out: Dict[str, Any] = {"symbol": state.name, "date": period.label, "defect": defect,
                               "file": period.zip_name,
                               "first_id": ids[0] if ids else None,
                               "last_id": ids[1] if ids else None}
        if defect == "unpublished":
            seconds = params.get("seconds")
            current.unpublished_until = (math.inf if seconds is None
                                         else time.monotonic() + float(seconds))
        elif defect == "truncated":
            keep = float(params.get("keep", 0.5))
            if not 0 < keep < 1:
                raise ConfigError("keep must be between 0 and 1")
            current.truncated = keep
        elif defect == "missing":
            current.missing = current.missing | frozenset(self._missing_ids(ids, params))
            out["ids"] = sorted(current.missing)
        elif defect == "stale_checksum":  # the cache keeps the first stale sum it holds
            cached = current if current.checksum_of is None else current.checksum_of
            self.defects[(state.name, period.label)] = FileDefects(
                version=current.version + 1, checksum_of=cached)
        else:
            self.defects[(state.name, period.label)] = FileDefects(version=current.version + 1)
        out["version"] = self.defects[(state.name, period.label)].version
        return out

    @staticmethod
    def _missing_ids(ids: Optional[Tuple[int, int]], params: Dict[str, Any]) -> List[int]:
        if ids is None:
            raise ConfigError("no stored trades in that period to leave out")
        first, last = ids
        if params.get("ids") is not None:
            wanted = [int(i) for i in params["ids"]]
        else:
            count = int(params.get("count", 1))
            if count < 1:
                raise ConfigError("count must be at least 1")
            mid = (first + last) // 2
            wanted = list(range(mid, min(mid + count, last + 1)))
        if not wanted or not all(first <= i <= last for i in wanted):
            raise ConfigError(f"ids must be in the period's {first}..{last}")
        return wanted

    # --- serving ------------------------------------------------------------------------

    async def file(self, symbol: str, label: str) -> Tuple[Period, Built, List[str]]:
        """The published file of `symbol` for `label` and the defects it is served with."""
        state = self.market.symbols.get(symbol)
        if state is None:
            raise NotPublished(f"unknown symbol {symbol}")
        try:
            period = parse_period(symbol, label)
        except ConfigError as exc:
            raise NotPublished(str(exc)) from None
        if period.end_us > self.config.now_us():
            raise NotPublished(f"{period.zip_name}: the period is not over yet")
        defects = self.defects.get((symbol, label), FileDefects())
        in_force = defects.in_force(time.monotonic())
        if "unpublished" in in_force:
            self.stats.archive_defects["unpublished"] += 1
            raise NotPublished(f"{period.zip_name}: not published yet (fault)")
        ids = id_range(state.history, period)
        if ids is None:
            raise NotPublished(f"{period.zip_name}: no trades in the period")
        built = await self._content(state, period, ids, defects)
        if defects.checksum_of is not None:  # new bytes, the previous version's sum
            cached = await self._content(state, period, ids, defects.checksum_of)
            built = Built(built.path, cached.sha256)
        for name in in_force:
            self.stats.archive_defects[name] += 1
        return period, built, in_force

    async def _content(self, state: "SymbolState", period: Period, ids: Tuple[int, int],
                       defects: FileDefects) -> Built:
        """The zip of that version of the file, holed or cut as its defects say."""
        symbol, label = state.name, period.label
        full = await self._once(("full", symbol, label, ids, defects.missing, defects.version),
                                lambda: self._build(state, period, ids, defects.missing,
                                                    defects.version))
        if defects.truncated is None:
            return full
        keep = defects.truncated
        return await self._once(("cut", full.path, keep), lambda: self._cut(full, keep))

    async def _once(self, key: Tuple[Any, ...], make: Callable[[], Awaitable[Built]]) -> Built:
        """Each file is built once, however many requests ask for it meanwhile."""
        future = self._built.get(key)
        if future is None:
            future = self._built[key] = asyncio.ensure_future(make())
        try:
            return await asyncio.shield(future)
        except Exception:
            self._built.pop(key, None)  # a failed build is tried again by the next request
            raise

    def _new_path(self, zip_name: str) -> Path:
        self._seq += 1  # a file is never rewritten: a download in progress keeps its bytes
        return self.directory() / f"{self._seq:05d}-{zip_name}"

    async def _build(self, state: "SymbolState", period: Period, ids: Tuple[int, int],
                     missing: FrozenSet[int], version: int) -> Built:
        path = self._new_path(period.zip_name)
        first, last = ids
        started = time.monotonic()
        builder = await _off_loop(ZipBuilder, path, period, last - first + 1, version)
        for rows in snapshots(state.history, first, last):  # sliced here, on the loop
            await _off_loop(builder.add, rows, missing)
        await _off_loop(builder.close)
        sha = await _off_loop(sha256_file, path)
        log.info("archive %s v%d: ids %d..%d, %d left out, %d bytes in %.2fs", period.zip_name,
                 version, first, last, len(missing), path.stat().st_size,
                 time.monotonic() - started)
        return Built(path, sha)

    async def _cut(self, full: Built, keep: float) -> Built:
        path = self._new_path(full.path.name.split("-", 1)[1])
        await _off_loop(truncate_copy, full.path, path, keep)
        return Built(path, await _off_loop(sha256_file, path))


async def _off_loop(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def add_routes(app: web.Application, archive: Archive) -> None:
    async def serve(request: web.Request) -> web.StreamResponse:
        symbol = request.match_info["symbol"]
        match = NAME_RE.match(request.match_info["name"])
        kind = "checksum" if match and match["checksum"] else "zip"
        monthly = request.match_info["period"] == "monthly"
        try:
            if (match is None or match["base"] != symbol
                    or (len(match["label"]) == 7) != monthly):
                raise NotPublished("not an archive file name")
            period, built, _ = await archive.file(symbol, match["label"])
        except NotPublished as exc:
            log.info("archive %s: 404 (%s)", request.path, exc)
            archive.stats.count_archive(kind, 404)
            return web.Response(status=404, text=not_found_body(request.path.lstrip("/")),
                                content_type="application/xml")
        archive.stats.count_archive(kind, 200)
        if kind == "checksum":
            return web.Response(text=checksum_text(built.sha256, period.zip_name),
                                content_type="text/plain")
        return web.FileResponse(built.path, headers={"Content-Type": "application/zip"})

    app.router.add_get("/data/spot/{period:daily|monthly}/trades/{symbol}/{name}", serve)
