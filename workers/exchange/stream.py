"""Keeping a worker's connections alive forever: reconnect, refusals, dead peers, rotation.

The `StreamKeeper` owns the current `Connection` (connection.py) of one connection plan: it
reconnects with capped, jittered backoff and honours a refused handshake's Retry-After (a 429 or
418 holds every worker of the host through the budget); closes a connection that has received no
frame at all (not even Binance's 20 s ping) for `dead_after_s`; and rotates make-before-break
(new connection first, old one closed once the new one is fully subscribed and delivers) before
Binance's 24 h cut or when `serverShutdown` arrives. The keeper never waits on the network or on
REST: it ticks four times a second and only looks at state. Its clock and the factory of its
connections are injected (the real ones by default), so specs drive it on a fake clock.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from workers.common.backoff import SYSTEM_CLOCK, Backoff, Clock
from workers.common.timefmt import iso_seconds
from workers.exchange.connection import Budget, Connection, Refusal
from workers.exchange.stream_plan import PER_MESSAGE, ConnectionPlan, plan_one

log = logging.getLogger(__name__)
HEALTHY_AFTER_S = 30.0  # a connection that lived this long (or got trades) resets the backoff
QUIET_SWITCH_S = 10.0  # rotation: a quiet pair's new connection takes over after this long
TICK_S = 0.25
# Reconnect delays: the first within a second (a stream dropped by the network or a server
# restart is usually accepted again at once), doubling up to a minute, so that through a long
# outage each connection still tries once a minute and capture resumes within a minute of the
# exchange's return. The host's connection budget (connect_budget.py), not this cap, keeps all
# workers of the IP under Binance's 300 connection attempts per 5 minutes.
RECONNECT_INITIAL_S, RECONNECT_MAX_S = 1.0, 60.0

FrameHandler = Callable[[bytes, int, Connection], None]
# Opens (does not start) a connection: (worker, plan, label, on_frame, budget); Connection itself.
ConnectionFactory = Callable[[str, ConnectionPlan, str, FrameHandler, Optional[Budget]],
                             Connection]


class StreamKeeper:
    """Keeps one live connection for `plan` until `stop()`; see the module docstring."""

    def __init__(self, worker: str, plan: ConnectionPlan, on_frame: FrameHandler,
                 dead_after_s: float, max_age_s: float,
                 on_reconnect: Callable[[str], None],
                 stall_check: Optional[Callable[[Connection], None]] = None,
                 budget: Optional[Budget] = None, base_url: str = "",
                 clock: Clock = SYSTEM_CLOCK, connect: ConnectionFactory = Connection) -> None:
        self.worker = worker
        self.plan = plan
        self.base_url = base_url
        self.on_frame = on_frame
        self.dead_after_s = dead_after_s
        self.max_age_s = max_age_s
        self.on_reconnect = on_reconnect
        self.stall_check = stall_check
        self.budget = budget
        self.clock = clock
        self.connect = connect
        self.backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S, clock=clock)
        self.current: Optional[Connection] = None
        self.next: Optional[Connection] = None
        self.connections = 0
        # Trades received, counted per connection by its own reader thread (no lock on the
        # per-trade path): connections still reading, and the total of those that ended.
        self._open: List[Connection] = []
        self._trades_ended = 0
        self.next_attempt_at = 0.0  # monotonic; no new connection before this
        self.last_refusal: Optional[Refusal] = None
        self.last_end = ""  # why the last connection ended (or failed to open), for status
        self._refusals_logged: Dict[Tuple[int, str], float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"keeper-{worker}-{plan.label}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _new(self, why: str) -> Connection:
        self.connections += 1
        conn = self.connect(self.worker, self.plan, f"{self.plan.label}c{self.connections}",
                            self.on_frame, self.budget)
        self._open = [c for c in self._open if not self._retire(c)] + [conn]
        return conn.start()

    def _retire(self, conn: Connection) -> bool:
        """Fold a connection whose reader thread has ended into the total (keeper thread)."""
        if not conn.ended.is_set() or conn is self.current or conn is self.next:
            return False
        self._trades_ended += conn.trades
        return True

    @property
    def trades(self) -> int:
        """Trades received by every connection of this keeper so far."""
        return self._trades_ended + sum(c.trades for c in list(self._open))

    def _run(self) -> None:
        self.current = self._new("start")
        while not self.clock.sleep(TICK_S, self.stopping):
            self.tick(self.clock.monotonic())

    def tick(self, now: float) -> None:
        cur = self.current
        if cur is None:
            if now >= self.next_attempt_at and not self.stopping.is_set():
                self.on_reconnect("reconnect")
                self.current = self._new("reconnect")
            return
        cur.pump(now)
        if cur.ended.is_set():
            self._ended(cur, now)
            return
        if self.next is not None:
            self.next.pump(now)
            self._maybe_switch(now)
        elif cur.opened_at:
            self._check(cur, now)

    def _ended(self, cur: Connection, now: float) -> None:
        self.last_end = f"{iso_seconds(self.clock.time())} {cur.end_reason}"
        if cur.refusal is not None:
            self._refused(cur.refusal)
        else:
            log.warning("worker=%s event=disconnected conn=%s after_s=%.1f reason=%r",
                        self.worker, cur.label, cur.age, cur.end_reason)
        nxt = self.next
        if nxt is not None and not nxt.ended.is_set():
            # The rotation target takes over, live or still connecting: opening yet another
            # one would spend a connection attempt, and beside a `next` that is not open it
            # would be closed at once as a dead peer, again and again.
            self.current, self.next = nxt, None
            self.on_reconnect(cur.end_reason)
            return
        if cur.opened_at and (cur.trades > 0 or cur.age >= HEALTHY_AFTER_S):
            self.backoff.reset()  # it worked: the next failure starts the backoff afresh
        wait = cur.refusal.retry_after if cur.refusal is not None else 0.0
        delay = self.backoff.next_delay(wait)
        log.info("worker=%s event=reconnecting conn=%s in_s=%.1f", self.worker, self.plan.label,
                 delay)
        self.current = None
        self.next_attempt_at = now + delay

    def _refused(self, refusal: Refusal) -> None:
        """Say once what the exchange refused and why; 429/418 hold every worker of the host."""
        self.last_refusal = refusal
        if refusal.status in (418, 429) and self.budget is not None and refusal.retry_after:
            self.budget.hold(refusal.until, f"HTTP {refusal.status}")
        if refusal.status == 414 and self.base_url:  # the exchange's cut is shorter than ours
            self.plan = plan_one(self.plan.label, self.base_url, self.plan.symbols,
                                 len(self.plan.url) // 2, PER_MESSAGE)
        key = (refusal.status, refusal.body)
        now = self.clock.monotonic()
        if now - self._refusals_logged.get(key, -3600.0) >= 3600.0:
            self._refusals_logged[key] = now
            log.error("worker=%s event=handshake_refused conn=%s status=%d retry_after_s=%.0f "
                      "detail=%r", self.worker, self.plan.label, refusal.status,
                      refusal.retry_after, refusal.describe())

    def _check(self, cur: Connection, now: float) -> None:
        silent = now - cur.last_frame_at
        if silent > self.dead_after_s:
            cur.close(f"no frame for {silent:.0f}s (dead peer)")
        elif cur.stale_reason:
            cur.close(cur.stale_reason)
        elif now < self.next_attempt_at:
            return  # a rotation failed a moment ago: not before its backoff
        elif cur.shutdown_announced:
            self._rotate(cur, "serverShutdown")
        elif cur.age > self.max_age_s:
            self._rotate(cur, f"age {cur.age:.0f}s over {self.max_age_s:.0f}s")
        elif self.stall_check is not None:
            self.stall_check(cur)  # never blocks: REST runs on the prober thread

    def _rotate(self, cur: Connection, why: str) -> None:
        log.info("worker=%s event=rotate_start conn=%s why=%r", self.worker, cur.label, why)
        self.next = self._new("rotate")

    def _maybe_switch(self, now: float) -> None:
        cur, nxt = self.current, self.next
        assert cur is not None and nxt is not None
        if nxt.ended.is_set():  # the new one failed: keep the old one, try again later
            if nxt.refusal is not None:
                self._refused(nxt.refusal)
            log.warning("worker=%s event=rotate_failed reason=%r", self.worker, nxt.end_reason)
            self.next = None
            wait = nxt.refusal.retry_after if nxt.refusal is not None else 0.0
            self.next_attempt_at = now + self.backoff.next_delay(wait)
            return
        if now - cur.last_frame_at > self.dead_after_s:
            cur.close("no frame during rotation (dead peer)")
        if not nxt.fully_subscribed:
            return
        quiet_long_enough = nxt.age >= QUIET_SWITCH_S
        if nxt.trades > 0 or quiet_long_enough or cur.ended.is_set():
            log.info("worker=%s event=rotate_done old=%s new=%s", self.worker, cur.label,
                     nxt.label)
            self.current, self.next = nxt, None
            cur.close("rotated")
            self.backoff.reset()

    def state(self) -> Dict[str, Any]:
        """For the status file: is the connection up, subscribed, waiting or refused."""
        cur = self.current
        refusal = self.last_refusal
        return {
            "conn": self.plan.label, "streams": self.plan.streams,
            "connected": bool(cur and cur.connected),
            "subscribed": cur.subscribed if cur and cur.connected else 0,
            "waiting_budget_s": round(cur.waiting_budget_s, 1) if cur and not cur.opened_at
            else 0.0,
            "refused": None if refusal is None or refusal.until < self.clock.time() else
            {"status": refusal.status, "until": refusal.until, "detail": refusal.describe()},
            "last_end": self.last_end,
        }

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping.set()
        for conn in (self.current, self.next):
            if conn is not None:
                conn.close("stopping")
        if self.thread.ident is not None:
            self.thread.join(timeout)
        for conn in (self.current, self.next):
            if conn is not None and conn.thread.ident is not None:
                conn.thread.join(timeout)

