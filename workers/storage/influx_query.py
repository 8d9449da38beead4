"""Reading InfluxDB: InfluxQL over `/query`, the one read client of the service, on the HTTP
stack and TLS trust of the writes (influx_http).

What every InfluxDB our users run takes (influxdb-servers.md, Reads):
- the token in the header `Authorization: Token <token>` (1.8: `Token user:password`), never
  `p=<token>` alone, which 2.x refuses;
- every query bounded in time, over at most QUERY_WINDOW_H: 3 Core refuses a query that would
  scan more than 432 Parquet files (~72 h), or has no time bound; a longer look-back is walked
  in windows, newest first;
- `database not found` in a 200 body (Cloud Serverless, until the bucket has a DBRP mapping)
  raised as NoMapping, whose one line is the fix.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import urllib3

from workers.errors import NoMapping, SinkError
from workers.settings import InfluxSettings
from workers.storage.influx_http import read_pool
from workers.storage.sink import server_message

# Over this many symbols, the last-trade query asks for every symbol of the measurement and
# keeps the wanted ones: a 1,000-symbol filter would make a URL of ~25 KB.
SYMBOL_FILTER_MAX = 50
# The longest span one query asks for: well within 3 Core's ~72 h (its 432-file limit counts
# files, which a busy table makes more of), and the newest day holds a capture's last trades.
QUERY_WINDOW_H = 24.0
BUCKET_LOOKUP_TIMEOUT_S = 5.0
NOT_FOUND = "database not found"


class InfluxQuery:
    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.pool = read_pool(settings)  # the writes' HTTP stack and TLS trust (influx_http)

    def trade_ids(self, symbol: str, since_ns: int, until_ns: int, window_s: int) -> Iterator[int]:
        step = window_s * 1_000_000_000
        start = since_ns
        while start < until_ns:
            end = min(start + step, until_ns)
            q = (f"SELECT trade_id FROM \"{self.settings.measurement}\" WHERE "
                 f"symbol = '{symbol}' AND time >= {start} AND time < {end}")
            for series in self.query(q):
                column = series["columns"].index("trade_id")
                for row in series.get("values", []):
                    yield int(row[column])
            start = end

    def last_trades(self, symbols: Optional[Sequence[str]], lookback_h: float,
                    timeout_s: Optional[float] = None) -> Dict[str, Tuple[int, int]]:
        """{symbol: (highest stored trade id, its point time in epoch ns)} over the last
        `lookback_h` hours; symbols with no trade in that span are absent.

        One query per QUERY_WINDOW_H, newest first, until every symbol is found (ids grow with
        time: the newest window holding a symbol's trades holds its highest id): one query
        for the default 24 h. `symbols` None (or more than SYMBOL_FILTER_MAX) asks for every
        symbol of the measurement (the answer is then narrowed to `symbols`). Raises SinkError
        (with the HTTP status where there is one: 401/403 is a token that cannot read),
        NoMapping for a bucket without a DBRP mapping.
        """
        wanted = None if symbols is None else list(symbols)
        found: Dict[str, Tuple[int, int]] = {}
        newer_h = 0.0
        while newer_h < lookback_h:
            older_h = min(float(lookback_h), newer_h + QUERY_WINDOW_H)
            ask = None if wanted is None else [s for s in wanted if s not in found]
            q = last_trades_query(self.settings.measurement, ask, older_h, newer_h)
            for symbol, last in parse_last_trades(self.query(q, timeout_s)).items():
                found.setdefault(symbol, last)
            if wanted is not None and all(s in found for s in wanted):
                break
            newer_h = older_h
        if wanted is not None:
            found = {k: v for k, v in found.items() if k in set(wanted)}
        return found

    def query(self, q: str, timeout_s: Optional[float] = None) -> List[Dict[str, Any]]:
        """The series of an InfluxQL query over /query (the token sent as on writes).

        Raises SinkError: with the HTTP status when InfluxDB answered one (401/403: a token
        that cannot read), without when it could not be reached (or its TLS certificate was
        not trusted), and for an error in the answer.
        """
        s = self.settings
        db, _, rp = s.bucket.partition("/")
        fields = {"db": db, "q": q, "epoch": "ns"}
        if rp:
            fields["rp"] = rp
        try:
            resp = self.pool.request("GET", f"{s.url}/query", fields=fields,
                                     timeout=timeout_s or s.timeout_s * 6)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkError(f"InfluxDB at {s.url} unreachable: {exc}") from None
        if resp.status >= 300:
            raise SinkError(query_refused(resp.status, resp.data, s), resp.status)
        try:
            data = json.loads(resp.data)
        except ValueError:
            raise SinkError(f"InfluxDB /query answered {resp.status} without JSON: "
                            f"{resp.data[:200]!r}", resp.status) from None
        series: List[Dict[str, Any]] = []
        for result in data.get("results", []):
            if "error" in result:
                error = str(result["error"])
                if error.startswith(NOT_FOUND):
                    raise NoMapping(f"InfluxDB query error: {error}: {self.mapping_fix()}")
                raise SinkError(f"InfluxDB query error: {error}")
            series.extend(result.get("series", []))
        return series

    def mapping_fix(self) -> str:
        """What to do when InfluxQL finds no database: the DBRP mapping to create, with the
        bucket's id when the token may read it (GET /api/v2/buckets), else how to find it."""
        s = self.settings
        db = s.bucket.partition("/")[0]
        bucket_id = self.bucket_id()
        found = "" if bucket_id else (
            f", <bucket-id> being the id of bucket {s.bucket!r}: `influx bucket list --name "
            f"{s.bucket}`, or Load Data > Buckets in the InfluxDB Cloud UI")
        return (f"bucket {s.bucket!r} has no DBRP mapping for InfluxQL reads (InfluxDB Cloud "
                f"Serverless needs one; on 1.x the database does not exist yet): create it with "
                f"`influx v1 dbrp create --db {db} --rp autogen --bucket-id "
                f"{bucket_id or '<bucket-id>'} --default`{found}")

    def bucket_id(self) -> Optional[str]:
        """The id of the settings' bucket, or None when the token cannot read buckets (or the
        server has no /api/v2/buckets: 1.x)."""
        s = self.settings
        try:
            resp = self.pool.request("GET", f"{s.url}/api/v2/buckets",
                                     fields={"name": s.bucket, "org": s.org},
                                     timeout=BUCKET_LOOKUP_TIMEOUT_S)
            buckets = json.loads(resp.data).get("buckets") if resp.status == 200 else None
        except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError):
            return None
        for bucket in buckets or []:
            if isinstance(bucket, dict) and bucket.get("name") == s.bucket and bucket.get("id"):
                return str(bucket["id"])
        return None

    def symbols(self, since_ns: int, until_ns: int) -> List[str]:
        """The symbols of the measurement (on servers that index by time, those with points
        between `since_ns` and `until_ns`; InfluxDB 1.x lists every one it holds). Asked per
        QUERY_WINDOW_H: 3.x reads tag values from the data, under the same span limit."""
        found: Set[str] = set()
        window = int(QUERY_WINDOW_H * 3600) * 1_000_000_000
        for start in range(since_ns, until_ns, window):
            q = (f"SHOW TAG VALUES FROM {quote_ident(self.settings.measurement)} WITH KEY = "
                 f"\"symbol\" WHERE time >= {start} AND time < {min(start + window, until_ns)}")
            found.update(str(row[-1]) for series in self.query(q)
                         for row in series.get("values") or [])
        return sorted(found)

    def close(self) -> None:
        """Close the kept-alive connection (it closes with the object too)."""
        self.pool.clear()


