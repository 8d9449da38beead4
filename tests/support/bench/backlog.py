"""Like for like: every reader drains the same queued backlog, CPU-seconds per message beside.

The simulator generates `n` trades of one symbol while the reader does not read (a probe waits
on its stdin, the worker is stopped with SIGSTOP), so they queue in the simulator's send buffer;
then the reader drains them as fast as it can while the simulator only writes out bytes it has
already framed. Readers:

- `plain`: websocket-client's receive loop, called as the worker calls it (`recv_data`,
  `enable_multithread`, no socket timeout, `skip_utf8_validation`), nothing else;
- `fast`: the same loop fed by the worker's 64 KiB reader (BufferedReader in
  workers/exchange/connection.py);
- `worker`: `python -m workers btcusdt` (product defaults), counted when the lines reach
  InfluxDB (the test front counts them), every id checked in the database afterwards.

Figures per reader: the rate over the middle 60 % of the messages (start-up and tail left out)
and the reader process's CPU-seconds per message over the whole drain; for the worker that
includes everything it does (parse, checks, sequencing, lines, batches, the write requests).
"""
from __future__ import annotations

import os
import re
import signal
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tests.support.exchange.client import ExchangeSim
from tests.support.procs import wait_until
from tests.support.timing import poll

from .probes import finish_probe, start_probe
from .procstat import cpu_seconds
from .rig import Rig

SYMBOL = "BTCUSDT"
YAML = "symbols:\n  - BTCUSDT\n"
READERS = ("plain", "fast", "worker")
MIDDLE = (0.2, 0.8)
POLL_S = 0.05
DRAIN_TIMEOUT_S = 180.0
STORED_TIMEOUT_S = 60.0  # after the front saw every line: until influxd holds them
# A backlog of n trades is ~190 bytes each in the simulator's send buffer.
SEND_BUFFER_MB = "1024"

Mark = Tuple[int, float, float]  # (messages done, seconds since the start, CPU seconds)


@dataclass
class Drain:
    reader: str
    messages: int
    seconds: float  # the whole drain
    cpu_s: float  # the reader process's CPU over the whole drain
    mid_rate: float  # messages/s over the middle 60 %
    exactly_once: Optional[bool] = None  # the worker: stored ids == the backlog's ids
    detail: str = ""  # what the database held, when it was not exactly the backlog
    # The worker: trades that went through its disk spool because its queue in RAM
    # (WRITE_QUEUE_BATCHES) was full, i.e. written to disk, read back and replayed.
    spooled: Optional[int] = None

    @property
    def per_cpu_s(self) -> float:
        """Messages per CPU-second of the reader."""
        return self.messages / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def us_per_message(self) -> float:
        return self.cpu_s / self.messages * 1e6 if self.messages else 0.0


def middle_rate(marks: Sequence[Mark], total: int) -> float:
    """Messages/s between the marks where 20 % and 80 % of `total` were done."""
    lo = next((m for m in marks if m[0] >= MIDDLE[0] * total), None)
    hi = next((m for m in marks if m[0] >= MIDDLE[1] * total), None)
    if lo is None or hi is None or hi[1] <= lo[1]:
        return 0.0
    return (hi[0] - lo[0]) / (hi[1] - lo[1])


def summary_count(log: str, key: str) -> Optional[int]:
    """`key=N` of the worker's last summary line (it writes one when it stops)."""
    found = re.findall(rf"event=summary .*?\b{key}=(\d+)", log)
    return int(found[-1]) if found else None


def median_drain(runs: List[Drain]) -> Drain:
    """One row per reader: the median of each figure over the rounds."""
    first = runs[0]
    return Drain(first.reader, int(statistics.median(r.messages for r in runs)),
                 statistics.median(r.seconds for r in runs),
                 statistics.median(r.cpu_s / r.messages for r in runs) *
                 int(statistics.median(r.messages for r in runs)),
                 statistics.median(r.mid_rate for r in runs),
                 None if first.exactly_once is None else all(r.exactly_once for r in runs),
                 "; ".join(r.detail for r in runs if r.detail),
                 None if first.spooled is None else
                 int(statistics.median(r.spooled or 0 for r in runs)))


