"""The worker's counters and the contract of its status file, shared by writer and reader.

`Stats` holds the live counters (its fields are THE list of counters). `StatusFile` is the shape
of `run/status/<worker>.json`: the worker's `Reporter` writes it every second, `scripts/status`
(workers/ops/status.py) reads it back with `read_status`, which tolerates an older or partial
file (a key it lacks, or holds with another type, is simply absent). `FIGURES` names which of
the file's figures the summary line and the health point carry, and under which names.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import (
    Any,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Tuple,
    TypedDict,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from workers.common.atomic import write_atomic
from workers.common.timefmt import iso_seconds

LAGS_KEPT = 10_000  # lags held between two takes (the reporter takes them every second)


@dataclass
class Stats:
    received: int = 0  # frames that parsed as trades: the connections' own counts, summed on read
    invalid: Counter[str] = field(default_factory=Counter)  # reason -> count
    duplicates: int = 0
    written: int = 0  # trades in batches stored in InfluxDB (or data files)
    write_requests: int = 0
    retries: int = 0
    spooled: int = 0  # trades that went to the disk spool
    replayed: int = 0  # trades replayed from the spool
    rejected_lines: int = 0  # lines the server refused, set aside in rejected.lp (all kinds)
    rejected_trades: int = 0  # of them, trade lines (the rest are health points)
    write_quota_until: float = 0.0  # epoch s: InfluxDB's 429 asked to wait until then
    # Uncompressed line-protocol bytes the server counted against its write quota (writer.py
    # says which requests count), in the fixed window of quota_window_s from quota_window_start
    # (epoch s, a multiple of the length: aligned like Cloud Serverless's), and in all (sent_*)
    quota_window_s: float = 300.0
    quota_window_start: float = 0.0
    quota_window_bytes: int = 0
    sent_bytes: int = 0
    sent_lines: int = 0
    reconnects: int = 0
    gaps: int = 0
    backfilled: int = 0
    given_up: int = 0  # trade ids abandoned after the backfill cap
    last_trade_ms: Dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    lags_ms: List[float] = field(default_factory=list)  # trade time -> stored, since last take
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str, n: int = 1) -> None:
        """Add to a counter that more than one thread updates (`+=` is not atomic)."""
        with self.lock:
            setattr(self, counter, getattr(self, counter) + n)

    def count_sent(self, nbytes: int, lines: int, now: float) -> None:
        """A request's body the server counted: in the window holding `now`, and in all."""
        start = math.floor(now / self.quota_window_s) * self.quota_window_s
        with self.lock:  # (the reporter copies the window's start and bytes as a pair)
            if start != self.quota_window_start:
                self.quota_window_start, self.quota_window_bytes = start, 0
            self.quota_window_bytes += nbytes
            self.sent_bytes += nbytes
            self.sent_lines += lines

    def error(self, text: str) -> None:
        self.last_error = f"{iso_seconds()} {text}"

    def record_lags(self, times_ms: List[int]) -> None:
        """The lags of trades stored just now: each one's trade time to now."""
        now_ms = time.time() * 1000
        with self.lock:
            room = LAGS_KEPT - len(self.lags_ms)
            self.lags_ms.extend(now_ms - t for t in times_ms[:max(0, room)])

    def take_lags(self) -> List[float]:
        with self.lock:
            lags, self.lags_ms = self.lags_ms, []
        return sorted(lags)


NOT_COUNTERS = ("lock", "lags_ms")  # Stats fields that are not in the status file


def percentile(sorted_values: List[float], q: float) -> Optional[float]:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# -- the status file ---------------------------------------------------------------------------
class Refusal(TypedDict):
    """A handshake the exchange refused (429/418) whose Retry-After has not passed."""
    status: int
    until: float  # epoch seconds
    detail: str


class ConnectionState(TypedDict, total=False):
    """One connection of the worker (StreamKeeper.state(), plus connected_once)."""
    conn: str  # its label: s1, s2, ...
    streams: int
    connected: bool
    subscribed: int
    waiting_budget_s: float  # waiting for the host's connection budget, about this long
    refused: Optional[Refusal]
    last_end: str  # `<iso time> <why the last connection ended>`, "" if none has
    connected_once: bool  # has been open since the worker started


