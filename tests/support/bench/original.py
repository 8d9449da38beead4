"""Section 3: the original design (original_app.py) at the ramp's offered loads.

Each load: fresh database, the app connected, the simulator resumed for a window and paused,
and the app stopped at once. The simulator runs with its default send buffer (64 MB, as
`--max-send-buffer-mb` leaves it): like the exchange, it drops a client that falls that far
behind, and the app, like the public scripts, sleeps a moment and connects again, without
backfill. So the app reads at most ~64 MB (plus the kernel's socket buffers) of backlog, and
whatever was queued for a dropped connection is lost with it.

Two rates are reported apart: writes/s (write requests the app completed) and distinct points
stored/s (what the database holds: trades of the same millisecond share a key and overwrite each
other). Every trade offered in the window that is not a distinct point is lost, either never
written (the app fell behind, or the trade was queued for a dropped connection or traded
while reconnecting) or written over by a later trade of the same millisecond.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.config import SimConfig
from tests.support.procs import ManagedProcess, python_argv

from .procstat import cpu_seconds
from .report import Section, pct, rate
from .rig import Profile, Rig, ledger_last, wait_connected

SYMBOL = "BTCUSDT"
# The simulator's own default, on purpose: no --max-send-buffer-mb (see the module docstring).
SEND_BUFFER_MB = SimConfig().max_send_buffer / (1024 * 1024)
# Closes the exchange decides on for a client that does not keep up (the others: our stop).
DROP_CAUSES = ("slow_client", "pong_timeout")
RECONNECT_S = 1.0  # original_app's sleep before connecting again
DEFAULT_LOADS = (100, 1_000, 10_000)


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("original", "3. The original design at the same offered loads")
    table = sec.table("offered", "original: writes/s", "original: distinct stored/s", "lost",
                      "of which never written", "of which same-ms overwrites",
                      "dropped by the exchange", "reconnects",
                      "exchange's queue for it at the stop", "original CPU", "ours: stored/s",
                      "ours ÷ original distinct")
    ours = {s["offered"]: s for s in facts.get("ramp_steps", [])}
    loads = sorted(ours) or list(DEFAULT_LOADS)
    sim = rig.sim("--symbol", f"{SYMBOL}:rate=1000", "--fault", '{"action": "pause"}')
    results: List[Dict[str, Any]] = []
    began = time.monotonic()
    try:
        for offered in loads:
            if time.monotonic() - began > profile.original_budget_s:
                sec.notes.append(f"Stopped before {offered:,}/s: the section's time budget "
                                 f"({profile.original_budget_s:.0f} s) was spent.")
                break
            res = _load(rig, sim, offered, profile.original_s)
            mine = ours.get(offered)
            res["ours"] = mine["stored_rate"] if mine else None
            res["ratio"] = (res["ours"] / res["stored_rate"] if res["ours"] and
                            res["stored_rate"] else None)
            results.append(res)
            table.add(rate(res["offered_rate"]), rate(res["writes_rate"]),
                      rate(res["stored_rate"]), pct(res["lost"], 1),
                      pct(res["never_written"], 1), pct(res["overwritten"], 1),
                      str(res["drops"]), "–" if res["reconnects"] is None
                      else str(res["reconnects"]), _queue(res),
                      pct(res["cpu_cores"]), rate(res["ours"]),
                      f"{res['ratio']:,.0f}×" if res["ratio"] else "–")
    finally:
        rig.release(sim.stop)
    sec.facts["original"] = results
    sec.notes += [
        "Original design re-created in tests/support/bench/original_app.py, as the public "
        "scripts do it: asyncio `websockets` client, `json.loads`, one `Point` per trade (tag "
        "`symbol`, fields `price`, `price_str`, time T in ms), one SYNCHRONOUS influxdb-client "
        "write per trade on the event loop, through the same front as ours; when the stream "
        f"ends it sleeps {RECONNECT_S:g} s and connects again, without backfill.",
        f"Send buffer: the simulator's default, {SEND_BUFFER_MB:.0f} MB per connection (no "
        "`--max-send-buffer-mb`). An exchange does not queue without bound for a client that "
        "reads slower than the market trades: it drops it, and the simulator does the same "
        "past this size (cause `slow_client`); the kernel's socket buffers (a few MB) come on "
        "top. A dropped client loses everything queued for it, and what trades while it "
        "reconnects. Earlier runs gave the app a 1 GB buffer, which let it read a backlog "
        "oldest first for the whole window; that measured the set-up more than the design.",
        f"Window {profile.original_s:.0f} s per load; the app is stopped at the end of the "
        "window. Writes/s = write requests the app completed ÷ window (its own counter); "
        "distinct stored/s = distinct points in the database ÷ window. Lost = 1 − distinct "
        "points ÷ trades offered; never written = trades offered but not written by the stop "
        "(behind, queued for a dropped connection, or traded while reconnecting); same-ms "
        "overwrites = writes that did not add a point.",
        "Dropped by the exchange: the simulator's closes of the app's connections for "
        f"{' or '.join(DROP_CAUSES)} during the window; reconnects: the app's own count of "
        "connections after the first. A dropped app does not notice at once: it first reads "
        "what its kernel's receive buffer already holds (trades by then seconds old; at ~600 "
        "writes/s, longer than the rest of a 10 s window), so a drop late in the window shows "
        "no reconnect yet. Exchange's queue at the stop: what the simulator still "
        f"held for the open connection when the window ended (dropped past {SEND_BUFFER_MB:.0f} "
        "MB); a window too short to reach it shows no drop although the queue only grows, so "
        "the time from the window's start it would take is given in brackets (an estimate: "
        "the backlog's average growth in the window, the kernel's buffers counted).",
        "Ours: the ramp's stored/s at that load (the window's trades stored ÷ window, with "
        "zero loss and within about a second after the window when it kept up), from section "
        "2; – where the ramp did not run that load. Ours ÷ original distinct compares points "
        "stored, not write requests: ours writes batches of 5,000 lines per request.",
        "The simulator fills bursts (one taker order, several fills with one T), so trades "
        "share milliseconds even at low rates, as on the exchange.",
    ]
    return sec


def _load(rig: Rig, sim: ExchangeSim, offered: int, window: float) -> Dict[str, Any]:
    db = rig.new_db(f"orig_{offered}")
    sim.fault("set_rate", symbol=SYMBOL, rate=offered)
    before = ledger_last(sim, SYMBOL)
    env = dict(rig.worker_env(sim, db))
    env["ORIGINAL_RECONNECT_S"] = f"{RECONNECT_S:g}"
    proc = ManagedProcess(f"original-{offered}",
                          python_argv("-m", "tests.support.bench.original_app",
                                      f"{sim.ws_url}/stream?streams=btcusdt@trade"),
                          rig.root / "original" / f"original-{offered}.log",
                          env={**_base_env(), **env}).start()
    rig.on_close(f"original app {offered}", proc.stop)
    try:
        wait_connected(sim, 1)
        closes0 = _drops(sim.stats())
        cpu0 = cpu_seconds(proc.pid) or 0.0
        t0 = time.monotonic()
        sim.fault("resume")
        time.sleep(window)
        stats = sim.stats()  # before the pause: the queue still as the window left it
        sim.fault("pause")
        elapsed = time.monotonic() - t0
        cpu1 = cpu_seconds(proc.pid) or cpu0
        rig.release(proc.stop)
        counts = _counts(proc)
        written = counts.get("written")
        last = ledger_last(sim, SYMBOL)
        first = (before + 1) if before is not None else sim.ledger()[SYMBOL]["first"]
        generated = last - first + 1 if last is not None else 0
        rows = rig.query(db, "SELECT count(price) FROM price_ticks")
        distinct = int(rows[0]["count"]) if rows else 0
        conn: Dict[str, Any] = max(stats.get("open", []), default={},
                                   key=lambda c: c.get("bytes_sent", 0))
        queued = int(conn.get("send_buffer", 0))
        drops = _drops(stats) - closes0
        return {"offered": offered, "offered_rate": generated / elapsed,
                "writes_rate": written / elapsed if written is not None else None,
                "stored_rate": distinct / elapsed, "distinct": distinct, "written": written,
                "generated": generated, "window_s": elapsed,
                "lost": 1 - distinct / generated if generated else None,
                "never_written": (generated - written) / generated
                if generated and written is not None else None,
                "overwritten": (written - distinct) / generated
                if generated and written is not None else None,
                "drops": drops,
                "reconnects": counts.get("reconnects"), "ended": counts.get("ended", {}),
                "queued_mb": queued / (1024 * 1024), "send_buffer_mb": SEND_BUFFER_MB,
                "drop_eta_s": None if drops else _drop_eta(conn, written, elapsed),
                "cpu_cores": (cpu1 - cpu0) / elapsed}
    finally:
        rig.release(proc.stop)  # a no-op when stopped already
        rig.drop_db(db)


def _drop_eta(conn: Dict[str, Any], written: Optional[int], elapsed: float) -> Optional[float]:
    """Seconds from the window's start until the exchange would drop a connection that was
    not dropped yet, at the window's average growth of what it has sent but the app not read.

    Unread = bytes sent − trades written × bytes per trade; the part of it not in the
    simulator's queue sits in the kernel's socket buffers (and the library's small queue), so
    the queue passes the limit when unread reaches limit + that part."""
    sent, trades = int(conn.get("bytes_sent", 0)), int(conn.get("trades_sent", 0))
    if not trades or written is None:
        return None
    unread = sent - written * sent / trades
    growth = unread / elapsed
    if growth <= 0 or conn.get("send_buffer", 0) < 1024 * 1024:
        return None  # keeping up, or too little queued to tell
    buffered_elsewhere = max(0.0, unread - conn["send_buffer"])
    return (SEND_BUFFER_MB * 1024 * 1024 + buffered_elsewhere) / growth


def _queue(res: Dict[str, Any]) -> str:
    text = f"{res['queued_mb']:.1f} MB"
    if res["drop_eta_s"] is not None:
        text += f" ({SEND_BUFFER_MB:.0f} MB after ~{res['drop_eta_s']:,.0f} s)"
    return text


def _drops(stats: Dict[str, Any]) -> int:
    closes = stats.get("closes", {})
    return sum(int(closes.get(cause, 0)) for cause in DROP_CAUSES)


def _counts(proc: ManagedProcess) -> Dict[str, Any]:
    """The app's JSON line (written, connections, reconnects, ended), {} when missing."""
    for line in reversed(proc.output().splitlines()):
        if line.startswith("{"):
            try:
                out = json.loads(line)
                out["written"] = int(out["written"])
                return dict(out)
            except (ValueError, KeyError, TypeError):
                return {}
    return {}


def _base_env() -> Dict[str, str]:
    scrub = ("INFLUXDB_URL", "INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET")
    return {k: v for k, v in os.environ.items() if k not in scrub}