def measure(rig: Rig, n: int, rounds: int) -> Dict[str, Drain]:
    """Each reader `rounds` times (interleaved, so a disturbance hits all alike); medians."""
    sim = rig.sim("--symbol", f"{SYMBOL}:rate=1000000", "--fault", '{"action": "pause"}',
                  "--max-send-buffer-mb", SEND_BUFFER_MB)
    runs: Dict[str, List[Drain]] = {r: [] for r in READERS}
    try:
        for _ in range(rounds):
            for reader in READERS:
                runs[reader].append(_worker(rig, sim, n) if reader == "worker"
                                    else _probe(sim, n, reader == "fast"))
    finally:
        rig.release(sim.stop)
    return {reader: median_drain(r) for reader, r in runs.items()}


def as_facts(drains: Dict[str, Drain]) -> Dict[str, Any]:
    return {reader: {**asdict(d), "per_cpu_s": d.per_cpu_s, "us_per_message": d.us_per_message}
            for reader, d in drains.items()}


def _queue(sim: ExchangeSim, n: int) -> Tuple[int, int]:
    """Generate at least `n` trades while nobody reads; the (first, last) ids generated."""
    def generated() -> int:
        return int((sim.ledger().get(SYMBOL) or {}).get("count") or 0)

    before = generated()
    sim.fault("resume")
    try:
        wait_until(lambda: generated() - before >= n, 60.0, 0.02,
                   what=f"{n:,} trades generated")
    finally:
        sim.fault("pause")
    time.sleep(0.2)  # a generation tick in flight when the pause came
    entry = sim.ledger()[SYMBOL]
    last = int(entry["last"])
    return last - (int(entry["count"]) - before) + 1, last


def _probe(sim: ExchangeSim, n: int, worker_reader: bool) -> Drain:
    args = ["recv-backlog", "--url", f"{sim.ws_url}/stream?streams=btcusdt@trade"]
    proc = start_probe(args + (["--worker-reader"] if worker_reader else []), stdin=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if "ready" not in proc.stdout.readline():
            raise RuntimeError("the receive probe did not connect")
        first, last = _queue(sim, n)
        proc.stdin.write(f"{last - first + 1}\n")
        proc.stdin.flush()
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    res = finish_probe(proc, timeout=DRAIN_TIMEOUT_S)
    marks: List[Mark] = [(int(m[0]), float(m[1]), float(m[2])) for m in res["marks"]]
    total = int(res["messages"])
    return Drain("fast" if worker_reader else "plain", total, marks[-1][1], marks[-1][2],
                 middle_rate(marks, total))


def _worker(rig: Rig, sim: ExchangeSim, n: int) -> Drain:
    assert rig.front is not None
    db = rig.new_db("backlog")
    try:
        proc = rig.worker("btcusdt", YAML, sim, db)
        assert proc.proc is not None
        pid = proc.proc.pid
        time.sleep(0.5)
        os.kill(pid, signal.SIGSTOP)
        try:
            first, last = _queue(sim, n)
        finally:
            base = rig.front.stats().lines_by_measurement.get("price_ticks", 0)
            c0 = cpu_seconds(pid) or 0.0
            t0 = time.monotonic()
            os.kill(pid, signal.SIGCONT)
        total = last - first + 1
        marks: List[Mark] = []
        while True:
            done = rig.front.stats().lines_by_measurement.get("price_ticks", 0) - base
            marks.append((done, time.monotonic() - t0, (cpu_seconds(pid) or c0) - c0))
            if done >= total:
                break
            if marks[-1][1] > DRAIN_TIMEOUT_S or not proc.proc.alive():
                raise RuntimeError(f"the worker stored {done:,} of {total:,} lines in "
                                   f"{marks[-1][1]:.0f} s: {proc.output()[-800:]}")
            time.sleep(POLL_S)
        # Every trade made since the backlog began went to this worker alone (the only
        # connection), so the check covers any made after the count was read, too; and the
        # front counts lines as it receives them, so the check waits for influxd itself.
        last_now = int(sim.ledger()[SYMBOL]["last"])
        expected = last_now - first + 1
        poll(lambda: rig.count(db) >= expected, STORED_TIMEOUT_S, 0.2)
        ids = rig.stored_ids(db, SYMBOL)
        once = len(ids) == expected and set(ids) == set(range(first, last_now + 1))
        rig.release(proc.stop)
        drain = Drain("worker", total, marks[-1][1], marks[-1][2], middle_rate(marks, total),
                      once, "" if once else f"{len(ids):,} points, {len(set(ids)):,} distinct "
                                            f"ids; expected {expected:,} ({first}..{last_now})")
        drain.spooled = summary_count(proc.output(), "spooled")
        return drain
    finally:
        rig.drop_db(db)
