"""Section 1: the ceilings around the worker, measured in the same run.

- the simulator's send rate: one symbol at the largest rate it accepts, read by a raw socket
  that throws the bytes away (so the client never holds the server back);
- a bare websocket-client receive loop (`create_connection(skip_utf8_validation=True)` +
  `recv()`), one process: the library's own limit on this box, and the `websockets` asyncio
  client for comparison (the original design's library);
- InfluxDB's ingest of pre-built 5,000-line bodies, through the test front and directly.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple

from .probes import finish_probe, run_probe, start_probe
from .procstat import CpuMeter
from .report import Section, pct, rate
from .rig import TOKEN, Profile, Rig

MAX_RATE = "1000000"  # the simulator's largest accepted rate: it generates as fast as it can
# The receive loops fall behind a simulator running flat out; a big send buffer keeps the
# simulator from aborting them during the window (the backlog is dropped when they close).
SEND_BUFFER_MB = "2048"


def run(rig: Rig, profile: Profile) -> Section:
    sec = Section("ceilings", "1. Ceilings (same run)")
    table = sec.table("ceiling", "rate", "per core of the limiting process",
                      "CPU of the limiting process", "setup")
    sim = rig.sim("--symbol", f"BTCUSDT:rate={MAX_RATE}", "--max-send-buffer-mb", SEND_BUFFER_MB)
    window, warmup = profile.ceiling_s, profile.warmup_s
    try:
        sent, sim_cores = _sim_send_rate(sim.port, sim.process.pid, sim.stats, warmup, window)
        sec.facts["sim_rate"] = sent
        table.add("simulator send rate (1 connection)", rate(sent), _per_core(sent, sim_cores),
                  f"simulator {pct(sim_cores)}",
                  "one symbol flat out; raw-socket reader discards the bytes")
        url = f"{sim.ws_url}/stream?streams=btcusdt@trade"
        for probe, label, key in (("recv", "bare websocket-client receive loop", "recv_rate"),
                                  ("recv-async", "bare websockets (asyncio) receive loop",
                                   "recv_async_rate")):
            meter = CpuMeter([sim.process.pid]).start()
            res = run_probe([probe, "--url", url, "--warmup", str(warmup), "--seconds",
                             str(window)], timeout=warmup + window + 30)
            meter.stop()
            sec.facts[key] = res["rate"]
            sec.facts[f"{key}_per_core"] = res["rate"] / max(0.01, res["cpu_cores"])
            table.add(label, rate(res["rate"]), _per_core(res["rate"], res["cpu_cores"]),
                      f"receiver {pct(res['cpu_cores'])} "
                      f"(simulator {pct(meter.cores())})",
                      "skip_utf8_validation=True, recv() only, one process" if probe == "recv"
                      else "websockets 17 `await recv()`, compression off, one process")
    finally:
        rig.release(sim.stop)
    for via in ("front", "direct"):
        points, cores, errors = _ingest(rig, via, window)
        sec.facts[f"ingest_{via}"] = points
        table.add(f"InfluxDB ingest, 5,000-line bodies, {via}", f"{points:,.0f} points/s", "–",
                  cores, "2 requests in flight, 64 pre-built bodies (320k distinct points, "
                  f"then cycled){'; ' + str(errors) + ' errors' if errors else ''}")
    sec.notes.append(
        "The simulator's rate is its trade generation and framing on one core (it is a "
        "Python asyncio process); the receive loops ran against it flat out, so each "
        "figure is the client's own limit as long as it stays below the simulator's rate.")
    sec.notes.append(
        "Per core = rate ÷ the CPU share the limiting process got: on this 2-core box the "
        "simulator, the receiver and other people's processes compete, so a receiver that got "
        "less than a full core shows a lower rate; per core is the figure to compare with the "
        "worker's (section 2).")
    sec.notes.append(
        "Ingest bodies use the service's point model and nanosecond keys; `front` is the test "
        "front (aiohttp, v2 write API -> influxd /write), the path every worker write takes "
        "in sections 2-6. influxd fsyncs its WAL on every write request (default settings).")
    return sec


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
