"""Gap audit and repair: which trade ids of a symbol are missing from InfluxDB, and fetch them.

    python -m workers.audit BTCUSDT --since 2026-11-24T00:00:00Z [--until ...] [--repair]

Reads with InfluxQL over `/query` (1.x; 2.x through its DBRP mapping; 3.x), window by window,
and prints the missing id ranges between the first and the last id it finds. `--repair` fetches
those ids from REST `historicalTrades` and writes them with the worker's own point model, so a
repaired trade is byte-identical to a streamed one. Exit code 1 when gaps remain.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .errors import EXIT_CONFIG, EXIT_RUNTIME, ConfigError, SinkError
from .lineproto import LineRenderer
from .rest import PAGE, RestClient, RestError
from .settings import InfluxSettings, load_env, load_settings
from .sink import InfluxSink

Range = Tuple[int, int]
# Over this many symbols, the last-trade query asks for every symbol of the measurement and
# keeps the wanted ones: a 1,000-symbol filter would make a URL of ~25 KB.
SYMBOL_FILTER_MAX = 50


def parse_time(text: str) -> int:
    """An ISO-8601 time (Z or offset) or a relative `24h` / `90m` / `7d` ago, as epoch ns."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1] in units:
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1e9)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def missing_ranges(ids: List[int]) -> List[Range]:
    """Ranges absent between the smallest and the largest id of `ids`."""
    out: List[Range] = []
    ordered = sorted(set(ids))
    for a, b in zip(ordered, ordered[1:]):
        if b > a + 1:
            out.append((a + 1, b - 1))
    return out


class InfluxQuery:
    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings

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

    def query(self, q: str, timeout_s: Optional[float] = None) -> list:
        """The series of an InfluxQL query over /query (the token sent as on writes)."""
        s = self.settings
        db, _, rp = s.bucket.partition("/")
        fields = {"db": db, "q": q, "epoch": "ns"}
        if rp:
            fields["rp"] = rp
        params = urllib.parse.urlencode(fields)
        request = urllib.request.Request(f"{s.url}/query?{params}",
                                         headers={"Authorization": f"Token {s.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or s.timeout_s * 6) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise SinkError(f"InfluxDB /query answered {exc.code}: "
                            f"{exc.read()[:200]!r}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise SinkError(f"InfluxDB at {s.url} unreachable: {exc}") from None
        series = []
        for result in data.get("results", []):
            if "error" in result:
                raise SinkError(f"InfluxDB query error: {result['error']}")
            series.extend(result.get("series", []))
        return series


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


def parse_last_trades(series: list) -> Dict[str, Tuple[int, int]]:
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


def repair(symbol: str, gaps: List[Range], rest: RestClient, sink: InfluxSink,
           renderer: LineRenderer) -> Tuple[int, List[Range]]:
    """Fetch and write the trades of `gaps`; (trades written, ranges the exchange no longer has)."""
    written, lost = 0, []
    for lo, hi in gaps:
        next_id = lo
        while next_id <= hi:
            trades = [t for t in rest.trades_from(symbol, next_id, min(PAGE, hi - next_id + 1))
                      if t.trade_id <= hi]
            if not trades:
                lost.append((next_id, hi))
                break
            if trades[0].trade_id > next_id:
                lost.append((next_id, trades[0].trade_id - 1))
            sink.write("\n".join(renderer.line(t) for t in trades))
            written += len(trades)
            next_id = trades[-1].trade_id + 1
    return written, lost


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gap-audit", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit codes: 0 no gap (or all repaired), 1 gaps remain, "
                                            "2 configuration error (a setting or an argument), "
                                            "3 InfluxDB or the exchange failed (try again later)")
    parser.add_argument("symbol", help="e.g. BTCUSDT")
    parser.add_argument("--since", required=True,
                        help="ISO time (2026-11-24T00:00:00Z) or a span back from now: 24h, 90m, 7d")
    parser.add_argument("--until", default=None, help="ISO time or relative; default now")
    parser.add_argument("--window", type=int, default=3600, help="seconds per query (3600)")
    parser.add_argument("--repair", action="store_true", help="fetch the missing ids from REST "
                                                              "and write them")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument("--env-file", type=Path, default=None, help="settings file (.env.local)")
    args = parser.parse_args(argv)
    symbol = args.symbol.upper()
    try:
        settings = load_settings(load_env(args.env_file))
        if settings.influx is None:
            raise ConfigError("INFLUXDB_URL is not set: the audit reads InfluxDB")
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else time.time_ns()
    except (ConfigError, ValueError) as exc:
        print(f"gap-audit: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    influx = settings.influx
    try:
        ids = list(InfluxQuery(influx).trade_ids(symbol, since, until, args.window))
        gaps = missing_ranges(ids)
        report = {"symbol": symbol, "stored": len(set(ids)), "first_id": min(ids, default=None),
                  "last_id": max(ids, default=None), "missing": gaps,
                  "missing_count": sum(b - a + 1 for a, b in gaps)}
        if args.repair and gaps:
            sink = InfluxSink(influx)
            written, lost = repair(symbol, gaps, RestClient(settings.rest_url, "audit"), sink,
                                   LineRenderer(influx.measurement))
            sink.close()
            report.update(repaired=written, unrecoverable=lost)
    except (SinkError, RestError) as exc:
        print(f"gap-audit: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{symbol}: {report['stored']} trades stored, ids {report['first_id']}.."
              f"{report['last_id']}, {report['missing_count']} missing in {len(gaps)} range(s)")
        for lo, hi in gaps:
            print(f"  missing {lo}..{hi} ({hi - lo + 1})")
        if args.repair and gaps:
            print(f"repaired {report['repaired']} trades; unrecoverable: "
                  f"{report['unrecoverable'] or 'none'}")
    unresolved = report.get("unrecoverable", gaps) if args.repair else gaps
    return 1 if unresolved else 0


if __name__ == "__main__":
    sys.exit(main())
