"""Reading InfluxDB: InfluxQL over `/query`, the one read client of the service, on the HTTP
stack and TLS trust of the writes (influx_http)."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import urllib3

from workers.errors import SinkError
from workers.settings import InfluxSettings
from workers.storage.influx_http import read_pool
from workers.storage.sink import server_message

# Over this many symbols, the last-trade query asks for every symbol of the measurement and
# keeps the wanted ones: a 1,000-symbol filter would make a URL of ~25 KB.
SYMBOL_FILTER_MAX = 50


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
        `lookback_h` hours, in ONE query; symbols with no trade in that span are absent.

        `symbols` None (or more than SYMBOL_FILTER_MAX) asks for every symbol of the
        measurement (the answer is then narrowed to `symbols`). Raises SinkError (with the
        HTTP status where there is one: 401/403 is a token that cannot read).
        """
        q = last_trades_query(self.settings.measurement, symbols, lookback_h)
        found = parse_last_trades(self.query(q, timeout_s))
        if symbols is not None:
            wanted = set(symbols)
            found = {k: v for k, v in found.items() if k in wanted}
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
                raise SinkError(f"InfluxDB query error: {result['error']}")
            series.extend(result.get("series", []))
        return series

    def symbols(self, since_ns: int, until_ns: int) -> List[str]:
        """The symbols of the measurement (on servers that index by time, those with points
        between `since_ns` and `until_ns`; InfluxDB 1.x lists every one it holds)."""
        q = (f"SHOW TAG VALUES FROM {_quote_ident(self.settings.measurement)} WITH KEY = "
             f"\"symbol\" WHERE time >= {since_ns} AND time < {until_ns}")
        return sorted({str(row[-1]) for series in self.query(q)
                       for row in series.get("values") or []})

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


def _quote_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_ident(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def last_trades_query(measurement: str, symbols: Optional[Sequence[str]],
                      lookback_h: float) -> str:
    """InfluxQL for the highest trade id per symbol of the last `lookback_h` hours.

    max() is a selector: each row's time is the time of the point holding the max, and it
    is exact where last() would not be (ids ...999999 and ...000000 of one millisecond sort
    the other way round in time, see the timestamp encoding).
    """
    span = f"{lookback_h:g}h" if float(lookback_h).is_integer() else \
        f"{int(lookback_h * 3600)}s"
    where = f"time > now() - {span}"
    if symbols is not None and len(symbols) <= SYMBOL_FILTER_MAX:
        where += " AND (" + " OR ".join(f"symbol = {_quote_string(s)}" for s in symbols) + ")"
    return f"SELECT max(trade_id) FROM {_quote_ident(measurement)} WHERE {where} GROUP BY symbol"


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
