"""Section 6: the whole Binance spot list under the real supervisord, on this box.

Market model (~1,500 pairs, skewed like the exchange): 5 hot pairs at 200/150/100/75/50
trades/s, 50 warm pairs spread geometrically over 1-10/s, and 1,445 quiet pairs at
0.01-0.09/s (mean 0.05). Ten times the typical rate is the same model with every rate x10.

Layout under test (the one we recommend): each hot pair its own worker, the warm pairs in one
group, the quiet tail in groups of at most TAIL_GROUP symbols. supervisord runs from a temp
copy of the repository layout (as tests/integration/test_supervisor.py does), and the
reconciler renders the workers from config/symbols.yaml.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from tests.support.exchange.client import ExchangeSim
from tests.support.procs import REPO_ROOT, ManagedProcess, wait_until
from workers.exchange.stream_plan import plan_connections
from workers.ops.supervisor_rpc import connect

from .procstat import ZERO_MEMORY, CpuMeter, Memory, memory, total_memory
from .report import Section, mb, pct, rate
from .rig import TOKEN, Profile, Rig, open_streams

HOT = (("BTCUSDT", 200.0), ("ETHUSDT", 150.0), ("SOLUSDT", 100.0), ("BNBUSDT", 75.0),
       ("XRPUSDT", 50.0))
WARM = 50
TAIL = 1445
TAIL_GROUP = 750  # under Binance's 1,024 streams per connection, with room to add pairs
RSS_TARGET_MB = 2048.0
START_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 20.0


def market() -> List[Tuple[str, float]]:
    """(symbol, typical trades/s) of the model."""
    warm = [(f"W{i + 1:03d}USDT", round(10 ** (i / (WARM - 1)), 3)) for i in range(WARM)]
    # Spread 0.01..0.09 evenly but not in name order (a fixed stride through 0..98).
    tail = [(f"T{i + 1:04d}USDT", round(0.01 + 0.08 * ((i * 37) % 99) / 98, 4))
            for i in range(TAIL)]
    return list(HOT) + warm + tail


def layout(symbols: List[Tuple[str, float]]) -> Dict[str, List[str]]:
    """worker name -> symbols: hot pairs alone, warm pairs together, the tail in groups."""
    hot = [s for s, _ in HOT]
    rest = [s for s, _ in symbols if s not in hot]
    warm = [s for s in rest if s.startswith("W")]
    tail = [s for s in rest if s.startswith("T")]
    groups = {s.lower(): [s] for s in hot}
    groups["warm"] = warm
    n = -(-len(tail) // TAIL_GROUP)
    size = -(-len(tail) // n)
    for k in range(n):
        groups[f"tail{k + 1}"] = tail[k * size:(k + 1) * size]
    return groups


def symbols_yaml(groups: Dict[str, List[str]]) -> str:
    singles = [syms[0] for name, syms in groups.items() if len(syms) == 1
               and name == syms[0].lower()]
    lines = ["symbols:"] + [f"  - {s}" for s in singles] + ["groups:"]
    lines += [f"  {name}: [{', '.join(syms)}]" for name, syms in groups.items()
              if not (len(syms) == 1 and name == syms[0].lower())]
    return "\n".join(lines) + "\n"


def make_project(root: Path, yaml: str) -> Path:
    """A fresh clone's layout in `root`, as tests/integration/test_supervisor.py builds it."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_ROOT / "supervisor.conf", root / "supervisor.conf")
    shutil.copy2(REPO_ROOT / "supervisord.conf", root / "supervisord.conf",
                 follow_symlinks=False)
    shutil.copytree(REPO_ROOT / "workers", root / "workers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "scripts").mkdir()
    for script in ("status", "apply-symbols"):
        shutil.copy2(REPO_ROOT / "scripts" / script, root / "scripts" / script)
    (root / ".venv").symlink_to(Path(sys.prefix))
    (root / "config").mkdir()
    (root / "config" / "symbols.yaml").write_text(yaml)
    (root / "run").mkdir()
    (root / "logs").mkdir()
    return root


@dataclass
class Window:
    label: str
    offered: float  # trades/s generated over the window
    service_cores: float
    worker_cores: Dict[str, float]
    sim_cores: float
    influx_cores: float  # influxd + front
    memory: Memory
    per_process: Dict[str, Memory]
    processes: int


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("scale", "6. Scale: the whole spot list under supervisord")
    model = market()
    groups = layout(model)
    typical = sum(r for _, r in model)
    sim = rig.sim("--max-send-buffer-mb", "256",
                  *[a for s, r in model for a in ("--symbol", f"{s}:rate={r:g}")])
    db = rig.new_db("scale")
    root = make_project(rig.root / "project", symbols_yaml(groups))
    sup = ManagedProcess("supervisord", [str(root / ".venv/bin/supervisord"), "-c",
                                         "supervisor.conf", "-n"], root / "supervisord.out",
                         env=_env(root, rig, sim, db), cwd=root)
    pids: Dict[str, int] = {}
    killed: List[str] = []
    try:
        sup.start()
        rig.on_close("supervisord", sup.stop)
        started = time.monotonic()
        _wait_running(root, list(groups), sim, groups)
        start_s = time.monotonic() - started
        pids = {i["name"]: i["pid"] for i in _infos(root)}
        pids["supervisord"] = sup.pid
        time.sleep(3.0)  # first status writes, health points, checkpoint files
        windows = [_window(rig, sim, pids, "typical", profile.scale_s)]
        _set_rates(sim, model, 10.0)
        time.sleep(3.0)
        windows.append(_window(rig, sim, pids, "10× typical", profile.scale_s))
        check = _zero_loss(rig, sim, db)
    finally:
        if sup.alive():
            rig.release(sup.stop)
        killed = _reap(pids, root)
        rig.release(sim.stop)
        rig.drop_db(db)
    _report(sec, groups, windows, typical, start_s, check, killed, sim)
    _alternatives(sec, groups, windows[0], facts)
    return sec


def _env(root: Path, rig: Rig, sim: ExchangeSim, db: str) -> Dict[str, str]:
    assert rig.front is not None
    drop = ("SUPERVISOR_", "INFLUXDB_", "BINANCE_", "WRITE_", "STREAM_", "DATA_DIR", "RUN_DIR")
    base = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**base, "PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{base.get('PATH', '')}",
            "INFLUXDB_URL": rig.front.url, "INFLUXDB_TOKEN": TOKEN, "INFLUXDB_ORG": "bench",
            "INFLUXDB_BUCKET": db, "BINANCE_WS_URL": sim.ws_url,
            "BINANCE_REST_URL": sim.rest_url, "DATA_DIR": str(root / "data"),
            "RUN_DIR": str(root / "run")}


