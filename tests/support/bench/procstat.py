"""CPU, memory and load figures read from /proc (Linux only, like the rest of the rig)."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of `pid` in seconds (None when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def parent_pid(pid: int) -> Optional[int]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


@dataclass(frozen=True)
class Memory:
    """Resident set, proportional set (shared pages split among sharers) and unique set, in MB."""

    rss_mb: float
    pss_mb: float
    uss_mb: float

    def __add__(self, other: "Memory") -> "Memory":
        return Memory(self.rss_mb + other.rss_mb, self.pss_mb + other.pss_mb,
                      self.uss_mb + other.uss_mb)


ZERO_MEMORY = Memory(0.0, 0.0, 0.0)


def memory(pid: int) -> Optional[Memory]:
    """VmRSS from status; Pss and Private_* (= USS) from smaps_rollup."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    rss = _kb(status, "VmRSS:")
    pss = _kb(rollup, "Pss:")
    uss = _kb(rollup, "Private_Clean:") + _kb(rollup, "Private_Dirty:")
    return Memory(rss / 1024, pss / 1024, uss / 1024)


def _kb(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def total_memory(pids: Iterable[int]) -> Memory:
    total = ZERO_MEMORY
    for pid in pids:
        mem = memory(pid)
        if mem is not None:
            total = total + mem
    return total


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def system_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


def descendants(root: int) -> List[int]:
    """`root` and every process below it (children, grandchildren ...)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_pid(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


class CpuMeter:
    """CPU seconds of a fixed set of processes between `start()` and `stop()`."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self._start: Dict[int, float] = {}
        self._began = 0.0
        self.elapsed = 0.0
        self.seconds: Dict[int, float] = {}

    def start(self) -> "CpuMeter":
        self._began = time.monotonic()
        self._start = {p: cpu_seconds(p) or 0.0 for p in self.pids}
        return self

    def stop(self) -> "CpuMeter":
        self.elapsed = time.monotonic() - self._began
        for pid in self.pids:
            end = cpu_seconds(pid)
            self.seconds[pid] = max(0.0, (end if end is not None else self._start[pid])
                                    - self._start[pid])
        return self

    def cores(self, pid: Optional[int] = None) -> float:
        """Average cores used (1.0 = one core busy) by `pid`, or by all of them."""
        used = self.seconds[pid] if pid is not None else sum(self.seconds.values())
        return used / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class LoadMark:
    at: float
    busy: float  # system busy CPU seconds
    ours: float  # CPU seconds of this process tree, accumulated by the watcher
    load: float  # 1-minute load average


@dataclass(frozen=True)
class LoadFigures:
    """What else ran on the box while a section ran."""

    seconds: float
    load_start: float
    load_max: float
    foreign_cores: float  # busy CPU not used by the benchmark's own processes
    ours_cores: float

    def describe(self) -> str:
        return (f"load avg {self.load_start:.2f} at start, max {self.load_max:.2f}; other "
                f"processes used {self.foreign_cores:.2f} cores on average "
                f"(benchmark {self.ours_cores:.2f}) over {self.seconds:.0f} s")


class LoadWatch:
    """Samples once a second: the box's busy CPU, our process tree's CPU, the load average.

    Foreign CPU = busy - ours. A process of ours that exits loses at most its last second.
    """

    INTERVAL_S = 1.0

    def __init__(self, root: int) -> None:
        self.root = root
        self._last: Dict[int, float] = {}
        self._ours = 0.0
        self._loads: List[Tuple[float, float]] = []  # (monotonic time, 1-min load)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-watch", daemon=True)

    def start(self) -> "LoadWatch":
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            try:
                self._sample()
            except OSError:
                continue  # a process vanished mid-scan; the next sample catches up

    def _sample(self) -> None:
        now: Dict[int, float] = {}
        for pid in descendants(self.root):
            cpu = cpu_seconds(pid)
            if cpu is not None:
                now[pid] = cpu
        with self._lock:
            for pid, cpu in now.items():
                prev = self._last.get(pid)
                # A process first seen now started since the last sample: all its CPU is new.
                self._ours += max(0.0, cpu - prev) if prev is not None else cpu
            self._last = now
            self._loads.append((time.monotonic(), loadavg()))
            del self._loads[:-4000]  # about an hour of samples is plenty

    def mark(self) -> LoadMark:
        self._sample()
        with self._lock:
            return LoadMark(time.monotonic(), system_busy_seconds(), self._ours, loadavg())

    def since(self, start: LoadMark) -> LoadFigures:
        end = self.mark()
        with self._lock:
            loads = [load for at, load in self._loads if start.at - 1.0 <= at <= end.at]
        seconds = max(1e-6, end.at - start.at)
        ours = (end.ours - start.ours) / seconds
        busy = (end.busy - start.busy) / seconds
        return LoadFigures(seconds, start.load, max(loads, default=start.load),
                           max(0.0, busy - ours), ours)
