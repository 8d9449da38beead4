"""Section 2: one real worker, one symbol, a ramp of offered load.

Each step gets a fresh database and a fresh worker (`python -m workers btcusdt`, product
defaults: flush 1 s, batches of 5,000, writes through the test front). The simulator is paused
between steps, so a step's trades are exactly the ledger ids generated between `resume` and
`pause`. A step passes when, after the offer stops, every one of those ids is stored once
(stored id set == ledger id set) and the last one is stored within flush interval + 1 s
(the worker kept up; a worker that fell behind drains a backlog for longer).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from tests.support.exchange.client import ExchangeSim

from .procstat import CpuMeter, cpu_seconds, memory
from .report import Section, mb, pct, rate
from .rig import Profile, Rig, ledger_last

SYMBOL = "BTCUSDT"
YAML = "symbols:\n  - BTCUSDT\n"
FLUSH_S = 1.0  # the worker's WRITE_FLUSH_INTERVAL_MS (product default), set by Rig.worker_env
KEPT_UP_S = FLUSH_S + 1.0  # stop -> last id stored; more means a backlog was being drained
SEND_BUFFER_MB = "512"  # a worker that falls behind is not aborted by the simulator mid-step
FAILURES_TO_STOP = 2  # consecutive failed steps end the ramp


@dataclass
class Step:
    offered: int  # the rate asked of the simulator
    generated: int  # trades of the step (ledger)
    window_s: float
    stored: int
    drain_s: float
    missing: int
    extra: int
    duplicates: int
    cpu_s: float
    rig_cores: float  # simulator + influxd + front over the window
    rss_max_mb: Optional[float]
    lag_at_stop_s: float  # trades not yet stored at the stop, in seconds of offer
    reconnects: int

    @property
    def offered_rate(self) -> float:
        return self.generated / self.window_s

    @property
    def zero_loss(self) -> bool:
        return self.missing == 0 and self.extra == 0 and self.duplicates == 0

    @property
    def kept_up(self) -> bool:
        return self.zero_loss and self.drain_s <= KEPT_UP_S and self.reconnects == 0

    @property
    def stored_rate(self) -> float:
        """Trades of the window that were stored (in the end), per second of the window."""
        return self.stored / self.window_s

    @property
    def cpu_cores(self) -> float:
        return self.cpu_s / self.window_s

    def as_fact(self) -> Dict[str, Any]:
        return {"offered": self.offered, "offered_rate": self.offered_rate,
                "stored_rate": self.stored_rate, "stored": self.stored,
                "window_s": self.window_s, "drain_s": self.drain_s, "kept_up": self.kept_up,
                "zero_loss": self.zero_loss, "cpu_cores": self.cpu_cores,
                "rss_max_mb": self.rss_max_mb}


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("ramp", "2. One worker, one symbol: ramp of offered load")
    table = sec.table("offered", "stored", "stop → last id stored",
                      "ledger check", "worker CPU", "CPU per 1,000 trades/s",
                      "simulator + influxd + front CPU", "RSS max", "verdict")
    ceiling = facts.get("recv_rate")
    # Cap at what the bare loop does with a whole core: a contended ceiling run reads low.
    cap = facts.get("recv_rate_per_core") or ceiling
    rates = [r for r in profile.ramp_rates if cap is None or r <= cap]
    sim = rig.sim("--symbol", f"{SYMBOL}:rate=1000", "--fault", '{"action": "pause"}',
                  "--max-send-buffer-mb", SEND_BUFFER_MB)
    steps: List[Step] = []
    failures = 0
    began = time.monotonic()
    try:
        for offered in rates:
            if time.monotonic() - began > profile.ramp_budget_s:
                sec.notes.append(f"Stopped before {offered:,}/s: the ramp's time budget "
                                 f"({profile.ramp_budget_s:.0f} s) was spent.")
                break
            step = _step(rig, sim, offered, profile.ramp_step_s)
            steps.append(step)
            table.add(rate(step.offered_rate), rate(step.stored_rate), f"{step.drain_s:.1f} s",
                      _check(step), pct(step.cpu_cores),
                      pct(step.cpu_cores / (step.offered_rate / 1000), 1),
                      pct(step.rig_cores), mb(step.rss_max_mb), _verdict(step))
            failures = 0 if step.kept_up else failures + 1
            if failures >= FAILURES_TO_STOP:
                break
    finally:
        rig.release(sim.stop)
    passed = [s for s in steps if s.kept_up]
    best = max(passed, key=lambda s: s.offered_rate) if passed else None
    sec.facts["ramp_steps"] = [s.as_fact() for s in steps]
    if best is not None:
        sec.facts["ramp_best_rate"] = best.offered_rate
        sec.facts["ramp_best_cpu_per_k"] = best.cpu_cores / (best.offered_rate / 1000)
        low = min(passed, key=lambda s: s.offered_rate)
        share = f"{best.offered_rate / ceiling * 100:.0f} % of {rate(ceiling)}" if ceiling \
            else "–"
        per_core = best.offered_rate / max(0.01, best.cpu_cores)
        sec.facts["ramp_best_per_core"] = per_core
        ceiling_core = facts.get("recv_rate_per_core")
        summary = sec.table("result", "value")
        summary.add("highest rate stored with zero loss (and kept up)",
                    rate(best.offered_rate))
        summary.add("its share of the library loop's drain rate (section 1; that loop read a "
                    "queued backlog, this is a live offer)", share)
        summary.add("worker CPU at that rate", pct(best.cpu_cores))
        summary.add("per core of the worker (rate ÷ its CPU share) vs the library loop's "
                    "messages per CPU-second (section 1)",
                    f"{rate(per_core)} vs {rate(ceiling_core)} = "
                    f"{per_core / ceiling_core * 100:.0f} %" if ceiling_core else rate(per_core))
        summary.add(f"CPU per 1,000 trades/s at {low.offered_rate:,.0f}/s",
                    pct(low.cpu_cores / (low.offered_rate / 1000), 1))
    sec.notes += [
        "Worker: `python -m workers btcusdt`, a real process, product defaults (flush 1 s, "
        "batches of 5,000); **its writes go through the test front** (aiohttp, v2 write API "
        "-> influxd /write), as in sections 3-6.",
        f"Each step: fresh database, fresh worker, simulator resumed for "
        f"{profile.ramp_step_s:.0f} s then paused. Ledger check: the stored trade-id set "
        "equals the simulator's ledger ids of the step (missing / unexpected / duplicate "
        f"points). Kept up: the last id stored within {KEPT_UP_S:.0f} s of the stop "
        "(flush interval + 1 s); longer means the worker was draining a backlog.",
        "Offered = the step's ledger ids ÷ window; stored = those of them stored ÷ window "
        "(so equal when nothing is lost).",
        "CPU: utime+stime of the worker from /proc/PID/stat over the offered window, as a "
        "share of one core; per 1,000 trades/s = that share ÷ (offered rate / 1,000). The "
        "simulator, influxd and the front run on the same 2 cores (their CPU is shown): near "
        "the top of the ramp the worker competes with them for CPU.",
        f"The ramp stops after {FAILURES_TO_STOP} failed steps in a row and never goes above "
        "the library loop's messages per CPU-second (section 1's like-for-like drain).",
    ]
    return sec


def _step(rig: Rig, sim: ExchangeSim, offered: int, window: float) -> Step:
    assert rig.server is not None and rig.front is not None
    db = rig.new_db(f"ramp_{offered}")
    sim.fault("set_rate", symbol=SYMBOL, rate=offered)
    before = ledger_last(sim, SYMBOL)
    worker = rig.worker("btcusdt", YAML, sim, db)
    try:
        assert worker.proc is not None
        pid = worker.proc.pid
        time.sleep(0.5)  # past the start-up work (symbol check, first status write)
        others = CpuMeter([sim.process.pid, rig.server.process.pid,
                           rig.front.process.pid]).start()
        cpu0 = cpu_seconds(pid) or 0.0
        t0 = time.monotonic()
        sim.fault("resume")
        rss_max = 0.0
        while time.monotonic() - t0 < window:
            time.sleep(0.5)
            mem = memory(pid)
            if mem is not None:
                rss_max = max(rss_max, mem.rss_mb)
        sim.fault("pause")
        t1 = time.monotonic()
        cpu1 = cpu_seconds(pid) or cpu0
        others.stop()
        last = ledger_last(sim, SYMBOL)
        first = (before + 1) if before is not None else _ledger_first(sim)
        generated = (last - first + 1) if last is not None and first is not None else 0
        stored_at_stop = rig.count(db)
        drain = _wait_stored(rig, db, generated, t1, timeout=max(15.0, 1.5 * window))
        ids = rig.stored_ids(db, SYMBOL)
        expected = set(range(first, last + 1)) \
            if generated and first is not None and last is not None else set()
        got = set(ids)
        reconnects = int(worker.status().get("reconnects") or 0)
        return Step(offered, generated, t1 - t0, len(got & expected), drain,
                    len(expected - got), len(got - expected), len(ids) - len(got),
                    cpu1 - cpu0, others.cores(), rss_max or None,
                    (generated - stored_at_stop) / max(1.0, generated / (t1 - t0)),
                    reconnects)
    finally:
        rig.release(worker.stop)
        rig.drop_db(db)


def _ledger_first(sim: ExchangeSim) -> Optional[int]:
    entry = sim.ledger().get(SYMBOL)
    return None if not entry else entry.get("first")


def _wait_stored(rig: Rig, db: str, expected: int, stopped: float, timeout: float) -> float:
    """Seconds from the stop until `expected` points are stored (the timeout if never)."""
    while time.monotonic() - stopped < timeout:
        if rig.count(db) >= expected:
            return time.monotonic() - stopped
        time.sleep(0.1)
    return time.monotonic() - stopped


def _check(step: Step) -> str:
    if step.zero_loss:
        return f"equal ({step.stored:,} ids)"
    return (f"{step.missing:,} missing, {step.extra:,} unexpected, {step.duplicates:,} "
            "duplicate points")


def _verdict(step: Step) -> str:
    if step.kept_up:
        return "zero loss, kept up"
    if step.reconnects:
        return f"{step.reconnects} reconnect(s)" + ("" if step.zero_loss else ", LOSS")
    if step.zero_loss:
        return f"zero loss but behind (lag {step.lag_at_stop_s:.1f} s at stop)"
    return "LOSS (not all stored in time)"
