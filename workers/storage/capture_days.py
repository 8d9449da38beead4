"""The day checks: what a history load (`loaded`) or a verify (`verified`) found of one stored
UTC day of a pair, kept as points of the measurement `capture_days`.

    capture_days,symbol=BTCUSDT,check=verified day="2025-03-04",trades=1234567i,
        stored=1234567i,first_id=9i,last_id=1234575i,missing=0i,extra=0i,differing=0i,
        sha256="ab12...",verified=true 1741150800123020151

The timestamp is the time of the check, not the day: a re-check adds a point instead of
rewriting one with other values (on InfluxDB 3 either version of a re-written point may be kept
for good, influxdb-servers.md "Duplicate points"). Checks of several days of a pair made in the
same millisecond would share a series and a time, so the key is built as a trade's is: the
check's ms times 10**6 plus the day's number since 1970 (under 10**6 until the year 4707).

A day's current state is its latest check; `latest_checks` reads them over a span of check
times, one query per 24 h window (influx_query.QUERY_WINDOW_H: 3 Core refuses longer ones).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from workers.storage.influx_query import QUERY_WINDOW_H, InfluxQuery, quote_ident, quote_string
from workers.storage.lineproto import NS_PER_MS, escape_key, escape_string_field

MEASUREMENT = "capture_days"
LOADED, VERIFIED = "loaded", "verified"
CHECKS = (LOADED, VERIFIED)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_INT_FIELDS = ("trades", "stored", "first_id", "last_id", "missing", "extra", "differing")


@dataclass(frozen=True)
class DayCheck:
    """One check of one UTC day of a pair.

    `trades`: rows of the archive's file; `stored`: trades the database held that day (for a
    `loaded` check, the trades written); `first_id`/`last_id`: the archive's first and last ids
    (0 when it had none); `missing`: archive ids the database lacked; `extra`: ids stored that
    day the archive lacks; `differing`: trades stored with another price, quantity, side or
    time; `sha256`: the archive file's; `verified`: nothing missing, extra or differing, and the
    file read whole. `checked_ns`: when the check was made (epoch ns).
    """

    symbol: str
    day: date
    check: str
    trades: int
    stored: int
    first_id: int
    last_id: int
    missing: int
    extra: int
    differing: int
    sha256: str
    verified: bool
    checked_ns: int

    def timestamp_ns(self) -> int:
        """The point's key: the check's ms, and the day in the sub-ms digits (module doc)."""
        return check_timestamp_ns(self.checked_ns, self.day)

    def line(self) -> str:
        """The check as one line of line protocol (timestamp in ns)."""
        ints = ",".join(f"{name}={getattr(self, name)}i" for name in _INT_FIELDS)
        return (f"{MEASUREMENT},symbol={escape_key(self.symbol)},check={escape_key(self.check)} "
                f"day=\"{self.day.isoformat()}\",{ints},"
                f"sha256=\"{escape_string_field(self.sha256)}\","
                f"verified={'true' if self.verified else 'false'} {self.timestamp_ns()}")


def is_verified(missing: int, extra: int, differing: int, read_whole: bool) -> bool:
    """The rule of the `verified` field: every id and string equal, the file read to its end."""
    return read_whole and missing == 0 and extra == 0 and differing == 0


def now_ns() -> int:
    return time.time_ns()


def check_timestamp_ns(checked_ns: int, day: date) -> int:
    return checked_ns // NS_PER_MS * NS_PER_MS + (day.toordinal() - _EPOCH_DAY) % NS_PER_MS


def checks_query(since_ns: int, until_ns: int, symbols: Optional[Sequence[str]] = None,
                 check: Optional[str] = None) -> str:
    """InfluxQL for the checks made in [since_ns, until_ns) (of `symbols`, of kind `check`)."""
    where = f"time >= {since_ns} AND time < {until_ns}"
    if check is not None:
        where += f" AND \"check\" = {quote_string(check)}"
    if symbols:
        where += " AND (" + " OR ".join(f"symbol = {quote_string(s)}" for s in symbols) + ")"
    return f"SELECT * FROM {quote_ident(MEASUREMENT)} WHERE {where}"


def parse_checks(series: Iterable[Dict[str, Any]]) -> List[DayCheck]:
    """The DayChecks of the series of a checks_query answer (tags as columns or as `tags`)."""
    out: List[DayCheck] = []
    for one in series:
        columns: List[str] = one.get("columns") or []
        tags: Dict[str, str] = one.get("tags") or {}
        for values in one.get("values") or []:
            row = dict(tags)
            row.update(zip(columns, values))
            out.append(_from_row(row))
    return out


def _from_row(row: Dict[str, Any]) -> DayCheck:
    day = date.fromisoformat(str(row["day"]))
    stamp = int(row["time"])
    return DayCheck(
        symbol=str(row["symbol"]), day=day, check=str(row["check"]),
        **{name: int(row.get(name) or 0) for name in _INT_FIELDS},
        sha256=str(row.get("sha256") or ""), verified=row.get("verified") is True,
        checked_ns=stamp)


def latest(checks: Iterable[DayCheck]) -> Dict[Tuple[str, date], DayCheck]:
    """{(symbol, day): its latest check} of `checks`."""
    out: Dict[Tuple[str, date], DayCheck] = {}
    for one in checks:
        key = (one.symbol, one.day)
        kept = out.get(key)
        if kept is None or one.checked_ns > kept.checked_ns:
            out[key] = one
    return out


def latest_checks(query: InfluxQuery, since_ns: int, until_ns: int,
                  symbols: Optional[Sequence[str]] = None,
                  check: Optional[str] = None) -> Dict[Tuple[str, date], DayCheck]:
    """{(symbol, day): the latest check} among those made in [since_ns, until_ns), read in
    QUERY_WINDOW_H windows. `check`: only that kind (LOADED or VERIFIED); None: either.
    Raises SinkError or NoMapping as InfluxQuery.query does."""
    step = int(QUERY_WINDOW_H * 3600) * 1_000_000_000
    found: List[DayCheck] = []
    start = since_ns
    while start < until_ns:
        end = min(start + step, until_ns)
        found.extend(parse_checks(query.query(checks_query(start, end, symbols, check))))
        start = end
    return latest(found)
