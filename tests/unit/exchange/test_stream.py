"""The StreamKeeper (workers/exchange/stream.py) on a fake clock, with fake connections (no
sockets): reconnect with growing and resetting delays, dead peers, make-before-break rotation,
refused handshakes and their Retry-After.

The keeper runs its real thread, ticking every TICK_S on the fake clock
(tests/support/clock.py); the spec is the clock's other participant, so time moves only while
both sleep, and the spec acts between two ticks (it starts half a tick after the keeper and
waits in quarter seconds).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.support.clock import FakeClock
from workers.common.backoff import Backoff
from workers.exchange.connection import Refusal
from workers.exchange.stream import (
    HEALTHY_AFTER_S,
    QUIET_SWITCH_S,
    RECONNECT_INITIAL_S,
    RECONNECT_MAX_S,
    TICK_S,
    StreamKeeper,
)
from workers.exchange.stream_plan import ConnectionPlan, plan_connections

PLAN = plan_connections("wss://stream.example/stream?streams=", ["BTCUSDT", "ETHUSDT"])[0]
DEAD_AFTER_S = 70.0
MAX_AGE_S = 600.0  # STREAM_MAX_AGE_S, shortened
START = FakeClock().now


class Highest:
    """The backoff's random draw at its highest: each delay is its ceiling."""

    def random(self) -> float:
        return 1.0


class FakeConnection:
    """What the keeper sees of a Connection; the spec opens, feeds and ends it."""

    def __init__(self, clock: FakeClock, log: List[Tuple[float, str, str]], plan: ConnectionPlan,
                 label: str) -> None:
        self.clock, self.log, self.plan, self.label = clock, log, plan, label
        self.opened_at = 0.0
        self._last_frame_at = 0.0
        self.pinging = False  # the server's pings keep arriving (last_frame_at is now)
        self.trades = 0
        self.shutdown_announced = False
        self.stale_reason = ""
        self.refusal: Optional[Refusal] = None
        self.ended = threading.Event()
        self.end_reason = ""
        self.closed_for = ""  # why the keeper closed it
        self.subscribed_all = False
        self.waiting_budget_s = 0.0
        self.subscribed = 0
        self.thread = threading.Thread()  # never started, as the keeper's stop() expects

    # -- the spec's moves ------------------------------------------------------------------------
    def open(self, subscribed: bool = True) -> "FakeConnection":
        self.opened_at = self._last_frame_at = self.clock.monotonic()
        self.pinging = True
        self.subscribed_all = subscribed
        self.subscribed = self.plan.streams
        self.log.append((self.clock.monotonic(), "opened", self.label))
        return self

    def fall_silent(self) -> None:
        self._last_frame_at = self.clock.monotonic()
        self.pinging = False

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.pinging = False
            self.end_reason = reason
            self.ended.set()
            self.log.append((self.clock.monotonic(), "ended", self.label))

    def refuse(self, status: int, retry_after: float) -> None:
        self.refusal = Refusal(status, retry_after, '{"code":-1003}', self.clock.time())
        self.end(self.refusal.describe())

    # -- what the keeper calls -------------------------------------------------------------------
    def start(self) -> "FakeConnection":
        return self

    def pump(self, now: float) -> None:
        pass

    def close(self, reason: str) -> None:
        self.closed_for = self.closed_for or reason
        self.log.append((self.clock.monotonic(), "closed", self.label))
        self.end(reason)

    @property
    def last_frame_at(self) -> float:
        return self.clock.monotonic() if self.pinging else self._last_frame_at

    @property
    def fully_subscribed(self) -> bool:
        return bool(self.opened_at) and self.subscribed_all and not self.closed_for

    @property
    def age(self) -> float:
        return self.clock.monotonic() - self.opened_at if self.opened_at else 0.0

    @property
    def connected(self) -> bool:
        return bool(self.opened_at) and not self.ended.is_set()


