"""Section 1: the ceilings around the worker, measured in the same run.

- like for like (backlog.py): websocket-client's receive loop, the same loop with the worker's
  reader, and the worker itself, each draining the same queued backlog; rate and CPU-seconds
  per message side by side;
- the simulator's send rate: one symbol at the largest rate it accepts, read by a raw socket
  that throws the bytes away (so the client never holds the server back);
- the `websockets` asyncio client's receive loop against it (the original design's library);
- InfluxDB's ingest of pre-built 5,000-line bodies, through the test front and directly.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple

from . import backlog
from .probes import finish_probe, run_probe, start_probe
from .procstat import CpuMeter
from .report import Section, pct, rate
from .rig import TOKEN, Profile, Rig

MAX_RATE = "1000000"  # the simulator's largest accepted rate: it generates as fast as it can
# The receive loops fall behind a simulator running flat out; a big send buffer keeps the
# simulator from aborting them during the window (the backlog is dropped when they close).
SEND_BUFFER_MB = "2048"


LABELS = {"plain": "websocket-client receive loop (as the worker calls it)",
          "fast": "the same loop with the worker's 64 KiB reader",
          "worker": "the worker (`python -m workers btcusdt`), stored in InfluxDB"}


def run(rig: Rig, profile: Profile) -> Section:
    sec = Section("ceilings", "1. Ceilings (same run)")
    _like_for_like(rig, profile, sec)
    table = sec.table("ceiling", "rate", "per core of the limiting process",
                      "CPU of the limiting process", "setup", title="Other ceilings")
    sim = rig.sim("--symbol", f"BTCUSDT:rate={MAX_RATE}", "--max-send-buffer-mb", SEND_BUFFER_MB)
    window, warmup = profile.ceiling_s, profile.warmup_s
    try:
        sent, sim_cores = _sim_send_rate(sim.port, sim.process.pid, sim.stats, warmup, window)
        sec.facts["sim_rate"] = sent
        table.add("simulator send rate (1 connection)", rate(sent), _per_core(sent, sim_cores),
                  f"simulator {pct(sim_cores)}",
                  "one symbol flat out; raw-socket reader discards the bytes")
        url = f"{sim.ws_url}/stream?streams=btcusdt@trade"
        meter = CpuMeter([sim.process.pid]).start()
        res = run_probe(["recv-async", "--url", url, "--warmup", str(warmup), "--seconds",
                         str(window)], timeout=warmup + window + 30)
        meter.stop()
        sec.facts["recv_async_rate"] = res["rate"]
        sec.facts["recv_async_rate_per_core"] = res["rate"] / max(0.01, res["cpu_cores"])
        table.add("bare websockets (asyncio) receive loop, flat out", rate(res["rate"]),
                  _per_core(res["rate"], res["cpu_cores"]),
                  f"receiver {pct(res['cpu_cores'])} (simulator {pct(meter.cores())})",
                  "websockets 17 `await recv()`, compression off, one process, against the "
                  "simulator generating flat out (the original design's library)")
    finally:
        rig.release(sim.stop)
    for via in ("front", "direct"):
        points, cores, errors = _ingest(rig, via, window)
        sec.facts[f"ingest_{via}"] = points
        table.add(f"InfluxDB ingest, 5,000-line bodies, {via}", f"{points:,.0f} points/s", "–",
                  cores, "2 requests in flight, 64 pre-built bodies (320k distinct points, "
                  f"then cycled){'; ' + str(errors) + ' errors' if errors else ''}")
    sec.notes.append(
        "Other ceilings: the simulator's rate is its trade generation and framing on one core "
        "(a Python asyncio process); the asyncio loop ran against it flat out, so its figure "
        "is the client's own limit as long as it stays below the simulator's rate. Per core = "
        "rate ÷ the CPU share the limiting process got (on this 2-core box the simulator, the "
        "receiver and other processes compete).")
    sec.notes.append(
        "Ingest bodies use the service's point model and nanosecond keys; `front` is the test "
        "front (aiohttp, v2 write API -> influxd /write), the path every worker write takes "
        "in sections 2-6. influxd fsyncs its WAL on every write request (default settings).")
    return sec


def _like_for_like(rig: Rig, profile: Profile, sec: Section) -> None:
    n, rounds = profile.backlog_trades, profile.backlog_rounds
    drains = backlog.measure(rig, n, rounds)
    plain, fast, worker = drains["plain"], drains["fast"], drains["worker"]
    facts = backlog.as_facts(drains)
    sec.facts["backlog"] = facts
    # The ramp caps its offered rates at what the library's loop does with a whole core.
    sec.facts["recv_rate"], sec.facts["recv_rate_per_core"] = plain.mid_rate, plain.per_cpu_s
    table = sec.table("reader", "messages", "rate (middle 60 %)", "CPU per message",
                      "messages per CPU-second", "vs the library's loop (per CPU-s)",
                      "vs the fast loop (per CPU-s)", "every trade stored once",
                      title=f"Like for like: {n:,} queued trades drained by each reader "
                            f"(median of {rounds} round{'s' if rounds > 1 else ''})")
    for d in (plain, fast, worker):
        table.add(LABELS[d.reader], f"{d.messages:,}", rate(d.mid_rate),
                  f"{d.us_per_message:.2f} us", f"{d.per_cpu_s:,.0f}",
                  pct(d.per_cpu_s / plain.per_cpu_s), pct(d.per_cpu_s / fast.per_cpu_s),
                  "–" if d.exactly_once is None else ("yes" if d.exactly_once else "**no**"))
    sec.notes.append(
        "Like for like: the simulator generates the trades while the reader does not read (a "
        "probe waits on its stdin, the worker is stopped with SIGSTOP), so they queue in the "
        "simulator's send buffer; then each reader drains them as fast as it can while the "
        "simulator only writes out bytes it has already framed. Rate over the middle 60 % "
        "of the messages (for the worker: of the lines reaching InfluxDB through the front); "
        "CPU = utime+stime of the reader's process over the whole drain, all its threads (for "
        "the worker: parse, checks, sequencing, lines, batches, write requests, status). "
        "The probes call websocket-client as the worker does (`recv_data`, "
        "`enable_multithread`, no socket timeout, `skip_utf8_validation`). Readers "
        "interleaved round by round; medians. Goal: the worker at ≥ 80 % of the library "
        "loop's messages per CPU-second, and as close as possible to the fast loop.")
    if worker.spooled:
        sec.notes.append(
            f"The worker's figure includes its write path under a backlog larger than its "
            f"queue in RAM (WRITE_QUEUE_BATCHES, product default 20 batches of 5,000): "
            f"{worker.spooled:,} of the {worker.messages:,} trades (median) went through its "
            "disk spool (written, fsynced, read back, replayed), so the figure moves with "
            "influxd's and the disk's speed from run to run.")
    if worker.exactly_once is False:
        sec.notes.append(f"**The worker's database did not hold exactly the backlog's ids:** "
                         f"{worker.detail}.")


def _per_core(value: float, cores: float) -> str:
    return f"{value / cores:,.0f}/s" if cores > 0.05 else "–"


def _sim_send_rate(port: int, sim_pid: int, stats: Callable[[], Dict[str, Any]],
                   warmup: float, window: float) -> Tuple[float, float]:
    """Trades/s the simulator wrote to a reader that never holds it back; its CPU share."""
    proc = start_probe(["drain", "--port", str(port), "--seconds", str(warmup + window + 1)])
    try:
        time.sleep(warmup)
        meter = CpuMeter([sim_pid]).start()
        first = stats()["trades_sent"]
        began = time.monotonic()
        time.sleep(window)
        last = stats()["trades_sent"]
        elapsed = time.monotonic() - began
        meter.stop()
    finally:
        finish_probe(proc, timeout=warmup + window + 30)
    return (last - first) / elapsed, meter.cores()


def _ingest(rig: Rig, via: str, window: float) -> Tuple[float, str, int]:
    """Points/s influxd took from the ingest probe; CPU of influxd (and the front); errors."""
    assert rig.server is not None and rig.front is not None
    db = rig.new_db(f"ingest_{via}")
    try:
        if via == "front":
            url = f"{rig.front.url}/api/v2/write?org=bench&bucket={db}&precision=ns"
            token: Optional[str] = TOKEN
        else:
            url = f"{rig.server.url}/write?db={db}&precision=n"
            token = None
        pids = [rig.server.process.pid] + ([rig.front.process.pid] if via == "front" else [])
        meter = CpuMeter(pids).start()
        args = ["ingest", "--url", url, "--seconds", str(window)]
        res = run_probe(args + (["--token", token] if token else []), timeout=window + 60)
        meter.stop()
        # influxd and the front idle while the probe builds its bodies: their CPU belongs to
        # the probe's measuring window.
        seconds = res["seconds"]
        cores = f"influxd {pct(meter.seconds[pids[0]] / seconds)}"
        if via == "front":
            cores += f", front {pct(meter.seconds[pids[1]] / seconds)}"
        return float(res["rate"]), cores, int(res["errors"])
    finally:
        rig.drop_db(db)