def _infos(root: Path) -> List[Dict[str, Any]]:
    # A fresh proxy per call: a transport whose first call found no socket stays broken.
    infos: List[Dict[str, Any]] = connect(f"unix://{root}/run/supervisor.sock") \
        .supervisor.getAllProcessInfo()
    return infos


def _wait_running(root: Path, names: List[str], sim: ExchangeSim,
                  groups: Dict[str, List[str]]) -> None:
    def running() -> bool:
        states = {i["name"]: i["statename"] for i in _infos(root)}
        return all(states.get(n) == "RUNNING" for n in names + ["reconciler"])
    wait_until(running, START_TIMEOUT_S, 0.5, what="every worker RUNNING under supervisord")
    wanted = sorted(len(s) for s in groups.values())
    wait_until(lambda: sorted(open_streams(sim)) == wanted, START_TIMEOUT_S, 0.5,
               what=f"{len(wanted)} connections with {wanted} streams")


def _window(rig: Rig, sim: ExchangeSim, pids: Dict[str, int], label: str,
            seconds: float) -> Window:
    assert rig.server is not None and rig.front is not None
    extra = {"sim": sim.process.pid, "influxd": rig.server.process.pid,
             "front": rig.front.process.pid}
    meter = CpuMeter(list(pids.values()) + list(extra.values())).start()
    generated0 = _generated(sim)
    time.sleep(seconds)
    generated1 = _generated(sim)
    meter.stop()
    per = {n: m for n, m in ((n, memory(p)) for n, p in pids.items()) if m is not None}
    mem = total_memory(pids.values())
    service = sum(meter.cores(p) for p in pids.values())
    return Window(label, (generated1 - generated0) / meter.elapsed, service,
                  {n: meter.cores(p) for n, p in pids.items()}, meter.cores(extra["sim"]),
                  meter.cores(extra["influxd"]) + meter.cores(extra["front"]), mem, per,
                  len(pids))


