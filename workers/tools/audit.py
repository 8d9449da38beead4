"""Gap audit and repair: which trade ids of a symbol are missing from InfluxDB, and fetch them.

    python -m workers.tools.audit BTCUSDT --since 2026-11-24T00:00:00Z [--until ...] [--repair]

Reads with InfluxQL over `/query` (1.x; 2.x through its DBRP mapping; 3.x), window by window,
and prints the missing id ranges between the first and the last id it finds. `--repair` fetches
those ids from REST `historicalTrades` and writes them with the worker's own point model, so a
repaired trade is byte-identical to a streamed one. Exit code 1 when gaps remain.

Nothing stored for the symbol in the span is not a pass (a cron audit with a typo would stay
green for ever): exit 1, naming the symbols the measurement holds; a symbol the exchange does
not know (exchangeInfo) is a configuration error, exit 2. So is a token InfluxDB refuses.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from workers.common.timefmt import iso_seconds, parse_time
from workers.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    ConfigError,
    RestError,
    RestShapeError,
    SinkError,
    exit_codes_help,
)
from workers.exchange.rest import PAGE, RestClient
from workers.settings import InfluxSettings, Settings, load_env, load_settings
from workers.storage.influx_query import (
    InfluxQuery,
)
from workers.storage.lineproto import LineRenderer
from workers.storage.sink import InfluxSink

Range = Tuple[int, int]
EXCHANGE_TIMEOUT_S = 10.0  # asking exchangeInfo whether a symbol exists: an audit does not wait


def missing_ranges(ids: List[int]) -> List[Range]:
    """Ranges absent between the smallest and the largest id of `ids`."""
    out: List[Range] = []
    ordered = sorted(set(ids))
    for a, b in zip(ordered, ordered[1:]):
        if b > a + 1:
            out.append((a + 1, b - 1))
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


def nothing_stored(symbol: str, since_ns: int, until_ns: int, settings: Settings,
                   influx: InfluxSettings) -> Tuple[int, str]:
    """(exit code, the line) for a symbol with no trade stored in the span: a configuration
    error when the exchange does not know it, else a problem; both name what is stored."""
    try:
        held = ", ".join(InfluxQuery(influx).symbols(since_ns, until_ns)) or "none"
    except SinkError as exc:
        held = f"(cannot list them: {exc})"
    rest = RestClient(settings.rest_url, "audit", timeout_s=EXCHANGE_TIMEOUT_S)
    try:
        known: Optional[Dict[str, str]] = rest.symbol_statuses([symbol],
                                                               max_wait_s=EXCHANGE_TIMEOUT_S)
    except (RestError, RestShapeError) as exc:
        known = None  # the exchange cannot tell: the span's emptiness is the finding
        exchange = f"the exchange could not be asked ({str(exc)[:200]})"
    finally:
        rest.close()
    if known is not None and symbol not in known:
        return EXIT_CONFIG, (f"{symbol} is unknown to the exchange (exchangeInfo at "
                             f"{settings.rest_url}): fix the spelling; stored symbols: {held}")
    if known is not None:
        exchange = f"the exchange knows {symbol}: is a worker capturing it into this bucket?"
    return EXIT_PROBLEM, (f"nothing stored for {symbol} between {iso_seconds(since_ns / 1e9)} "
                          f"and {iso_seconds(until_ns / 1e9)}: is the symbol right? stored "
                          f"symbols: {held}; {exchange}")


def query_failed(exc: SinkError) -> int:
    """A token InfluxDB refuses is a setting to fix (exit 2); anything else a runtime failure."""
    return EXIT_CONFIG if exc.status in (401, 403) else EXIT_RUNTIME


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gap-audit", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=exit_codes_help(
                                         ok="no gap (or all repaired)",
                                         problem="gaps remain, or nothing is stored for the "
                                                 "symbol in the span",
                                         config="a setting, an argument, a token InfluxDB "
                                                "refuses, a symbol unknown to the exchange",
                                         runtime="InfluxDB or the exchange failed"))
    parser.add_argument("symbol", help="e.g. BTCUSDT")
    parser.add_argument("--since", required=True,
                        help="ISO time (2026-11-24T00:00:00Z) or a span back from now: 24h, 90m, "
                             "7d")
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
        since = parse_time(args.since, "--since")
        until = parse_time(args.until, "--until") if args.until else time.time_ns()
    except (ConfigError, ValueError) as exc:
        print(f"gap-audit: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    influx = settings.influx
    try:
        ids = list(InfluxQuery(influx).trade_ids(symbol, since, until, args.window))
        if not ids:
            code, line = nothing_stored(symbol, since, until, settings, influx)
            if args.json:
                print(json.dumps({"symbol": symbol, "stored": 0, "error": line}))
            print(f"gap-audit: {line}", file=sys.stderr)
            return code
        gaps = missing_ranges(ids)
        report: Dict[str, Any] = {
            "symbol": symbol, "stored": len(set(ids)), "first_id": min(ids, default=None),
            "last_id": max(ids, default=None), "missing": gaps,
            "missing_count": sum(b - a + 1 for a, b in gaps)}
        if args.repair and gaps:
            sink = InfluxSink(influx)
            written, lost = repair(symbol, gaps, RestClient(settings.rest_url, "audit"), sink,
                                   LineRenderer(influx.measurement))
            sink.close()
            report.update(repaired=written, unrecoverable=lost)
    except SinkError as exc:
        print(f"gap-audit: {exc}", file=sys.stderr)
        return query_failed(exc)
    except RestError as exc:
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
    return EXIT_PROBLEM if unresolved else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