class StatusFile(TypedDict, total=False):
    """`run/status/<worker>.json`. total=False: a reader must expect any key to be missing
    (a file of an older worker); the writer writes all of them (a unit test holds it to that)."""
    worker: str
    host: str
    symbols: List[str]
    pid: int
    started: float  # epoch seconds
    updated: float  # epoch seconds of this write
    trades_per_s: float  # over the last RATE_WINDOW_S
    last_trade_age_s: Optional[float]  # the newest trade's age at this write
    # trade time -> stored, of the trades stored in the last reporter.LAG_WINDOW_S (each trade's
    # own time); None when none was stored in it (nothing recent to tell)
    lag_p50_ms: Optional[float]
    lag_p99_ms: Optional[float]
    spool_backlog_bytes: int
    queue_batches: int
    checkpoint: Dict[str, int]  # symbol -> last stored trade id
    connected: bool  # every connection is
    connections: List[ConnectionState]
    # The counters: Stats' fields but lock and lags_ms (counters() copies them).
    received: int
    invalid: Dict[str, int]  # reason -> count
    duplicates: int
    written: int
    write_requests: int
    retries: int
    spooled: int
    replayed: int
    rejected_lines: int
    rejected_trades: int
    write_quota_until: float  # epoch seconds; in the past (or 0): no wait
    quota_window_s: float  # the write quota's window (INFLUXDB_WRITE_LIMIT's, else 300 s)
    quota_window_start: float  # epoch seconds, a multiple of quota_window_s
    quota_window_bytes: int  # uncompressed bytes sent in that window (that the server counted)
    sent_bytes: int  # ... since the start
    sent_lines: int  # lines in those requests: sent_bytes / sent_lines = bytes per line
    reconnects: int
    gaps: int
    backfilled: int
    given_up: int
    last_trade_ms: Dict[str, int]  # symbol -> the newest trade's time
    last_error: str


def counters(stats: Stats) -> StatusFile:
    """The counters as the status file holds them (plain JSON-able values)."""
    with stats.lock:  # a window's start and bytes as one pair (count_sent)
        data: Dict[str, Any] = {f.name: getattr(stats, f.name) for f in fields(stats)
                                if f.name not in NOT_COUNTERS}
    data["invalid"] = dict(stats.invalid)
    data["last_trade_ms"] = dict(stats.last_trade_ms)
    return cast(StatusFile, data)


def write_status(path: Path, status: StatusFile) -> None:
    """Replace the status file atomically, so a reader never sees half of it."""
    write_atomic(path, json.dumps(status, sort_keys=True), durable=False)


def read_status(path: Path) -> Optional[StatusFile]:
    """The status file at `path`; None if there is none or it is not a JSON object."""
    try:
        return as_status(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def as_status(data: object) -> Optional[StatusFile]:
    """`data` (parsed JSON) as a StatusFile: None unless an object. A key of another type than
    StatusFile declares is left out, as an unknown key is: readers see it as missing."""
    if not isinstance(data, dict):
        return None
    hints = _status_hints()
    return cast(StatusFile, {k: v for k, v in data.items()
                             if k in hints and _fits(v, hints[k])})


@lru_cache(maxsize=None)
def _status_hints() -> Dict[str, Any]:
    return get_type_hints(StatusFile)


def _fits(value: object, hint: Any) -> bool:
    """Is `value` (parsed JSON) of type `hint`? Lists and maps item by item; a nested
    TypedDict only as a map (its readers use .get)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return any(_fits(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    if hint is float:  # JSON writes 2.0 as 2.0 but a reader may meet 2
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, dict if issubclass(hint, dict) else hint)


# -- the summary line and the health point ------------------------------------------------------
Kind = Literal["count", "total", "flag", "rate", "ms"]


@dataclass(frozen=True)
class Figure:
    """One figure of the status file, as the summary line and the health point show it."""
    key: str  # its key in the status file
    summary: str = ""  # its name in the summary line ("": not there)
    point: str = ""  # its field in the health point ("": not there); dashboards read these
    # count: an int; total: a reason -> count map, summed; flag: a bool, as 0/1; rate: per
    # second; ms: a latency, None while unknown (the point then leaves the field out)
    kind: Kind = "count"


def _both(key: str, name: str = "", kind: Kind = "count") -> Figure:
    return Figure(key, name or key, name or key, kind)


# In the summary line's order (operators' greps and tests/support/bench read it).
FIGURES: Tuple[Figure, ...] = (
    Figure("trades_per_s", summary="trades_per_s", kind="rate"),
    _both("received"), _both("written"), _both("duplicates"), _both("invalid", kind="total"),
    _both("retries"), _both("spooled"),
    Figure("spool_backlog_bytes", summary="spool_backlog_bytes", point="spool_bytes"),
    _both("rejected_lines", "rejected"), _both("reconnects"), _both("gaps"),
    _both("backfilled"), _both("given_up"),
    Figure("connected", point="connected", kind="flag"),
    _both("lag_p50_ms", kind="ms"), _both("lag_p99_ms", kind="ms"),
)


def figure_value(status: Mapping[str, object], figure: Figure) -> Union[int, float, None]:
    """The figure's value in `status`: an int for counts, totals and flags."""
    value = status.get(figure.key)
    if figure.kind == "total":
        return sum(cast(Mapping[str, int], value or {}).values())
    if figure.kind == "flag":
        return int(bool(value))
    return cast(Union[int, float, None], value)