def _generated(sim: ExchangeSim) -> int:
    return sum(int(s.get("generated", 0)) for s in sim.stats().get("symbols", {}).values())


def _set_rates(sim: ExchangeSim, model: List[Tuple[str, float]], factor: float) -> None:
    for symbol, r in model:
        sim.fault("set_rate", symbol=symbol, rate=r * factor)


def _zero_loss(rig: Rig, sim: ExchangeSim, db: str) -> Dict[str, Any]:
    """Pause, let the workers flush, then per symbol: stored ids have no hole and end at the
    ledger's last id (a worker without a checkpoint starts at the live stream, so ids before
    its first stored one were never its to store)."""
    sim.fault("pause")
    last_total, stable_since = -1, time.monotonic()
    began = time.monotonic()
    while time.monotonic() - began < DRAIN_TIMEOUT_S:
        total = rig.count(db)
        if total != last_total:
            last_total, stable_since = total, time.monotonic()
        elif time.monotonic() - stable_since >= 3.0:  # three flush intervals without change
            break
        time.sleep(0.5)
    rows = rig.query(db, "SELECT count(trade_id), count(distinct(trade_id)) AS ids, "
                         "min(trade_id), max(trade_id) FROM price_ticks GROUP BY symbol")
    stored = {row["symbol"]: row for row in rows}
    ledger = sim.ledger()
    bad: List[str] = []
    traded = [sym for sym, entry in ledger.items() if entry.get("last") is not None]
    for sym in traded:  # every symbol that traded, not only those with stored rows
        last = ledger[sym]["last"]
        row = stored.get(sym)
        if row is None:
            bad.append(f"{sym}: nothing stored, ledger last {last}")
            continue
        count, ids, lo, hi = (int(row["count"]), int(row["ids"]), int(row["min"]),
                              int(row["max"]))
        if not count == ids == hi - lo + 1 or hi != last:
            bad.append(f"{sym}: {count} points, {ids} distinct ids in {lo}..{hi}, "
                       f"ledger last {last}")
    return {"symbols": len(traded), "stored": last_total, "bad": bad}


def _reap(pids: Dict[str, int], root: Path) -> List[str]:
    """After supervisord stopped: any of its processes still alive is killed by its own pid
    (only if the pid still runs from our temp project, never a reused pid of someone else)."""
    killed = []
    for name, pid in pids.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{name} ({pid})")
    return killed


