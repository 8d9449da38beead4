"""Section 7: a start of many workers at once under the host's connection budget.

Every worker process of a host takes a token from one budget before each connection attempt
(WS_CONNECT_LIMIT, default 200 per 300 s against Binance's 300 per 5 minutes per IP; half of it
may go at once, the rest is spread at limit/window per second). This section starts N real
single-pair workers at the same moment, sharing one run directory as supervisord's workers do,
against a simulator with Binance's limits at their defaults, and measures when each connection
opened (the simulator's view). It is the same moment as a `supervisorctl restart all` once the
budget's window holds no recent attempts; a restart right after a boot waits for the boot's
attempts to leave the window as well.

Full: 200 workers at the default 200/300. Quick: 40 workers at 40/60, the same shape in a fifth
of the time. The workers write line-protocol files (no database): the figure is about
connecting, and 200 InfluxDB writers would only add load.
"""
from __future__ import annotations

import signal
import time
from typing import Any, Dict, List

from tests.support.workerproc import WorkerProcess

from .report import Section
from .rig import Profile, Rig


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("storm", "7. A start of many workers under the connection budget")
    count, limit, window = (200, 200, 300.0) if profile.name == "full" else (40, 40, 60.0)
    burst, rate = limit // 2, limit / window
    symbols = [f"S{i:03d}USDT" for i in range(count)]
    sim = rig.sim(*[a for s in symbols for a in ("--symbol", f"{s}:rate=0.2")])
    run_dir = rig.root / "storm-run"
    env = {**rig.worker_env(sim, None), "RUN_DIR": str(run_dir),
           "WS_CONNECT_LIMIT": f"{limit}/{window:.0f}"}
    workers: List[WorkerProcess] = []
    try:
        started = time.monotonic()
        for symbol in symbols:
            name = symbol.lower()
            proc = WorkerProcess(rig.root / "storm" / name, name, f"symbols: [{symbol}]\n", env)
            workers.append(proc.start("--no-symbol-check"))
        spawned = time.monotonic() - started
        computed = (count - burst) / rate if count > burst else 0.0
        deadline = started + computed + 120.0
        opened: Dict[int, float] = {}
        while time.monotonic() < deadline:
            now = time.monotonic()
            for conn in sim.stats().get("open", []):
                opened.setdefault(conn["id"], now - float(conn["age"]))
            if len(opened) >= count:
                break
            time.sleep(1.0)
        times = sorted(t - started for t in opened.values())
        refusals = sim.stats().get("refusals", {})
    finally:
        for proc in workers:  # SIGTERM to all first, then wait: the stops overlap
            if proc.proc is not None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.stop()
        rig.release(sim.stop)
    table = sec.table("workers", "WS_CONNECT_LIMIT", "all started (spawn)",
                      f"first {burst} connected", "all connected", "computed from the budget",
                      "refused by the exchange")
    last = times[-1] if len(times) >= count else None
    table.add(str(count), f"{limit}/{window:.0f}", f"{spawned:.1f} s",
              f"{times[burst - 1]:.1f} s" if len(times) >= burst else "–",
              f"{last:.1f} s" if last is not None else f"only {len(times)} of {count}",
              f"{computed:.0f} s ({burst} at once, then one every {1 / rate:.1f} s)",
              str(sum(int(v) for v in refusals.values())))
    sec.facts["storm"] = {"workers": count, "limit": limit, "window_s": window,
                          "all_connected_s": last, "computed_s": computed,
                          "burst_connected_s": times[burst - 1] if len(times) >= burst else None,
                          "refusals": refusals}
    sec.notes += [
        "Times are from the moment the first worker process was started; each connection's "
        "opening is read from the simulator (its age). The simulator enforces Binance's limits "
        "at their defaults (300 attempts per 5 minutes per IP, 429 then 418) and counts every "
        "refusal.",
        "A restart right after this start would also wait for these attempts to leave the "
        f"{window:.0f} s window: up to {window:.0f} s more.",
    ]
    return sec
