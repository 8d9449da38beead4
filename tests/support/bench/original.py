"""Section 3: the original design (original_app.py) at the ramp's offered loads.

Each load: fresh database, the app connected, the simulator resumed for a window and paused,
and the app stopped at once. Stored = distinct points in the database; every trade offered in
the window that is not a distinct point is lost, whether it was never written (the app fell
behind) or overwritten by a trade of the same millisecond.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from tests.support.exchange.client import ExchangeSim
from tests.support.procs import ManagedProcess, python_argv

from .procstat import cpu_seconds
from .report import Section, pct, rate
from .rig import Profile, Rig, ledger_last, wait_connected

SYMBOL = "BTCUSDT"
SEND_BUFFER_MB = "1024"  # the app falls far behind: keep the simulator from aborting it
DEFAULT_LOADS = (100, 1_000, 10_000)


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("original", "3. The original design at the same offered loads")
    table = sec.table("offered", "original: stored/s", "lost", "of which never written",
                      "of which same-ms overwrites", "original CPU", "ours: stored/s",
                      "ours ÷ original")
    ours = {s["offered"]: s for s in facts.get("ramp_steps", [])}
    loads = sorted(ours) or list(DEFAULT_LOADS)
    sim = rig.sim("--symbol", f"{SYMBOL}:rate=1000", "--fault", '{"action": "pause"}',
                  "--max-send-buffer-mb", SEND_BUFFER_MB)
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
            results.append(res)
            ratio = (f"{res['ours'] / res['stored_rate']:,.0f}×" if res["ours"] and
                     res["stored_rate"] else "–")
            table.add(rate(res["offered_rate"]), rate(res["stored_rate"]), pct(res["lost"], 1),
                      pct(res["never_written"], 1), pct(res["overwritten"], 1),
                      pct(res["cpu_cores"]), rate(res["ours"]), ratio)
    finally:
        rig.release(sim.stop)
    sec.facts["original"] = results
    sec.notes += [
        "Original design re-created in tests/support/bench/original_app.py: asyncio "
        "`websockets` client, `json.loads`, one `Point` per trade (tag `symbol`, fields "
        "`price`, `price_str`, time T in ms), one SYNCHRONOUS influxdb-client write per trade "
        "on the event loop, through the same front as ours.",
        f"Window {profile.original_s:.0f} s per load; the app is stopped at the end of the "
        "window. Stored/s = distinct points ÷ window. Lost = 1 − distinct points ÷ trades "
        "offered; never written = trades offered but not written by the stop (the app's own "
        "counter); same-ms overwrites = writes that did not add a point.",
        "Ours: the ramp's stored/s at that load (the window's trades stored ÷ window, with "
        "zero loss and within about a second after the window when it kept up), from section "
        "2; – where the ramp did not run that load.",
        "The simulator fills bursts (one taker order, several fills with one T), so trades "
        "share milliseconds even at low rates, as on the exchange.",
    ]
    return sec


def _load(rig: Rig, sim: ExchangeSim, offered: int, window: float) -> Dict[str, Any]:
    db = rig.new_db(f"orig_{offered}")
    sim.fault("set_rate", symbol=SYMBOL, rate=offered)
    before = ledger_last(sim, SYMBOL)
    env = dict(rig.worker_env(sim, db))
    proc = ManagedProcess(f"original-{offered}",
                          python_argv("-m", "tests.support.bench.original_app",
                                      f"{sim.ws_url}/stream?streams=btcusdt@trade"),
                          rig.root / "original" / f"original-{offered}.log",
                          env={**_base_env(), **env}).start()
    rig.on_close(f"original app {offered}", proc.stop)
    try:
        wait_connected(sim, 1)
        cpu0 = cpu_seconds(proc.pid) or 0.0
        t0 = time.monotonic()
        sim.fault("resume")
        time.sleep(window)
        sim.fault("pause")
        elapsed = time.monotonic() - t0
        cpu1 = cpu_seconds(proc.pid) or cpu0
        rig.release(proc.stop)
        written = _written(proc)
        last = ledger_last(sim, SYMBOL)
        first = (before + 1) if before is not None else sim.ledger()[SYMBOL]["first"]
        generated = last - first + 1 if last is not None else 0
        rows = rig.query(db, "SELECT count(price) FROM price_ticks")
        distinct = int(rows[0]["count"]) if rows else 0
        return {"offered": offered, "offered_rate": generated / elapsed,
                "stored_rate": distinct / elapsed, "distinct": distinct, "written": written,
                "generated": generated,
                "lost": 1 - distinct / generated if generated else None,
                "never_written": (generated - written) / generated
                if generated and written is not None else None,
                "overwritten": (written - distinct) / generated
                if generated and written is not None else None,
                "cpu_cores": (cpu1 - cpu0) / elapsed}
    finally:
        rig.release(proc.stop)  # a no-op when stopped already
        rig.drop_db(db)


def _written(proc: ManagedProcess) -> Optional[int]:
    for line in reversed(proc.output().splitlines()):
        if line.startswith("{"):
            try:
                return int(json.loads(line)["written"])
            except (ValueError, KeyError):
                return None
    return None


def _base_env() -> Dict[str, str]:
    scrub = ("INFLUXDB_URL", "INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET")
    return {k: v for k, v in os.environ.items() if k not in scrub}