def _report(sec: Section, groups: Dict[str, List[str]], windows: List[Window], typical: float,
            start_s: float, check: Dict[str, Any], killed: List[str],
            sim: ExchangeSim) -> None:
    table = sec.table("rate", "offered", "processes", "total RSS", "total PSS", "total USS",
                      "service CPU", "largest worker CPU", "simulator CPU",
                      "influxd + front CPU")
    for w in windows:
        workers = {n: c for n, c in w.worker_cores.items()
                   if n not in ("supervisord", "reconciler")}
        top = max(workers, key=lambda n: workers[n])
        table.add(w.label, rate(w.offered), str(w.processes), mb(w.memory.rss_mb),
                  mb(w.memory.pss_mb), mb(w.memory.uss_mb), f"{w.service_cores:.2f} cores",
                  f"{top} {pct(workers[top])}", pct(w.sim_cores), pct(w.influx_cores))
    sec.facts["scale"] = {
        "workers": len(groups), "pairs": sum(len(s) for s in groups.values()),
        "processes": windows[0].processes,
        "rss_mb": windows[0].memory.rss_mb, "pss_mb": windows[0].memory.pss_mb,
        "rss_mb_10x": windows[-1].memory.rss_mb, "cores_typical": windows[0].service_cores,
        "cores_10x": windows[-1].service_cores, "offered_typical": windows[0].offered,
        "zero_loss": not check["bad"]}
    lay = sec.table("worker", "symbols", "connections: URL + SUBSCRIBE", "CPU typical",
                    "CPU 10×", title="Layout (config/symbols.yaml of the run)")
    for name, syms in groups.items():
        plans = plan_connections(sim.ws_url, syms)
        shape = ", ".join(f"{len(p.url):,} chars + {len(p.subscribe)}" for p in plans)
        lay.add(name, str(len(syms)), shape, pct(windows[0].worker_cores[name]),
                pct(windows[-1].worker_cores[name]))
    for name in ("reconciler", "supervisord"):
        lay.add(name, "–", "–", pct(windows[0].worker_cores[name]),
                pct(windows[-1].worker_cores[name]))
    sec.notes += [
        f"Model: {len(HOT)} hot pairs at 200/150/100/75/50 trades/s, {WARM} warm pairs spread "
        f"geometrically over 1-10/s, {TAIL} quiet pairs at 0.01-0.09/s (mean 0.05): "
        f"{len(HOT) + WARM + TAIL} pairs, {typical:,.0f} trades/s typical; 10× = every rate "
        "times ten.",
        f"Processes = supervisord + reconciler + {len(groups)} workers. Service CPU = their "
        "utime+stime over the window ÷ window (1.00 = one core). The simulator, influxd and "
        "the front share the box but are not the service. RSS summed over processes counts "
        "shared libraries once per process (an upper bound); PSS is the fair total.",
        f"All workers RUNNING and connected {start_s:.0f} s after supervisord started "
        "(reconciler render + symbol checks + start-up).",
        f"Zero-loss check after pausing the simulator: {check['symbols']} symbols that traded; "
        "per symbol the stored ids are distinct, have no hole and end at the ledger's last id: "
        + ("all equal." if not check["bad"] else
           f"**{len(check['bad'])} differ**: {'; '.join(check['bad'][:5])}"),
        "Each group's connection URL holds what fits in 7,000 characters and the rest is "
        "subscribed by SUBSCRIBE (the simulator refuses URLs over 8,000 characters, as "
        "Binance does).",
    ]
    if killed:
        sec.notes.append(f"Still running after supervisord stopped, killed by pid: "
                         f"{', '.join(killed)}.")


def _alternatives(sec: Section, groups: Dict[str, List[str]], typical: Window,
                  facts: Dict[str, Any]) -> None:
    """Other layouts, estimated from this run's per-process figures (not measured)."""
    per = typical.per_process
    singles = [per[n] for n, syms in groups.items() if len(syms) == 1 and n in per]
    tails = [per[n] for n in groups if n.startswith("tail") and n in per]
    if not singles or not tails:
        return
    one = min(singles, key=lambda m: m.rss_mb)  # a quiet single-symbol worker
    group = max(tails, key=lambda m: m.rss_mb)
    base = sum((per[n] for n in ("supervisord", "reconciler") if n in per), ZERO_MEMORY)
    idle_cpu = (facts.get("idle") or {}).get("cpu_cores")
    active = len(HOT) + WARM
    table = sec.table("layout", "workers", "est. total RSS", "est. total USS",
                      "idle CPU floor", title="Other layouts, estimated from the per-process "
                                              "figures above (not measured)")
    for label, n_single, n_group in (
            ("measured: hot alone, warm in 1 group, tail in groups of ≤ 750", len(singles),
             len(groups) - len(singles)),
            ("hot alone, all the rest in groups of ≤ 1,000", len(HOT),
             -(-(WARM + TAIL) // 1000)),
            ("every active pair alone (55), tail in groups of ≤ 750", active,
             -(-TAIL // TAIL_GROUP)),
            ("every pair its own worker", len(HOT) + WARM + TAIL, 0)):
        rss = base.rss_mb + n_single * one.rss_mb + n_group * group.rss_mb
        uss = base.uss_mb + n_single * one.uss_mb + n_group * group.uss_mb
        floor = f"{(n_single + n_group) * idle_cpu:.2f} cores" if idle_cpu is not None else "–"
        table.add(label, f"{n_single + n_group:,}", mb(rss), mb(uss), floor)
    sec.notes.append(
        f"Estimates: a single-symbol worker at {mb(one.rss_mb)} RSS / {mb(one.uss_mb)} USS and "
        f"a tail group at {mb(group.rss_mb)} / {mb(group.uss_mb)} (this run), plus supervisord "
        "and the reconciler; idle CPU floor = workers × the idle worker's CPU from section 5 "
        "(the fixed cost before any trade).")