def query_refused(status: int, body: bytes, s: InfluxSettings) -> str:
    """One readable line for a /query refused: the server's words, and for 401/403 the fix,
    as the worker's write errors say it."""
    words = server_message(body.decode("utf-8", "replace"))[:200]
    if status in (401, 403):
        return (f"InfluxDB refused the token for a read ({status}): check INFLUXDB_TOKEN in "
                f".env.local; it needs read access to bucket {s.bucket!r} of org {s.org!r} "
                f"(/query answered {status}: {words})")
    return f"InfluxDB /query answered {status}: {words}"


def quote_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def last_trades_query(measurement: str, symbols: Optional[Sequence[str]],
                      lookback_h: float, until_h: float = 0.0) -> str:
    """InfluxQL for the highest trade id per symbol of the last `lookback_h` hours (up to
    `until_h` hours ago: a window of a longer look-back).

    max() is a selector: each row's time is the time of the point holding the max, and it
    is exact where last() would not be (ids ...999999 and ...000000 of one millisecond sort
    the other way round in time, see the timestamp encoding).
    """
    where = f"time > now() - {_hours(lookback_h)}"
    if until_h:
        where += f" AND time <= now() - {_hours(until_h)}"
    if symbols is not None and len(symbols) <= SYMBOL_FILTER_MAX:
        where += " AND (" + " OR ".join(f"symbol = {quote_string(s)}" for s in symbols) + ")"
    return f"SELECT max(trade_id) FROM {quote_ident(measurement)} WHERE {where} GROUP BY symbol"


def _hours(hours: float) -> str:
    """An InfluxQL duration: `24h`, or whole seconds for a fraction (`1800s`)."""
    return f"{hours:g}h" if float(hours).is_integer() else f"{int(hours * 3600)}s"


def parse_last_trades(series: List[Dict[str, Any]]) -> Dict[str, Tuple[int, int]]:
    """{symbol: (max trade_id, time ns)} from the series of a last_trades_query answer."""
    out: Dict[str, Tuple[int, int]] = {}
    for one in series:
        symbol = (one.get("tags") or {}).get("symbol")
        columns = one.get("columns", [])
        if not symbol or "max" not in columns or "time" not in columns:
            continue
        for row in one.get("values") or []:
            value, when = row[columns.index("max")], row[columns.index("time")]
            if value is None:
                continue
            out[symbol] = (int(value), int(when))
    return out
