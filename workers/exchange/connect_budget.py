"""One budget of WebSocket connection attempts for every worker of the host.

Binance allows 300 connection attempts per 5 minutes per IP, counted over every process of the
host (reference/binance.md section 3). Each worker is its own OS process, so the budget lives in
a small file under the run directory, `run/connect-budget.log`, and every worker takes a token
from it before every connection attempt (first start, reconnect, rotation).

The file
    One attempt per line, its time in Unix seconds with 6 decimals (`1767225600.123456\\n`),
    oldest first; only the attempts of the last window are kept, so it holds at most about
    `limit` lines (a few KiB). Every read and write holds `fcntl.flock` on the file itself, so
    processes never interleave; a write is one `write` at offset 0 followed by `ftruncate`, so a
    crash can at worst leave a stale tail of old lines, which only over-counts. Lines that do not
    parse are dropped and the file rewritten (the attempts they held are forgotten; the good
    lines still count). A missing directory or file is created.

The hard rule: a rolling log, not a refilling bucket
    An attempt is granted only if fewer than `limit` attempts lie in the last `window_s` seconds,
    so no span of `window_s` seconds ever holds more than `limit` attempts, whatever the order
    or timing of the processes. (A bucket of capacity 300 refilled at 1/s allows 600 attempts in
    5 minutes; this log does not.)

The spreading policy (on top of the hard rule)
    `burst` attempts (default `limit // 2`, at least 1) may go at once; beyond that, attempts are
    spread at `limit / window_s` per second. Concretely, an attempt at time t is granted only if,
    for every logged attempt g of the window, the attempts since g (the new one included) number
    at most `burst + (t - g) * limit / window_s`. It is the shape of a token bucket of capacity
    `burst` refilled at `limit / window_s` per second, computed from the same log, so it needs no
    other state and cannot drift from it. Why this shape: after a boot or `supervisorctl restart
    all` with 200 workers and the default 200/300, 100 workers connect at once and the other 100
    follow one every 1.5 s, instead of all 200 hitting Binance in the same second (a storm that
    draws 429s when another tool shares the IP); a lone reconnect never waits while the window is
    mostly free; and half the budget always remains for the reconnects of the next minutes. The
    hard rule still caps the total: after 100 at once and 100 more over 150 s, the next attempt
    waits until the first ones leave the window.

Refusals hold the whole host
    When the exchange refuses a handshake with 429 or 418 and a Retry-After, the worker that met
    it calls `hold(until, reason)`: `run/connect-budget.hold` then says "no attempt before
    `until`" (one line: the Unix time and the reason), and every worker's next attempt waits for
    it. Another worker trying meanwhile would turn a 429 into a 418 ban for the whole IP.

Clocks
    Times are wall-clock (`time.time`) so that the file means the same to every process and
    survives a reboot. An attempt logged in the future (the clock went back) counts as made now:
    it then leaves the window `window_s` after the jump, never sooner than it really would, and
    the budget neither blocks for the length of the jump nor hands out a second full window.
"""
from __future__ import annotations

import fcntl
import math
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from workers.common.atomic import write_atomic

FILE_NAME = "connect-budget.log"

# Attempts logged up to this far ahead of `now` are taken as they are (processes read the clock
# a moment apart); farther ahead means the clock went back, and they count as made now.
FUTURE_TOLERANCE_S = 1.0

# In `acquire`, each wait gets a random extra of up to 10 % of it, at most 0.5 s, so workers
# waiting for the same free slot do not all wake in the same millisecond.
JITTER_FRACTION = 0.1
JITTER_MAX_S = 0.5
MIN_WAIT_S = 0.001


def budget_path(run_dir: Path) -> Path:
    """The budget file shared by every worker that uses `run_dir`."""
    return Path(run_dir) / FILE_NAME


