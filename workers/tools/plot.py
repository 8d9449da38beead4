"""PNG charts of the stored trades and of the workers' health, without Grafana (scripts/plot).

    scripts/plot BTCUSDT ETHUSDT --since 1h --out market.png     # from InfluxDB (.env.local)
    scripts/plot --health --since 1h --out health.png            # streamer_health, per worker
    scripts/plot BTCUSDT --lp-dir data/lp --since 1h --out m.png  # from the no-database files

The market chart has, per symbol, the last price per interval with the interval's VWAP, the
number of trades per interval, and the taker buy (up) and sell (down) volume per interval.
The health chart has, per worker, trades received and written per second, lag p50/p99, spool
bytes, and the increases of reconnects, gaps, backfilled, invalid and rejected.
matplotlib (the `plot` extra) is imported only when drawing; the Agg backend needs no display.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from workers.common.timefmt import iso_seconds, parse_time
from workers.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    ConfigError,
    NoData,
    SinkError,
    exit_codes_help,
)
from workers.settings import load_env, load_settings
from workers.storage.influx_query import InfluxQuery
from workers.storage.lp_files import lp_files, point_batches

NS = 1_000_000_000
STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
           43200, 86400)
HEALTH_FIELDS = ("received", "written", "lag_p50_ms", "lag_p99_ms", "spool_bytes", "reconnects",
                 "gaps", "backfilled", "invalid", "rejected")
COUNTERS = ("reconnects", "gaps", "invalid", "rejected")  # backfilled: an axis of its own


def bucket_seconds(since_ns: int, until_ns: int, buckets: int = 120) -> int:
    """A round interval giving about `buckets` intervals over the range (1 s at the least)."""
    wanted = (until_ns - since_ns) / NS / buckets
    return next((s for s in STEPS_S if s >= wanted), STEPS_S[-1])


@dataclass
class Market:
    """Per-interval figures of one symbol; times are interval starts in epoch ns."""
    times: List[int] = field(default_factory=list)
    price: List[Optional[float]] = field(default_factory=list)
    vwap: List[Optional[float]] = field(default_factory=list)
    trades: List[int] = field(default_factory=list)
    buy: List[float] = field(default_factory=list)
    sell: List[float] = field(default_factory=list)


class _Acc:
    __slots__ = ("last_t", "price", "pv", "qty", "trades", "buy", "sell")

    def __init__(self) -> None:
        self.last_t, self.price, self.pv, self.qty = -1, 0.0, 0.0, 0.0
        self.trades, self.buy, self.sell = 0, 0.0, 0.0


def aggregate(trades: Iterable[Tuple[int, float, float, bool]], since_ns: int, until_ns: int,
              step_s: int) -> Market:
    """(time ns, price, qty, buyer_maker) trades into per-interval figures, empty intervals
    kept (price None, counts 0): the same numbers as the InfluxQL of `influx_market`."""
    step = step_s * NS
    first = since_ns - since_ns % step
    accs: Dict[int, _Acc] = {}
    for t, price, qty, buyer_maker in trades:
        if not since_ns <= t < until_ns:
            continue
        acc = accs.setdefault(t - t % step, _Acc())
        if t >= acc.last_t:
            acc.last_t, acc.price = t, price
        acc.pv += price * qty
        acc.qty += qty
        acc.trades += 1
        if buyer_maker:
            acc.sell += qty  # the buyer made the book: the taker sold
        else:
            acc.buy += qty
    out = Market()
    for start in range(first, until_ns, step):
        got = accs.get(start)
        out.times.append(start)
        out.price.append(got.price if got else None)
        out.vwap.append(got.pv / got.qty if got and got.qty else None)
        out.trades.append(got.trades if got else 0)
        out.buy.append(got.buy if got else 0.0)
        out.sell.append(got.sell if got else 0.0)
    return out


# ------------------------------------------------------------------ line-protocol files
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,]*)')


def parse_trade_line(line: str, measurement: str) -> Optional[Tuple[str, int, float, float, bool]]:
    """(symbol, time ns, price, qty, buyer_maker) of one trade line the worker wrote, or None
    for a header, a health point or a line of another measurement."""
    if not line.startswith(measurement + ","):
        return None
    try:
        key, fields, stamp = _split_quoted(line.rstrip("\n"))
        tags = dict(part.split("=", 1) for part in key.split(",")[1:])
        values = dict(_FIELD.findall(fields))
        return (tags["symbol"], int(stamp), float(values["price"]), float(values["qty"]),
                values["buyer_maker"].lower() in ("true", "t"))
    except (KeyError, ValueError):
        return None


def _split_quoted(line: str) -> Tuple[str, str, str]:
    """Key, fields, timestamp: the key has no space (symbols have none), the time is last."""
    key, rest = line.split(" ", 1)
    fields, stamp = rest.rsplit(" ", 1)
    return key, fields, stamp


def file_trades(lp_dir: Path, measurement: str, symbols: Sequence[str]
                ) -> Dict[str, List[Tuple[int, float, float, bool]]]:
    """The trades of `symbols` in the no-database mode's files (read as scripts/load-files
    reads them)."""
    wanted = set(symbols)
    out: Dict[str, List[Tuple[int, float, float, bool]]] = {s: [] for s in symbols}
    for path in lp_files(lp_dir, None):
        try:
            for batch in point_batches(path, 10_000):
                for line in batch:
                    trade = parse_trade_line(line, measurement)
                    if trade and trade[0] in wanted:
                        out[trade[0]].append(trade[1:])
        except (OSError, EOFError, UnicodeDecodeError):
            continue  # a gzip cut short by a crash: use the other files
    return out


# ------------------------------------------------------------------ InfluxDB
def _series_rows(series: Iterable[Dict[str, Any]]
                 ) -> Iterator[Tuple[Dict[str, str], Dict[str, Any]]]:
    for s in series:
        columns = s["columns"]
        for values in s.get("values", []):
            yield s.get("tags") or {}, dict(zip(columns, values))


def _regex(values: Sequence[str]) -> str:
    return "/^(" + "|".join(re.escape(v) for v in values) + ")$/"


def influx_market(query: InfluxQuery, measurement: str, symbols: Sequence[str],
                  since_ns: int, until_ns: int, step_s: int) -> Dict[str, Market]:
    where = (f'"symbol" =~ {_regex(symbols)} AND time >= {since_ns} AND time < {until_ns}')
    by = f'GROUP BY time({step_s}s), "symbol" fill(none)'
    m = f'"{measurement}"'
    per: Dict[str, Dict[int, Dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    statements = (
        f'SELECT last("price") AS "price", count("trade_id") AS "trades", sum("qty") AS "qty" '
        f'FROM {m} WHERE {where} {by}',
        f'SELECT sum("pv") AS "pv" FROM (SELECT "price" * "qty" AS "pv" FROM {m} WHERE {where} '
        f'GROUP BY "symbol") WHERE time >= {since_ns} AND time < {until_ns} {by}',
        f'SELECT sum("qty") AS "sell" FROM {m} WHERE {where} AND "buyer_maker" = true {by}',
        f'SELECT sum("qty") AS "buy" FROM {m} WHERE {where} AND "buyer_maker" = false {by}',
    )
    for q in statements:
        for tags, row in _series_rows(query.query(q)):  # audit's /query client
            per[tags.get("symbol", "")][int(row.pop("time"))].update(row)
    out: Dict[str, Market] = {}
    step = step_s * NS
    for symbol in symbols:
        rows = per.get(symbol)
        if not rows or not any(r.get("trades") for r in rows.values()):
            continue
        market = Market()
        for start in range(since_ns - since_ns % step, until_ns, step):
            r = rows.get(start, {})
            market.times.append(start)
            market.price.append(r.get("price"))
            qty, pv = r.get("qty") or 0.0, r.get("pv")
            market.vwap.append(pv / qty if pv is not None and qty else None)
            market.trades.append(int(r.get("trades") or 0))
            market.buy.append(float(r.get("buy") or 0.0))
            market.sell.append(float(r.get("sell") or 0.0))
        out[symbol] = market
    return out


def influx_health(query: InfluxQuery, measurement: str, workers: Sequence[str],
                  since_ns: int, until_ns: int, step_s: int
                  ) -> Dict[str, Dict[str, List[Any]]]:
    """Per worker (and host, when tagged): times and the last/max of each health field."""
    step_s = max(step_s, 10)  # one point per 10 s: smaller intervals would be mostly empty
    aggs = ", ".join(f'{"max" if f.startswith("lag") else "last"}("{f}") AS "{f}"'
                     for f in HEALTH_FIELDS)
    where = f"time >= {since_ns} AND time < {until_ns}"
    if workers:
        where += f' AND "worker" =~ {_regex(workers)}'
    q = (f'SELECT {aggs} FROM "{measurement}" WHERE {where} '
         f'GROUP BY time({step_s}s), "host", "worker" fill(none)')
    out: Dict[str, Dict[str, List[Any]]] = {}
    for tags, row in _series_rows(query.query(q)):
        name = tags.get("worker", "?") + (f"@{tags['host']}" if tags.get("host") else "")
        series = out.setdefault(name, {k: [] for k in ("time", *HEALTH_FIELDS)})
        for k in ("time", *HEALTH_FIELDS):
            series[k].append(row.get(k))
    return out


# ------------------------------------------------------------------ drawing
def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _dates(times_ns: Sequence[int]) -> List[Any]:
    from datetime import datetime, timezone
    return [datetime.fromtimestamp(t / NS, tz=timezone.utc) for t in times_ns]


def draw_market(markets: Dict[str, Market], step_s: int, out: Path, source: str,
                span: Tuple[int, int]) -> None:
    plt = _pyplot()
    n = len(markets)
    fig, axes = plt.subplots(3 * n, 1, figsize=(9, 5.2 * n), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1, 1] * n})
    width = step_s / 86400 * 0.9  # bar width in days (matplotlib's date unit)
    for i, (symbol, m) in enumerate(markets.items()):
        ax_p, ax_n, ax_v = axes[3 * i][0], axes[3 * i + 1][0], axes[3 * i + 2][0]
        x = _dates(m.times)
        xp = [(d, p) for d, p in zip(x, m.price) if p is not None]
        xv = [(d, v) for d, v in zip(x, m.vwap) if v is not None]
        ax_p.plot([d for d, _ in xp], [p for _, p in xp], color="#1f77b4", lw=1.2,
                  label="last price")
        ax_p.plot([d for d, _ in xv], [v for _, v in xv], color="#ff7f0e", lw=1, ls="--",
                  label="VWAP")
        ax_p.set_title(f"{symbol}  (per {step_s} s, {source})", fontsize=10, loc="left")
        ax_p.legend(loc="upper left", fontsize=8)
        ax_p.grid(alpha=0.3)
        ax_p.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax_n.bar(x, m.trades, width=width, align="edge", color="#7f7f7f")
        ax_n.set_ylabel("trades", fontsize=8)
        ax_n.grid(alpha=0.3)
        ax_v.bar(x, m.buy, width=width, align="edge", color="#2ca02c", label="buy (taker)")
        ax_v.bar(x, [-s for s in m.sell], width=width, align="edge", color="#d62728",
                 label="sell (taker)")
        ax_v.axhline(0, color="black", lw=0.5)
        ax_v.set_ylabel("volume", fontsize=8)
        ax_v.legend(loc="upper left", fontsize=7)
        ax_v.grid(alpha=0.3)
    axes[-1][0].set_xlabel("time (UTC)")
    axes[-1][0].set_xlim(*_dates(span))
    _save(fig, plt, out)


def draw_health(health: Dict[str, Dict[str, List[Any]]], out: Path, span: Tuple[int, int]
                ) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(5, 1, figsize=(9, 10.5), sharex=True)
    ax_rate, ax_lag, ax_spool, ax_cnt, ax_fill = axes
    for worker, s in sorted(health.items()):
        x = _dates(s["time"])
        for name, style in (("received", "-"), ("written", "--")):
            rates = _rates(s["time"], s[name])
            ax_rate.plot(x[1:], rates, ls=style, lw=1, label=f"{worker} {name}")
        for name, style in (("lag_p50_ms", "-"), ("lag_p99_ms", ":")):
            pts = [(d, v) for d, v in zip(x, s[name]) if v is not None]
            ax_lag.plot([d for d, _ in pts], [v for _, v in pts], ls=style, lw=1,
                        label=f"{worker} {name[4:7]}")
        ax_spool.plot(x, [v or 0 for v in s["spool_bytes"]], lw=1, label=worker)
        for name in COUNTERS:
            ax_cnt.step(x, _increase(s[name]), where="post", lw=1, label=f"{worker} {name}")
        ax_fill.step(x, _increase(s["backfilled"]), where="post", lw=1, label=worker)
    ax_spool.axhspan(1, max(1, ax_spool.get_ylim()[1]), color="#d62728", alpha=0.08)
    for ax, title in ((ax_rate, "trades per second: received vs written"),
                      (ax_lag, "lag, trade time to stored (ms)"),
                      (ax_spool, "spool bytes (red zone: InfluxDB writes failing)"),
                      (ax_cnt, "reconnects, gaps, invalid, rejected: increase over the range"),
                      (ax_fill, "trades backfilled from REST: increase over the range")):
        ax.set_title(title, fontsize=9, loc="left")
        ax.legend(loc="upper left", fontsize=7, ncol=3)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (UTC)")
    axes[-1].set_xlim(*_dates(span))
    _save(fig, plt, out)


def _rates(times: Sequence[int], values: Sequence[Optional[int]]) -> List[float]:
    out = []
    for (t0, v0), (t1, v1) in zip(zip(times, values), zip(times[1:], values[1:])):
        out.append(max(0.0, ((v1 or 0) - (v0 or 0)) / ((t1 - t0) / NS)) if t1 > t0 else 0.0)
    return out


def _increase(values: Sequence[Optional[int]]) -> List[int]:
    """Counter increase since the first value, counting across restarts (resets to 0)."""
    total, prev, out = 0, None, []
    for v in values:
        v = v or 0
        if prev is not None:
            total += v - prev if v >= prev else v
        prev = v
        out.append(total)
    return out


def _save(fig: Any, plt: Any, out: Path) -> None:
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)


# ------------------------------------------------------------------ command line
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/plot", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=exit_codes_help(ok="chart written", problem="no data for the range or the symbol",
                               config="a setting or an argument", runtime="InfluxDB failed"))
    parser.add_argument("symbols", nargs="*", metavar="SYMBOL", help="e.g. BTCUSDT ETHUSDT")
    parser.add_argument("--health", action="store_true",
                        help="the capture-health chart (streamer_health) instead")
    parser.add_argument("--worker", action="append", default=[],
                        help="with --health: only this worker (repeatable)")
    parser.add_argument("--since", default="1h", help="ISO time or a span back from now (1h)")
    parser.add_argument("--until", default=None, help="ISO time or a span back; default now")
    parser.add_argument("--interval", type=int, default=None,
                        help="seconds per interval (default: about 120 intervals)")
    parser.add_argument("--lp-dir", type=Path, default=None,
                        help="read the no-database mode's files (.lp, .lp.gz) under this "
                             "directory instead of InfluxDB")
    parser.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    parser.add_argument("--env-file", type=Path, default=None, help="settings file (.env.local)")
    args = parser.parse_args(argv)
    symbols = [s.upper() for s in args.symbols]
    try:
        if args.health == bool(symbols):
            raise ConfigError("name one or more SYMBOLs, or --health (not both)")
        if args.health and args.lp_dir:
            raise ConfigError("--health reads InfluxDB's streamer_health: drop --lp-dir")
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else time.time_ns()
        if until <= since:
            raise ConfigError("--since must be before --until")
        step_s = args.interval or bucket_seconds(since, until)
        settings = load_settings(load_env(args.env_file))
        measurement = settings.measurement
        if args.lp_dir is None and settings.influx is None:
            raise ConfigError("INFLUXDB_URL is not set: set it in .env.local, or read the "
                              "files with --lp-dir data/lp")
    except (ConfigError, ValueError) as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    span = f"between {iso_seconds(since // NS)} and {iso_seconds(until // NS)}"
    try:
        if args.lp_dir is not None:
            if not args.lp_dir.is_dir():
                raise NoData(f"no directory {args.lp_dir}")
            markets = {s: aggregate(t, since, until, step_s)
                       for s, t in file_trades(args.lp_dir, measurement, symbols).items()}
            markets = {s: m for s, m in markets.items() if any(m.trades)}
            _require(markets, symbols, f"in the files under {args.lp_dir} {span}")
            draw_market(markets, step_s, args.out, "files", (since, until))
        else:
            assert settings.influx is not None
            query = InfluxQuery(settings.influx)
            if args.health:
                health = influx_health(query, settings.influx.health_measurement, args.worker,
                                       since, until, step_s)
                if not health:
                    raise NoData(f"no {settings.influx.health_measurement} points"
                                 f"{' of ' + ', '.join(args.worker) if args.worker else ''} "
                                 f"{span}")
                draw_health(health, args.out, (since, until))
            else:
                markets = influx_market(query, measurement, symbols, since, until, step_s)
                _require(markets, symbols, f"in InfluxDB {span}")
                draw_market(markets, step_s, args.out, "InfluxDB", (since, until))
    except NoData as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except SinkError as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"plot: wrote {args.out}")
    return EXIT_OK


def _require(markets: Dict[str, Market], symbols: Sequence[str], where: str) -> None:
    missing = [s for s in symbols if s not in markets]
    if missing:
        raise NoData(f"no trades of {', '.join(missing)} {where}")



if __name__ == "__main__":
    sys.exit(main())
