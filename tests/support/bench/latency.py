"""Section 4: latency from trade time to stored, measured from outside the worker.

Method: the simulator stamps every trade with its trade time T (wall clock, ms) when it makes
it. While the worker runs, a poller asks influxd directly every ~20 ms for the highest trade id
stored (`SELECT max(trade_id) ... WHERE time >= <newest seen>`, so each query only scans new
points). The worker writes its batches in order from one thread, so when id N becomes visible
every id up to N is visible too: each newly visible id gets, as its "stored" time, the middle
between the last poll that did not see it and the first that did. Latency = stored time − T,
for every trade of the window; the error is about ± half a poll interval (reported).
The worker's own view (lag_p50/p99 in run/status/<worker>.json) is collected alongside.
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from tests.support.exchange.client import ExchangeSim
from tests.support.workerproc import WorkerProcess

from .report import Section, ms, rate
from .rig import Influx, Profile, Rig, ledger_last, trade_times

SYMBOL = "BTCUSDT"
YAML = "symbols:\n  - BTCUSDT\n"
POLL_S = 0.02
FLUSH_MS = 1000.0
TARGET_MS = FLUSH_MS + 100.0  # the target for p99 at 1,000 trades/s
DRAIN_S = 10.0


class VisibilityPoller(threading.Thread):
    """Records (time the id became visible, highest visible id) whenever the highest id grows."""

    def __init__(self, influx: Influx, db: str, deadline_s: float) -> None:
        super().__init__(name="visibility-poller", daemon=True)
        self.influx = influx
        self.db = db
        self.deadline = time.monotonic() + deadline_s
        self.events: List[Tuple[float, int]] = []
        self.rtts: List[float] = []
        self.best = -1
        self.error = ""
        self.stopping = threading.Event()

    def run(self) -> None:
        newest_ns = 0
        previous = time.time()  # when the last poll that did not see the new ids ran
        try:
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                sent = time.time()
                rows = self.influx.query(f"SELECT max(trade_id) FROM price_ticks WHERE "
                                         f"time >= {newest_ns}", self.db)
                answered = time.time()
                self.rtts.append(answered - sent)
                now = (sent + answered) / 2  # when influxd evaluated this query, about
                if rows and rows[0]["max"] is not None and int(rows[0]["max"]) > self.best:
                    self.best = int(rows[0]["max"])
                    newest_ns = int(rows[0]["time"])
                    # The ids became visible between the previous poll and this one.
                    self.events.append(((previous + now) / 2, self.best))
                previous = now
                time.sleep(max(0.0, POLL_S - (answered - sent)))
        except Exception as exc:  # reported with the section, never hangs the run
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.influx.close()


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("latency", "4. Latency: trade time → stored")
    table = sec.table("offered", "trades measured", "p50", "p99", "max",
                      "worker's own lag p50 / p99", "poll round trip p50 / p99",
                      "ledger check")
    sim = rig.sim("--symbol", f"{SYMBOL}:rate=100", "--fault", '{"action": "pause"}')
    results: Dict[int, Dict[str, Any]] = {}
    try:
        for offered in profile.latency_rates:
            res = _measure(rig, sim, offered, profile.latency_s)
            results[offered] = res
            table.add(rate(res["offered_rate"]), f"{res['n']:,}", ms(res["p50"]),
                      ms(res["p99"]), ms(res["max"]),
                      f"{ms(res['own_p50'])} / {ms(res['own_p99'])}",
                      f"{res['rtt_p50'] * 1000:.1f} / {res['rtt_p99'] * 1000:.1f} ms",
                      res["check"])
    finally:
        rig.release(sim.stop)
    sec.facts["latency"] = {str(k): v for k, v in results.items()}
    sec.notes += [
        "Method: the simulator's trade time T (wall clock, same box) vs the moment the trade "
        f"became visible in influxd, found by polling `max(trade_id)` every {POLL_S * 1000:.0f} "
        "ms on a keep-alive connection straight to influxd (not through the front). The worker "
        "writes batches in order from one thread, so id N visible means all ids up to N are. "
        "A trade's stored time is the middle between the last poll that did not see it and "
        "the first that did, so each figure is within about ± half a poll interval (10 ms) "
        "plus the round trip shown. Every trade of the window counts once.",
        "Worker: product defaults (WRITE_FLUSH_INTERVAL_MS=1000, batches of 5,000), writes "
        f"through the front. Target: p99 ≤ flush interval + 100 ms = {TARGET_MS:,.0f} ms at "
        "1,000 trades/s.",
        "Worker's own lag (status file, figures of each 5 s period): per batch, time the batch's "
        "write returned minus the trade time of its *oldest* trade; shown is the median of the "
        "periods' p50 and the largest period p99 in the window. Its p50 is therefore close to "
        "the flush interval, while ours is per trade (a trade waits on average half the flush "
        "interval); both p99 should agree.",
    ]
    return sec


def _measure(rig: Rig, sim: ExchangeSim, offered: int, window: float) -> Dict[str, Any]:
    assert rig.server is not None
    db = rig.new_db(f"lat_{offered}")
    sim.fault("set_rate", symbol=SYMBOL, rate=offered)
    before = ledger_last(sim, SYMBOL)
    worker = rig.worker("btcusdt", YAML, sim, db)
    poller = VisibilityPoller(Influx(rig.server), db, window + DRAIN_S + 30)
    try:
        time.sleep(0.5)
        poller.start()
        t0 = time.monotonic()
        sim.fault("resume")
        own = _watch_status(worker, window)
        sim.fault("pause")
        elapsed = time.monotonic() - t0
        last = ledger_last(sim, SYMBOL)
        first = (before + 1) if before is not None else sim.ledger()[SYMBOL]["first"]
        drain_end = time.monotonic() + DRAIN_S
        while last is not None and poller.best < last and time.monotonic() < drain_end \
                and poller.is_alive():
            time.sleep(0.05)
        poller.stopping.set()
        poller.join(5)
        generated = (last - first + 1) if last is not None else 0
        stored = rig.count(db)
        times = trade_times(sim, SYMBOL, first, last) if generated and last is not None else {}
        lat = _latencies(poller.events, times, first)
    finally:
        poller.stopping.set()
        rig.release(worker.stop)
        rig.drop_db(db)
    lat.sort()
    check = (f"equal ({stored:,})" if stored == generated else
             f"stored {stored:,} of {generated:,}")
    if poller.error:
        check += f"; poller: {poller.error}"
    rtts = sorted(poller.rtts) or [0.0]
    return {"offered": offered, "offered_rate": generated / elapsed, "n": len(lat),
            "p50": _pct(lat, 0.50), "p99": _pct(lat, 0.99), "max": lat[-1] if lat else None,
            "own_p50": statistics.median(own[0]) if own[0] else None,
            "own_p99": max(own[1]) if own[1] else None,
            "rtt_p50": _pct(rtts, 0.5), "rtt_p99": _pct(rtts, 0.99), "check": check,
            "zero_loss": stored == generated}


def _watch_status(worker: WorkerProcess, window: float) -> Tuple[List[float], List[float]]:
    """The worker's lag figures of every status file written during the window."""
    p50s: List[float] = []
    p99s: List[float] = []
    seen = None
    end = time.monotonic() + window
    while time.monotonic() < end:
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
        status = worker.status()
        if status.get("updated") != seen and status.get("lag_p50_ms") is not None:
            seen = status.get("updated")
            p50s.append(float(status["lag_p50_ms"]))
            p99s.append(float(status["lag_p99_ms"]))
    return p50s, p99s


def _latencies(events: List[Tuple[float, int]], times: Dict[int, int],
               first: int) -> List[float]:
    out: List[float] = []
    done = first - 1
    for visible_at, best in events:
        visible_ms = visible_at * 1000.0
        for tid in range(max(done + 1, first), best + 1):
            t = times.get(tid)
            if t is not None:
                out.append(visible_ms - t)
        done = max(done, best)
    return out


def _pct(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]