class ConnectBudget:
    """At most `limit` connection attempts in any `window_s` seconds, over every process that
    uses the same `path`; see the module docstring for the file and the spreading policy."""

    def __init__(self, path: Path, limit: int, window_s: float,
                 clock: Callable[[], float] = time.time, burst: Optional[int] = None,
                 rng: Optional[random.Random] = None) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError("window_s must be a finite number > 0")
        self.path = Path(path)
        self.limit = int(limit)
        self.window_s = float(window_s)
        self.burst = max(1, min(self.limit, self.limit // 2 if burst is None else int(burst)))
        self.rate = self.limit / self.window_s  # attempts per second once the burst is spent
        self.last_granted_at: Optional[float] = None  # time logged for this object's last grant
        self._clock = clock
        self._rng = rng or random.Random()

    # -- public API ------------------------------------------------------------------------------

    def try_acquire(self, now: Optional[float] = None) -> float:
        """Log an attempt now and return 0.0 if the budget allows it; else log nothing and return
        the seconds until it will (another process may take that slot first: ask again then)."""
        fd = self._open_locked(fcntl.LOCK_EX)
        try:
            if now is None:
                now = self._clock()  # read under the lock: grants are logged in order
            now = round(now, 6)  # as the file will hold it
            stored, clean = self._read(fd)
            times = self._current(stored, now)
            wait = max(self._wait(times, now), self._held(now)[0] - now)
            if wait <= 0.0:
                times.append(now)
                self.last_granted_at = now
            if wait <= 0.0 or not clean or times != stored:
                self._write(fd, times)
            return max(0.0, wait)
        finally:
            os.close(fd)  # releases the lock

    def acquire(self, stopping: threading.Event,
                on_wait: Optional[Callable[[float], None]] = None) -> bool:
        """Take a token, waiting as long as needed: True once taken, False if `stopping` is set
        first (then nothing was taken). `on_wait(seconds)` is called before each wait."""
        while not stopping.is_set():
            wait = self.try_acquire()
            if wait <= 0.0:
                return True
            if on_wait is not None:
                on_wait(wait)
            jitter = self._rng.random() * min(JITTER_MAX_S, wait * JITTER_FRACTION)
            if stopping.wait(max(MIN_WAIT_S, wait + jitter)):
                return False
        return False

    def snapshot(self, now: Optional[float] = None) -> Dict[str, Any]:
        """For status: attempts in the window, the limit, the window and the seconds until the
        next attempt would be granted (0 if now). Reads only; never creates or writes the file."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            stored: List[float] = []
            if now is None:
                now = self._clock()
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if now is None:
                    now = self._clock()
                stored, _ = self._read(fd)
            finally:
                os.close(fd)
        times = self._current(stored, now)
        until, reason = self._held(now)
        return {"used": len(times), "limit": self.limit, "window_s": self.window_s,
                "burst": self.burst, "wait_s": max(self._wait(times, now), until - now),
                "held_until": until if until > now else 0.0, "held_reason": reason}

    def hold(self, until: float, reason: str) -> None:
        """No attempt of any worker of the host before `until` (an exchange's Retry-After)."""
        fd = self._open_locked(fcntl.LOCK_EX)
        try:
            now = self._clock()
            current, _ = self._held(now)
            if until <= current:
                return  # an equal or longer hold is in force
            write_atomic(self.hold_path, f"{until:.3f} {' '.join(reason.split())}\n",
                         durable=False)
        finally:
            os.close(fd)

    @property
    def hold_path(self) -> Path:
        return self.path.with_suffix(".hold")

    def _held(self, now: float) -> Tuple[float, str]:
        """(until, reason) of a hold in force, else (0.0, "")."""
        try:
            text = self.hold_path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return 0.0, ""
        head, _, reason = text.strip().partition(" ")
        try:
            until = float(head)
        except ValueError:
            return 0.0, ""
        if not math.isfinite(until) or until <= now:
            return 0.0, ""
        return until, reason

    # -- the rule ----------------------------------------------------------------------------------

    def _current(self, stored: List[float], now: float) -> List[float]:
        """The attempts still in the window at `now`, oldest first, clock jumps made safe."""
        horizon = now - self.window_s
        times = [now if t > now + FUTURE_TOLERANCE_S else t for t in stored]
        return sorted(t for t in times if t > horizon)

    def _wait(self, times: List[float], now: float) -> float:
        """Seconds from `now` until one more attempt is allowed, given the window's attempts."""
        n = len(times)
        earliest = now
        if n >= self.limit:  # the hard rule: the (n - limit + 1) oldest must leave the window
            earliest = max(earliest, times[n - self.limit] + self.window_s)
        # the spread: the attempts since times[i] are n - i, the new one included n - i + 1
        for i, t in enumerate(times):
            excess = n - i + 1 - self.burst
            if excess > 0:
                earliest = max(earliest, t + excess / self.rate)
        return max(0.0, earliest - now)

    # -- the file ----------------------------------------------------------------------------------

    def _open_locked(self, operation: int) -> int:
        """An fd of the budget file, created if missing, holding `operation` (flock) on it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, operation)
                # Someone removed or replaced the file while we waited: lock the one in place,
                # or this process and the others would keep two budgets.
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    @staticmethod
    def _read(fd: int) -> Tuple[List[float], bool]:
        """The logged times, and whether every line parsed."""
        chunks = []
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        times: List[float] = []
        clean = data == b"" or data.endswith(b"\n")
        for line in data.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                value = float(line)
            except ValueError:
                clean = False
                continue
            if math.isfinite(value):
                times.append(value)
            else:
                clean = False
        return times, clean

    @staticmethod
    def _write(fd: int, times: List[float]) -> None:
        """Replace the file's content under the lock: write at offset 0, then cut the rest."""
        data = "".join(f"{t:.6f}\n" for t in times).encode("ascii")
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, data[offset:], offset)
        os.ftruncate(fd, len(data))
