"""Section 5: memory of one worker: idle, under load, and as a group of many quiet symbols.

RSS from /proc/PID/status; PSS and USS (Private_Clean + Private_Dirty) from
/proc/PID/smaps_rollup. Every worker writes to InfluxDB through the front (its HTTP client is
set up and used: the worker writes a health point every 10 s even with no trades).
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from workers.exchange.stream_plan import plan_connections

from .procstat import CpuMeter, Memory, memory
from .report import Section, mb
from .rig import Profile, Rig

IDLE_TARGET_MB = 40.0
GROUP_1000_TARGET_MB = 100.0
LOAD_RATE = 10_000
YAML = "symbols:\n  - BTCUSDT\n"


def quiet(n: int) -> list:
    """The simulator's --quiet-symbols names: Q0001USDT, Q0002USDT ..."""
    return [f"Q{i:04d}USDT" for i in range(1, n + 1)]


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("memory", "5. Memory per worker process")
    table = sec.table("worker", "state", "RSS", "PSS", "USS", "target", "verdict")
    sim = rig.sim("--symbol", "BTCUSDT:rate=0", "--quiet-symbols", "1000")
    db = rig.new_db("memory")
    try:
        worker = rig.worker("btcusdt", YAML, sim, db)
        assert worker.proc is not None
        meter = CpuMeter([worker.proc.pid]).start()
        time.sleep(profile.settle_s)
        meter.stop()
        idle = memory(worker.proc.pid)
        _row(table, "btcusdt (1 symbol)", "idle: connected, rate 0", idle, IDLE_TARGET_MB)
        sec.facts["idle"] = {**_fact(idle), "cpu_cores": meter.cores()}
        sim.fault("set_rate", symbol="BTCUSDT", rate=LOAD_RATE)
        peak: Optional[Memory] = None
        end = time.monotonic() + profile.load_s
        while time.monotonic() < end:
            time.sleep(0.5)
            now = memory(worker.proc.pid)
            if now is not None and (peak is None or now.rss_mb > peak.rss_mb):
                peak = now
        sim.fault("set_rate", symbol="BTCUSDT", rate=0)
        _row(table, "btcusdt (1 symbol)", f"under load: {LOAD_RATE:,} trades/s for "
             f"{profile.load_s:.0f} s (peak RSS sample)", peak, None)
        sec.facts["loaded"] = _fact(peak)
        rig.release(worker.stop)
        for n in (100, 1000):
            symbols = quiet(n)
            plans = plan_connections(sim.ws_url, symbols)
            url_len = max(len(p.url) for p in plans)
            subscribes = sum(len(p.subscribe) for p in plans)
            yaml = f"groups:\n  q{n}: [{', '.join(symbols)}]\n"
            try:
                group = rig.worker(f"q{n}", yaml, sim, db, streams=n)
            except RuntimeError as exc:
                table.add(f"q{n} (group of {n} quiet symbols)", "did not connect", "–", "–",
                          "–", mb(GROUP_1000_TARGET_MB) if n == 1000 else "–",
                          f"FAILED: {str(exc)[:300]}")
                sec.facts[f"group_{n}"] = {"error": str(exc)[:500]}
                continue
            assert group.proc is not None
            time.sleep(profile.settle_s)
            mem = memory(group.proc.pid)
            _row(table, f"q{n} (group of {n} quiet symbols)",
                 f"idle: connected and subscribed, URL {url_len:,} chars + {subscribes} "
                 "SUBSCRIBE", mem,
                 GROUP_1000_TARGET_MB if n == 1000 else None)
            sec.facts[f"group_{n}"] = {**_fact(mem), "url_chars": url_len}
            rig.release(group.stop)
    finally:
        rig.release(sim.stop)
        rig.drop_db(db)
    idle_cpu = sec.facts.get("idle", {}).get("cpu_cores")
    sec.notes += [
        f"Each worker ran connected for {profile.settle_s:.0f} s before the reading (one "
        "health-point write to InfluxDB included, so the HTTP client is set up). The idle "
        "single-symbol worker used "
        + (f"{idle_cpu * 100:.2f} % of a core meanwhile (its fixed cost: 10 Hz main loop, "
           "status file, health point)." if idle_cpu is not None else "–"),
        "RSS counts shared pages (libpython, the C extensions) in full; PSS divides them among "
        "the processes sharing them, so it depends on what else runs on the box (other "
        "Python processes of the same interpreter); USS is what stopping this process frees.",
        "No TLS here: the simulator speaks ws:// and http://, so the worker imports ssl (as in "
        "production: urllib3 and websocket-client import it) but builds no TLS context. "
        "Production's wss:// stream and https:// REST add their contexts and sessions on top: "
        "+1.9 MB measured with a TLS terminator in front of the simulator (2026-11-30) while "
        "the stream's context still loaded the whole CA bundle; both contexts now read the "
        "system's CA directory on demand (a context: 0.4 MB instead of 1.6 MB RSS, measured), "
        "so about +0.7 MB now (not re-measured end to end).",
        "Groups: one combined-stream connection per 1,024 symbols; its URL holds the streams "
        "that fit in 7,000 characters and the rest are subscribed with SUBSCRIBE messages, "
        "because the simulator refuses URLs over 8,000 characters, as Binance does.",
    ]
    return sec


def _row(table: Any, who: str, state: str, mem: Optional[Memory],
         target: Optional[float]) -> None:
    if mem is None:
        table.add(who, state, "–", "–", "–", mb(target) if target else "–", "process gone")
        return
    verdict = "–" if target is None else ("met" if mem.rss_mb <= target else "**missed**")
    table.add(who, state, mb(mem.rss_mb), mb(mem.pss_mb), mb(mem.uss_mb),
              f"RSS ≤ {target:.0f} MB" if target else "–", verdict)


def _fact(mem: Optional[Memory]) -> Dict[str, Optional[float]]:
    if mem is None:
        return {"rss_mb": None, "pss_mb": None, "uss_mb": None}
    return {"rss_mb": mem.rss_mb, "pss_mb": mem.pss_mb, "uss_mb": mem.uss_mb}
