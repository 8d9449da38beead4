"""Section 10: what a trade costs of InfluxDB's write quota, and what gzip costs and saves.

The quota (Cloud Serverless's free plan: 5 MB per fixed 5-minute window) counts UNCOMPRESSED
line protocol, so what matters is the bytes of a trade line as the worker renders it
(workers/storage/lineproto.py) over the simulator's trades (its seeded generator: the prices,
quantities and burst shapes of BTCUSDT and ETHUSDT, 8-decimal strings, trade ids of today's
10 digits). Gzip (INFLUXDB_GZIP) then saves bandwidth, not quota: its CPU per trade is measured
as influxdb-client spends it with `enable_gzip=True` (`gzip.compress` of the encoded body at its
default level 9, client/_base.py `update_request_body`), over bodies of WRITE_BATCH_SIZE lines.
Pure CPU in this process: no rig, no network. `python -m tests.support.bench.quota` prints it.
"""
from __future__ import annotations

import gzip
import json
import statistics
import time
from typing import Any, Dict, List

from tests.support.exchange.config import default_price, fmt8, step_units, tick_units, to_units
from tests.support.exchange.generator import TradeGenerator
from workers.settings import QUOTA_WINDOW_S
from workers.storage.lineproto import LineRenderer
from workers.trade import Trade

from .report import Section
from .rig import Profile, Rig

SYMBOLS = {"BTCUSDT": 5_000_000_000, "ETHUSDT": 2_600_000_000}  # first trade id, 10 digits
LINES_PER_SYMBOL = 50_000
BODY_LINES = 5_000  # WRITE_BATCH_SIZE's default: one request's body
CLIENT_LEVEL = 9  # gzip.compress's default, which influxdb-client uses
LEVELS = (1, 6, CLIENT_LEVEL)
RUNS = 3
FREE_PLAN_BYTES = 5_000_000  # per QUOTA_WINDOW_S


def trade_lines(symbol: str, count: int, first_id: int, seed: int = 7) -> List[str]:
    """`count` lines of the simulator's trades of `symbol`, as the worker renders them."""
    price = to_units(default_price(symbol))
    gen = TradeGenerator(symbol, seed, price, tick_units(price), step_units(price))
    renderer = LineRenderer("price_ticks")
    time_ms = int(time.time() * 1000) - 3_600_000
    lines: List[str] = []
    while len(lines) < count:
        burst = gen.burst()
        time_ms += 7
        for p, q in zip(burst.prices, burst.qtys):
            lines.append(renderer.line(Trade(symbol, first_id + len(lines), fmt8(p), fmt8(q),
                                             time_ms, burst.buyer_is_maker,
                                             time_ms * 1000 + 417)))  # µs: 16 digits
    return lines[:count]


def measure(per_symbol: int = LINES_PER_SYMBOL) -> Dict[str, Any]:
    lines = [line for symbol, first in SYMBOLS.items()
             for line in trade_lines(symbol, per_symbol, first)]
    sizes = sorted(len(line.encode()) + 1 for line in lines)  # + the newline joining them
    bodies = ["\n".join(lines[i:i + BODY_LINES]).encode()
              for i in range(0, len(lines), BODY_LINES)]
    raw = sum(len(b) for b in bodies)
    out: Dict[str, Any] = {
        "lines": len(lines), "bytes_per_line_median": statistics.median(sizes),
        "bytes_per_line_mean": raw / len(lines),
        "bytes_per_line_p99": sizes[len(sizes) * 99 // 100],
        "per_symbol_median": {s: statistics.median(len(line) + 1 for line in lines
                                                   if f"={s} " in line) for s in SYMBOLS},
        "gzip": {}}
    for level in LEVELS:
        cpu = []
        for _ in range(RUNS):
            began = time.process_time()
            packed = [gzip.compress(b, compresslevel=level) for b in bodies]
            cpu.append(time.process_time() - began)
        out["gzip"][level] = {"us_per_trade": statistics.median(cpu) / len(lines) * 1e6,
                              "ratio": raw / sum(len(p) for p in packed)}
    per_line = out["bytes_per_line_mean"]
    out["free_plan_trades_per_s"] = FREE_PLAN_BYTES / QUOTA_WINDOW_S / per_line
    return out


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("quota", "10. The write quota: bytes per trade line, gzip's cost")
    got = measure()
    sec.facts["quota"] = got
    table = sec.table("figure", "value", "how")
    table.add("bytes per trade line (median)", f"{got['bytes_per_line_median']:.0f} B",
              "lineproto.LineRenderer over the simulator's BTCUSDT and ETHUSDT, + newline")
    table.add("... mean, p99", f"{got['bytes_per_line_mean']:.1f} B, "
              f"{got['bytes_per_line_p99']} B", "")
    table.add("free plan (5 MB / 5 min) in trades/s", f"{got['free_plan_trades_per_s']:.0f}",
              "5,000,000 / 300 / mean bytes per line")
    for level, figures in got["gzip"].items():
        table.add(f"gzip level {level}{' (influxdb-client)' if level == CLIENT_LEVEL else ''}",
                  f"{figures['us_per_trade']:.2f} us CPU per trade, ratio "
                  f"{figures['ratio']:.1f}x", f"`gzip.compress` of {BODY_LINES:,}-line bodies")
    sec.notes.append(
        f"{got['lines']:,} lines, CPU time (process_time), median of {RUNS} runs. The quota "
        "counts uncompressed bytes: gzip saves bandwidth only.")
    return sec


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