class FakeBudget:
    def __init__(self) -> None:
        self.holds: List[Tuple[float, str]] = []

    def acquire(self, stopping: threading.Event, on_wait: Any) -> bool:
        return True

    def hold(self, until: float, reason: str) -> None:
        self.holds.append((until, reason))


class Rig:
    """A keeper on a fake clock; `made` lists its connections, `log` what happened when."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.log: List[Tuple[float, str, str]] = []
        self.made: List[FakeConnection] = []
        self.failing = 0  # so many next connections fail to connect
        self.refusing: Optional[Tuple[int, float]] = None  # (status, Retry-After) of the next
        self.reconnects: List[str] = []
        self.budget = FakeBudget()
        self.keeper = StreamKeeper("btcusdt", PLAN, lambda data, opcode, conn: None,
                                   DEAD_AFTER_S, MAX_AGE_S, self.reconnects.append,
                                   budget=self.budget, clock=clock,
                                   connect=self.connect)  # type: ignore[arg-type]  # a fake
        self.keeper.backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S, Highest(),
                                      clock=clock)
        self._together = clock.participants(2)

    def connect(self, worker: str, plan: ConnectionPlan, label: str, on_frame: Any,
                budget: Any) -> FakeConnection:
        conn = FakeConnection(self.clock, self.log, plan, label)
        self.made.append(conn)
        self.log.append((self.clock.monotonic(), "connecting", label))
        if self.refusing is not None:
            conn.refuse(*self.refusing)
            self.refusing = None
        elif self.failing:
            self.failing -= 1
            conn.end("connect failed: ConnectionRefusedError")
        return conn

    def start(self) -> FakeConnection:
        self._together.__enter__()
        self.keeper.start()
        self.wait(TICK_S / 2)  # from now on the spec acts between two ticks
        return self.made[0]

    def wait(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    def wait_for_connection(self, count: int, limit_s: float = 600.0) -> FakeConnection:
        """Let time pass until the keeper has opened its `count`th connection."""
        deadline = self.clock.now + limit_s
        self.clock.sleep_until(lambda: len(self.made) >= count or self.clock.now > deadline,
                               TICK_S)
        assert len(self.made) >= count, self.log
        return self.made[count - 1]

    def when(self, event: str, label: str) -> float:
        return next(t for t, what, who in self.log if (what, who) == (event, label))

    def stop(self) -> None:
        self.keeper.stop(1.0)
        self._together.__exit__(None, None, None)


@pytest.fixture
def rig() -> Any:
    r = Rig(FakeClock())
    yield r
    r.stop()


# -- (a) reconnect -------------------------------------------------------------------------------

def test_a_connection_that_ends_is_replaced_after_the_backoff_delay(rig):
    first = rig.start().open()
    rig.wait(5.0)
    first.end("server closed: code=1000 reason=''")
    ended = rig.clock.now

    second = rig.wait_for_connection(2)

    waited = rig.when("connecting", second.label) - ended
    assert RECONNECT_INITIAL_S <= waited <= RECONNECT_INITIAL_S + TICK_S
    assert rig.reconnects == ["reconnect"]
    assert rig.keeper.current is second
    assert "server closed" in rig.keeper.last_end


def test_delays_double_up_to_the_cap_while_connecting_fails(rig):
    rig.failing = 9
    rig.start()

    rig.wait_for_connection(10, limit_s=1000.0)

    starts = [rig.when("connecting", c.label) for c in rig.made]
    # each failure is seen at the next tick, and the delay counts from there
    delays = [b - a - TICK_S for a, b in zip(starts, starts[1:])]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert RECONNECT_MAX_S == 60.0


def test_a_healthy_connection_resets_the_delays_and_a_short_one_does_not(rig):
    rig.failing = 3  # delays 1, 2, 4
    rig.start()
    short = rig.wait_for_connection(4).open()
    rig.wait(HEALTHY_AFTER_S / 2)
    short.end("server closed")  # no trade, half a minute short of healthy: 8 s next
    healthy = rig.wait_for_connection(5)
    assert rig.when("connecting", healthy.label) - rig.when("ended", short.label) \
        == pytest.approx(8.0 + TICK_S / 2)

    healthy.open()
    rig.wait(HEALTHY_AFTER_S + TICK_S)
    healthy.end("server closed")  # lived long enough: starts afresh
    after = rig.wait_for_connection(6)

    assert rig.when("connecting", after.label) - rig.when("ended", healthy.label) \
        == pytest.approx(RECONNECT_INITIAL_S + TICK_S / 2)


def test_a_connection_that_delivered_trades_counts_as_healthy(rig):
    rig.failing = 2  # delays 1, 2
    rig.start()
    conn = rig.wait_for_connection(3).open()
    conn.trades = 5
    rig.wait(1.0)
    conn.end("server closed")

    after = rig.wait_for_connection(4)

    assert rig.when("connecting", after.label) - rig.when("ended", conn.label) \
        == pytest.approx(RECONNECT_INITIAL_S + TICK_S / 2)


# -- (b) dead peer -------------------------------------------------------------------------------

def test_a_connection_kept_alive_by_pings_is_not_touched(rig):
    conn = rig.start().open()

    rig.wait(DEAD_AFTER_S * 3)

    assert not conn.closed_for and rig.keeper.current is conn and len(rig.made) == 1


def test_a_silent_peer_is_closed_after_the_dead_peer_timeout_and_reconnected(rig):
    first = rig.start().open()
    rig.wait(10.0)
    first.fall_silent()
    silent_from = rig.clock.now

    second = rig.wait_for_connection(2)

    closed = rig.when("closed", first.label)
    assert DEAD_AFTER_S < closed - silent_from <= DEAD_AFTER_S + TICK_S
    assert "dead peer" in first.closed_for
    # it lived long enough to count as healthy: the first delay, from the tick that sees it end
    assert rig.when("connecting", second.label) - closed == pytest.approx(RECONNECT_INITIAL_S
                                                                          + TICK_S)
    assert rig.reconnects == ["reconnect"]


# -- (c) rotation --------------------------------------------------------------------------------

def test_before_the_age_limit_a_new_connection_opens_before_the_old_one_closes(rig):
    old = rig.start().open()

    new = rig.wait_for_connection(2)

    assert rig.when("connecting", new.label) - rig.when("opened", old.label) \
        == pytest.approx(MAX_AGE_S + TICK_S / 2)
    assert not old.closed_for and rig.keeper.current is old and rig.keeper.next is new
    new.open()
    rig.wait(QUIET_SWITCH_S)
    assert not old.closed_for  # a quiet pair: the new one takes over after QUIET_SWITCH_S,
    rig.wait(TICK_S)  # at the keeper's first tick after that
    assert old.closed_for == "rotated"
    assert rig.keeper.current is new and rig.keeper.next is None
    assert [e for e in rig.log if e[1] != "ended"] == [
        (START, "connecting", old.label), (START + TICK_S / 2, "opened", old.label),
        (rig.when("connecting", new.label), "connecting", new.label),
        (rig.when("opened", new.label), "opened", new.label),
        (rig.when("closed", old.label), "closed", old.label)]
    assert rig.reconnects == []  # a rotation is no reconnect


def test_the_new_connection_takes_over_at_its_first_trade(rig):
    old = rig.start().open()
    new = rig.wait_for_connection(2).open()
    rig.wait(TICK_S)
    assert not old.closed_for

    new.trades = 1
    rig.wait(TICK_S)

    assert old.closed_for == "rotated" and rig.keeper.current is new


def test_no_switch_before_the_new_connection_is_fully_subscribed(rig):
    old = rig.start().open()
    new = rig.wait_for_connection(2).open(subscribed=False)
    new.trades = 3
    rig.wait(QUIET_SWITCH_S * 3)
    assert not old.closed_for and rig.keeper.current is old

    new.subscribed_all = True
    rig.wait(TICK_S)

    assert old.closed_for == "rotated" and rig.keeper.current is new


def test_server_shutdown_rotates_at_once(rig):
    old = rig.start().open()
    rig.wait(60.0)

    old.shutdown_announced = True
    rig.wait(TICK_S)

    assert len(rig.made) == 2 and rig.keeper.next is rig.made[1] and not old.closed_for


def test_when_the_old_connection_ends_during_rotation_the_live_new_one_takes_over(rig):
    old = rig.start().open()
    new = rig.wait_for_connection(2).open(subscribed=False)

    old.end("server closed: code=1001")
    rig.wait(TICK_S)

    assert rig.keeper.current is new and rig.keeper.next is None
    assert rig.reconnects == ["server closed: code=1001"]
    assert len(rig.made) == 2


def test_when_the_old_connection_ends_while_the_new_one_connects_no_third_one_is_opened(rig):
    old = rig.start().open()
    new = rig.wait_for_connection(2)  # still connecting (its handshake, or the host's budget)

    old.end("server closed: code=1001")
    rig.wait(5.0)
    new.open()
    rig.wait(TICK_S)

    assert len(rig.made) == 2, rig.log
    assert rig.keeper.current is new and rig.keeper.next is None
    assert rig.reconnects == ["server closed: code=1001"]


def test_a_failed_rotation_keeps_the_old_connection_and_tries_again_after_the_backoff(rig):
    old = rig.start().open()
    failed = rig.wait_for_connection(2)
    failed.end("connect failed: timed out")
    rig.wait(TICK_S)
    assert rig.keeper.current is old and rig.keeper.next is None

    again = rig.wait_for_connection(3)

    assert rig.when("connecting", again.label) - rig.when("ended", failed.label) \
        == pytest.approx(RECONNECT_INITIAL_S + TICK_S / 2)
    assert not old.closed_for and rig.keeper.next is again


def test_a_dead_peer_during_rotation_is_closed_and_the_new_one_takes_over(rig):
    old = rig.start().open()
    new = rig.wait_for_connection(2).open(subscribed=False)
    old.fall_silent()

    rig.wait(DEAD_AFTER_S + 2 * TICK_S)

    assert "dead peer" in old.closed_for
    assert rig.keeper.current is new and len(rig.made) == 2


# -- (d) refused handshakes ------------------------------------------------------------------------

@pytest.mark.parametrize("status, retry_after", [(429, 30.0), (418, 600.0)])
def test_a_refused_handshake_waits_its_retry_after_and_holds_the_hosts_budget(rig, status,
                                                                              retry_after):
    first = rig.start().open()
    rig.refusing = (status, retry_after)
    first.end("server closed")
    refused = rig.wait_for_connection(2)
    refused_at = rig.when("ended", refused.label)
    rig.wait(TICK_S)
    assert rig.keeper.state()["refused"]["status"] == status

    after = rig.wait_for_connection(3, limit_s=2000.0)

    waited = rig.when("connecting", after.label) - refused_at
    assert retry_after <= waited <= retry_after + 2 * TICK_S
    assert rig.budget.holds == [(refused.refusal.until, f"HTTP {status}")]
    assert rig.keeper.state()["refused"] is None  # its time has passed


def test_a_refusal_without_retry_after_waits_the_backoff_and_holds_nothing(rig):
    first = rig.start().open()
    rig.refusing = (403, 0.0)
    first.end("server closed")
    refused = rig.wait_for_connection(2)

    after = rig.wait_for_connection(3)

    assert rig.when("connecting", after.label) - rig.when("ended", refused.label) \
        == pytest.approx(2.0 + TICK_S)
    assert rig.budget.holds == []


def test_state_says_what_the_status_file_shows(rig):
    rig.start().open()
    rig.wait(TICK_S)

    state: Dict[str, Any] = rig.keeper.state()

    assert state["conn"] == PLAN.label and state["connected"] is True
    assert state["subscribed"] == PLAN.streams and state["refused"] is None


def test_stop_closes_the_connections_and_ends_the_thread(rig):
    conn = rig.start().open()

    rig.keeper.stop(1.0)

    assert conn.closed_for == "stopping"
    assert not rig.keeper.thread.is_alive()
