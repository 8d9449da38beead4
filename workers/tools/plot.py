"""PNG charts of the stored trades and of the workers' health, without Grafana (scripts/plot).

    scripts/plot BTCUSDT ETHUSDT                 # from InfluxDB (.env.local), the last hour
    scripts/plot --health                        # streamer_health, per worker
    scripts/plot BTCUSDT --lp-dir data/lp        # from the no-database files
    scripts/plot --health --since 6h --until 2h --out outage.png

The PNG goes to charts/ (git-ignored) unless --out names one; the command prints its path.
Without --since the range starts at the first point of the last hour (a service started four
minutes ago gets four minutes, not an hour 90 % empty); the end is --until or now, so a capture
that stopped shows as an empty tail. Given --since, the range is as given.

The market chart has, per symbol, the last price per interval with the interval's VWAP, the
number of trades per interval, and the taker buy (up) and sell (down) volume per interval.
The health chart has, per worker, trades received and written per second, lag p50/p99, spool
bytes, and the increases of reconnects, gaps, backfilled, invalid and rejected; each worker
has one colour in every panel (the 8 busiest: the others share grey), the line style names the
figure, counters that never rose are left out, and red shades the time the spool held data.
matplotlib (the `plot` extra) is imported only when drawing; the Agg backend needs no display.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import math
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from workers.common.timefmt import file_stamp, iso_seconds, parse_time
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
from workers.settings import PROJECT_ROOT, Settings, load_env, load_settings
from workers.storage.influx_query import InfluxQuery
from workers.storage.lp_files import lp_files, point_batches

NS = 1_000_000_000
STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
           43200, 86400)
HEALTH_FIELDS = ("received", "written", "lag_p50_ms", "lag_p99_ms", "spool_bytes", "reconnects",
                 "gaps", "backfilled", "invalid", "rejected")
COUNTERS = ("reconnects", "gaps", "invalid", "rejected")  # backfilled: an axis of its own
LOOKBACK_S = 3600  # without --since: the data of this span back from the end
# InfluxDB is read a day at a time: 3 Core refuses a query over more than ~72 h (432 Parquet
# files; influxdb-servers.md, Reads, "limits"), and a week's chart must draw there too.
READ_WINDOW_S = 86400
MIN_SPAN_S = 60  # a range picked from the data is at least this long
CHARTS_DIR = PROJECT_ROOT / "charts"  # the default output folder (git-ignored)
# One colour per worker, none repeated within a figure: tab10 without its grey (the others') and
# its red (the spool's shading).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
           "#17becf")
OTHERS_COLOUR = "#9a9a9a"
SHADE_COLOUR = "#d62728"
STYLES = {"received": "-", "written": "--", "lag_p50_ms": "-", "lag_p99_ms": ":",
          "reconnects": "-", "gaps": "--", "invalid": ":", "rejected": "-."}
Span = Tuple[int, int]


def bucket_seconds(since_ns: int, until_ns: int, buckets: int = 120) -> int:
    """A round interval giving about `buckets` intervals over the range (1 s at the least)."""
    wanted = (until_ns - since_ns) / NS / buckets
    return next((s for s in STEPS_S if s >= wanted), STEPS_S[-1])


def pick_range(first_ns: Optional[int], since_ns: int, until_ns: int, since_given: bool
               ) -> Span:
    """The range drawn: [since, until) as given with --since; without it, from the first point
    found (`first_ns`, None: none) to the end, at least MIN_SPAN_S long. The end is never
    taken from the data: a capture that stopped shows as the empty tail it is."""
    if since_given or first_ns is None:
        return since_ns, until_ns
    return max(since_ns, min(first_ns, until_ns - MIN_SPAN_S * NS)), until_ns


@dataclass(frozen=True)
class Legend:
    """A colour per series: the busiest len(PALETTE) each their own, the rest grey."""
    colours: Dict[str, str]  # every series
    named: List[str]  # in the legend, busiest first
    others: List[str]  # drawn grey, one legend entry "others (N)"


def cap_legend(volumes: Dict[str, float], palette: Sequence[str] = PALETTE) -> Legend:
    """Colour the series by volume (largest first, then by name): no colour repeats, and the
    legend has at most len(palette) entries plus one for the others."""
    ranked = sorted(volumes, key=lambda name: (-volumes[name], name))
    named, others = ranked[:len(palette)], ranked[len(palette):]
    colours = {name: palette[i] for i, name in enumerate(named)}
    colours.update({name: OTHERS_COLOUR for name in others})
    return Legend(colours, named, others)


def nonzero_spans(times: Sequence[int], values: Sequence[Optional[float]], step_ns: int
                  ) -> List[Span]:
    """The spans in which `values` was above 0: from such a point to the next point (the last
    one's span lasts one step); a missing value counts as unknown, not as a problem."""
    spans: List[Span] = []
    for i, (t, v) in enumerate(zip(times, values)):
        if not v or v <= 0:
            continue
        end = times[i + 1] if i + 1 < len(times) else t + step_ns
        if spans and spans[-1][1] >= t:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((t, end))
    return spans


def merge_spans(spans: Iterable[Span]) -> List[Span]:
    """The union of spans, sorted, overlapping or touching ones joined."""
    out: List[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


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


def read_windows(since_ns: int, until_ns: int, step_s: int = 1) -> List[Span]:
    """[since, until) cut at multiples of a window of whole steps (about READ_WINDOW_S): each
    query stays within 3 Core's span, and each GROUP BY time(step) interval (InfluxDB aligns
    them to multiples of the step) lies in one window, so no interval is counted in two."""
    step = step_s * NS
    window = max(step, READ_WINDOW_S * NS // step * step)
    out: List[Span] = []
    start = since_ns
    while start < until_ns:
        end = min(until_ns, (start // window + 1) * window)
        out.append((start, end))
        start = end
    return out


Where = Callable[[int, int], str]  # the WHERE of a query over [since, until)


def influx_first(query: InfluxQuery, measurement: str, field_name: str, where: Where,
                 since_ns: int, until_ns: int) -> Optional[int]:
    """The time (epoch ns) of the first point in [since, until) matching `where`, or None."""
    for start, end in read_windows(since_ns, until_ns):
        q = f'SELECT first("{field_name}") FROM "{measurement}" WHERE {where(start, end)}'
        times = [int(row["time"]) for _, row in _series_rows(query.query(q)) if row.get("time")]
        if times:
            return min(times)
    return None


def market_where(symbols: Sequence[str], since_ns: int, until_ns: int) -> str:
    return f'"symbol" =~ {_regex(symbols)} AND time >= {since_ns} AND time < {until_ns}'


def health_where(workers: Sequence[str], since_ns: int, until_ns: int) -> str:
    where = f"time >= {since_ns} AND time < {until_ns}"
    return where + (f' AND "worker" =~ {_regex(workers)}' if workers else "")


def influx_market(query: InfluxQuery, measurement: str, symbols: Sequence[str],
                  since_ns: int, until_ns: int, step_s: int) -> Dict[str, Market]:
    by = f'GROUP BY time({step_s}s), "symbol" fill(none)'
    m = f'"{measurement}"'
    per: Dict[str, Dict[int, Dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for start, end in read_windows(since_ns, until_ns, step_s):
        where = market_where(symbols, start, end)
        statements = (
            f'SELECT last("price") AS "price", count("trade_id") AS "trades", sum("qty") AS '
            f'"qty" FROM {m} WHERE {where} {by}',
            f'SELECT sum("pv") AS "pv" FROM (SELECT "price" * "qty" AS "pv" FROM {m} WHERE '
            f'{where} GROUP BY "symbol") WHERE time >= {start} AND time < {end} {by}',
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
    out: Dict[str, Dict[str, List[Any]]] = {}
    for start, end in read_windows(since_ns, until_ns, step_s):
        q = (f'SELECT {aggs} FROM "{measurement}" WHERE {health_where(workers, start, end)} '
             f'GROUP BY time({step_s}s), "host", "worker" fill(none)')
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
        ax_p.legend(loc="best", fontsize=8)
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
    axes[-1][0].set_xlabel(f"time (UTC), {iso_seconds(span[0] // NS)} to "
                           f"{iso_seconds(span[1] // NS)}")
    axes[-1][0].set_xlim(*_dates(span))
    _time_axis(axes[-1][0], span)
    _save(fig, plt, out)


def health_legend(health: Dict[str, Dict[str, List[Any]]]) -> Legend:
    """The workers' colours, the busiest (most trades received over the range) first."""
    return cap_legend({w: float((_increase(s["received"]) or [0])[-1]) for w, s in health.items()})


def spool_spans(health: Dict[str, Dict[str, List[Any]]], step_s: int) -> List[Span]:
    """When any worker's spool held data: the time InfluxDB writes were failing."""
    step_ns = max(step_s, 10) * NS
    return merge_spans(span for s in health.values()
                       for span in nonzero_spans(s["time"], s["spool_bytes"], step_ns))


def draw_health(health: Dict[str, Dict[str, List[Any]]], out: Path, span: Span, step_s: int
                ) -> None:
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    fig, axes = plt.subplots(5, 1, figsize=(9, 10.5), sharex=True)
    ax_rate, ax_lag, ax_spool, ax_cnt, ax_fill = axes
    legend = health_legend(health)
    risen: List[str] = []  # the counters that rose, for their panel's legend
    for worker in reversed(legend.named + legend.others):  # the busiest drawn last, on top
        s, colour = health[worker], legend.colours[worker]
        lw = 0.8 if worker in legend.others else 1.2
        x = _dates(s["time"])
        for name in ("received", "written"):
            ax_rate.plot(x[1:], _rates(s["time"], s[name]), color=colour, ls=STYLES[name], lw=lw)
        for name in ("lag_p50_ms", "lag_p99_ms"):  # no lag (nothing stored): a break
            ax_lag.plot(x, [math.nan if v is None else v for v in s[name]], color=colour,
                        ls=STYLES[name], lw=lw)
        # a step, as the shading: a point's value holds until the next point
        ax_spool.step(x, [v or 0 for v in s["spool_bytes"]], where="post", color=colour, lw=lw)
        for name in COUNTERS:
            rise = _increase(s[name])
            if rise and rise[-1]:
                ax_cnt.step(x, rise, where="post", color=colour, ls=STYLES[name], lw=lw)
                risen.append(name)
        fill = _increase(s["backfilled"])
        if fill and fill[-1]:
            ax_fill.step(x, fill, where="post", color=colour, lw=lw)
    shaded = spool_spans(health, step_s)
    for start, end in shaded:
        for ax in axes:
            ax.axvspan(*_dates((start, end)), color=SHADE_COLOUR, alpha=0.12, lw=0)
    styles = {"received": "received", "written": "written", "lag_p50_ms": "p50",
              "lag_p99_ms": "p99", **{c: c for c in COUNTERS}}

    def style_legend(ax: Any, names: Sequence[str]) -> None:
        handles = [Line2D([], [], color="black", ls=STYLES[n], lw=1, label=styles[n])
                   for n in names]
        if handles:
            ax.legend(handles=handles, loc="upper left", fontsize=7, ncol=len(handles))

    style_legend(ax_rate, ("received", "written"))
    style_legend(ax_lag, ("lag_p50_ms", "lag_p99_ms"))
    style_legend(ax_cnt, [c for c in COUNTERS if c in risen])
    for ax, what in ((ax_cnt, "no reconnect, gap, invalid message or rejected line"),
                     (ax_fill, "no trade backfilled")):
        if not ax.lines:
            ax.text(0.5, 0.5, f"{what} in the range", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="#555555")
            ax.set_yticks([])
    for ax, title in ((ax_rate, "trades per second: received vs written"),
                      (ax_lag, "lag, trade time to stored (ms): the worst per interval"),
                      (ax_spool, "spool bytes (shaded red: the spool held data, InfluxDB "
                                 "writes failing)"),
                      (ax_cnt, "reconnects, gaps, invalid, rejected: increase over the range "
                               "(only those that rose)"),
                      (ax_fill, "trades backfilled from REST: increase over the range")):
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    handles: List[Any] = [Line2D([], [], color=legend.colours[w], lw=2, label=w)
                          for w in legend.named]
    if legend.others:
        handles.append(Line2D([], [], color=OTHERS_COLOUR, lw=2,
                              label=f"others ({len(legend.others)})"))
    if shaded:
        handles.append(Patch(color=SHADE_COLOUR, alpha=0.25, label="spool held data"))
    fig.legend(handles=handles, loc="upper center", ncol=min(5, len(handles)), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.995))
    top = 0.955 if len(handles) <= 5 else 0.93
    axes[-1].set_xlabel(f"time (UTC), {iso_seconds(span[0] // NS)} to "
                        f"{iso_seconds(span[1] // NS)}")
    axes[-1].set_xlim(*_dates(span))
    _time_axis(axes[-1], span)
    _save(fig, plt, out, top)


def _time_axis(ax: Any, span: Span) -> None:
    """Ticks as clock times (the date is in the axis label), with seconds on short ranges."""
    dates: Any = importlib.import_module("matplotlib.dates")  # untyped: Any, as pyplot is
    seconds = (span[1] - span[0]) / NS
    form = "%H:%M:%S" if seconds <= 900 else "%H:%M" if seconds <= 86400 else "%m-%d %H:%M"
    ax.xaxis.set_major_formatter(dates.DateFormatter(form))


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


def _save(fig: Any, plt: Any, out: Path, top: float = 1.0) -> None:
    fig.autofmt_xdate()
    fig.tight_layout(rect=(0, 0, 1, top))  # `top`: room for a figure legend above the panels
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)


# ------------------------------------------------------------------ command line
def default_out(symbols: Sequence[str], health: bool, files: bool) -> Path:
    """charts/health-<UTC>.png, charts/market-BTCUSDT-ETHUSDT[-files]-<UTC>.png."""
    kind = "health" if health else "-".join(["market", *symbols[:4]] + (["files"] if files else []))
    return CHARTS_DIR / f"{kind}-{file_stamp()}.png"


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--since", default=None,
                        help="start: ISO time or a span back from now (1h, 90m, 7d); default: "
                             "the first point of the hour before the end")
    parser.add_argument("--until", default=None, help="end: ISO time or a span back; default now")
    parser.add_argument("--interval", type=int, default=None,
                        help="seconds per interval (default: about 120 intervals)")
    parser.add_argument("--lp-dir", type=Path, default=None,
                        help="read the no-database mode's files (.lp, .lp.gz) under this "
                             "directory instead of InfluxDB")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the PNG file to write (default: under {CHARTS_DIR}, git-ignored)")
    parser.add_argument("--env-file", type=Path, default=None, help="settings file (.env.local)")
    return parser


@dataclass
class Request:
    """What to draw, checked: the symbols (none for --health), the range asked and the settings."""

    args: argparse.Namespace
    symbols: List[str]
    since: int
    until: int
    settings: Settings

    @property
    def given(self) -> bool:  # an explicit --since is kept exactly (no range picking)
        return self.args.since is not None

    @property
    def looked(self) -> str:
        return f"between {iso_seconds(self.since // NS)} and {iso_seconds(self.until // NS)}"

    def span_and_step(self, first: Optional[int]) -> Tuple[Tuple[int, int], int]:
        span = pick_range(first, self.since, self.until, self.given)
        return span, self.args.interval or bucket_seconds(*span)


def checked_request(args: argparse.Namespace) -> Request:
    """The arguments and settings, or a ConfigError/ValueError saying what is wrong."""
    symbols = [s.upper() for s in args.symbols]
    if args.health == bool(symbols):
        raise ConfigError("name one or more SYMBOLs, or --health (not both)")
    if args.health and args.lp_dir:
        raise ConfigError("--health reads InfluxDB's streamer_health: drop --lp-dir")
    until = parse_time(args.until, "--until") if args.until else time.time_ns()
    since = parse_time(args.since, "--since") if args.since else until - LOOKBACK_S * NS
    if until <= since:
        raise ConfigError("--since must be before --until")
    settings = load_settings(load_env(args.env_file))
    if args.lp_dir is None and settings.influx is None:
        raise ConfigError("INFLUXDB_URL is not set: set it in .env.local, or read the "
                          "files with --lp-dir data/lp")
    return Request(args, symbols, since, until, settings)


def chart_from_files(req: Request, out: Path) -> None:
    lp_dir = req.args.lp_dir
    if not lp_dir.is_dir():
        raise NoData(f"no directory {lp_dir}")
    trades = file_trades(lp_dir, req.settings.measurement, req.symbols)
    first = min((t[0] for ts in trades.values() for t in ts if req.since <= t[0] < req.until),
                default=None)
    span, step_s = req.span_and_step(first)
    markets = {s: aggregate(t, *span, step_s) for s, t in trades.items()}
    markets = {s: m for s, m in markets.items() if any(m.trades)}
    _require(markets, req.symbols, f"in the files under {lp_dir} {req.looked}")
    draw_market(markets, step_s, out, "files", span)


def chart_of_health(req: Request, query: InfluxQuery, out: Path) -> None:
    assert req.settings.influx is not None
    health_m, workers = req.settings.influx.health_measurement, req.args.worker
    first = None if req.given else influx_first(
        query, health_m, "received", functools.partial(health_where, workers), req.since,
        req.until)
    span, step_s = req.span_and_step(first)
    health = influx_health(query, health_m, workers, *span, step_s)
    if not health:
        of = f" of {', '.join(workers)}" if workers else ""
        raise NoData(f"no {health_m} points{of} {req.looked}")
    draw_health(health, out, span, step_s)


def chart_of_market(req: Request, query: InfluxQuery, out: Path) -> None:
    measurement = req.settings.measurement
    first = None if req.given else influx_first(
        query, measurement, "price", functools.partial(market_where, req.symbols), req.since,
        req.until)
    span, step_s = req.span_and_step(first)
    markets = influx_market(query, measurement, req.symbols, *span, step_s)
    _require(markets, req.symbols, f"in InfluxDB {req.looked}")
    draw_market(markets, step_s, out, "InfluxDB", span)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        req = checked_request(args)
    except (ConfigError, ValueError) as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    out = args.out or default_out(req.symbols, args.health, args.lp_dir is not None)
    try:
        if args.lp_dir is not None:
            chart_from_files(req, out)
        else:
            assert req.settings.influx is not None
            query = InfluxQuery(req.settings.influx)
            if args.health:
                chart_of_health(req, query, out)
            else:
                chart_of_market(req, query, out)
    except NoData as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except SinkError as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"plot: wrote {out}")
    return EXIT_OK


def _require(markets: Dict[str, Market], symbols: Sequence[str], where: str) -> None:
    missing = [s for s in symbols if s not in markets]
    if missing:
        raise NoData(f"no trades of {', '.join(missing)} {where}")


if __name__ == "__main__":
    sys.exit(main())
