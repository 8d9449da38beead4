"""One budget of connection attempts per host: a rolling log in a file, shared under flock.

The hard rule: never more than `limit` attempts in any span of `window_s` seconds, over every
process that uses the file. The shape on top: `burst` at once, then `limit / window_s` per second.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from pathlib import Path
from typing import List

import pytest

from tests.support.timing import most_in_any_window
from workers.exchange.connect_budget import FILE_NAME, ConnectBudget, budget_path


class Clock:
    """A settable clock for the specs where time matters."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def logged(path: Path) -> list:
    return [float(line) for line in path.read_text().split()]


# -- the hard rule: at most `limit` in any window ------------------------------------------------

def test_grants_up_to_the_limit_then_says_how_long_until_the_oldest_leaves_the_window(tmp_path):
    clock = Clock(1000.0)
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=3, window_s=10.0, clock=clock, burst=3)

    assert [budget.try_acquire(now=t) for t in (1000.0, 1001.0, 1002.0)] == [0.0, 0.0, 0.0]
    assert budget.try_acquire(now=1004.0) == pytest.approx(6.0)   # 1000 leaves at 1010
    assert budget.try_acquire(now=1009.5) == pytest.approx(0.5)
    assert budget.try_acquire(now=1010.0) == 0.0                  # 1000 has left
    assert budget.try_acquire(now=1010.5) == pytest.approx(0.5)   # 1001 leaves at 1011


def test_a_refused_attempt_is_not_counted(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=2, window_s=10.0, burst=2)
    budget.try_acquire(now=100.0)
    budget.try_acquire(now=101.0)

    for t in (102.0, 103.0, 104.0, 105.0):
        assert budget.try_acquire(now=t) > 0

    assert logged(tmp_path / FILE_NAME) == [100.0, 101.0]
    assert budget.try_acquire(now=110.0) == 0.0


def test_the_file_keeps_only_the_attempts_of_the_last_window(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=5, window_s=10.0, burst=5)
    for t in range(100, 160, 3):
        budget.try_acquire(now=float(t))

    assert logged(tmp_path / FILE_NAME) == [148.0, 151.0, 154.0, 157.0]   # after 147
    assert len((tmp_path / FILE_NAME).read_bytes()) < 5 * 20


def test_two_budgets_on_one_file_share_the_limit(tmp_path):
    path = tmp_path / FILE_NAME
    one = ConnectBudget(path, limit=4, window_s=60.0, burst=4)
    other = ConnectBudget(path, limit=4, window_s=60.0, burst=4)

    granted = [b.try_acquire(now=500.0 + i) == 0.0 for i, b in enumerate([one, other] * 3)]

    assert granted == [True, True, True, True, False, False]


def test_never_more_than_the_limit_in_any_window_over_a_long_random_run(tmp_path):
    rng = random.Random(20240917)
    for limit, window, burst in [(7, 30.0, None), (20, 300.0, 20), (1, 5.0, None), (50, 60.0, 10)]:
        path = tmp_path / f"{limit}-{burst}.log"
        budgets = [ConnectBudget(path, limit=limit, window_s=window, burst=burst) for _ in range(3)]
        t, grants = 10_000.0, []
        for _ in range(1500):
            t += rng.expovariate(limit / window * 3)   # asking three times faster than allowed
            if rng.choice(budgets).try_acquire(now=round(t, 6)) == 0.0:
                grants.append(round(t, 6))

        assert most_in_any_window(grants, window) <= limit
        assert len(grants) > limit  # the run was long enough to fill the window several times


def test_after_waiting_the_returned_time_the_attempt_is_granted(tmp_path):
    rng = random.Random(5)
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=10, window_s=20.0)
    t = 0.0
    grants: List[float] = []
    while len(grants) < 100:
        wait = budget.try_acquire(now=round(t, 6))
        if wait == 0.0:
            grants.append(round(t, 6))
            t += rng.random() * 0.5
        else:
            t += wait + 1e-6

    assert most_in_any_window(grants, 20.0) <= 10
    # and the budget is used, not wasted: 100 grants took about 100 / (10 per 20 s)
    assert grants[-1] - grants[0] < 100 / (10 / 20.0) + 20.0


# -- the spread: half the limit at once, then limit/window per second --------------------------

def test_a_burst_of_half_the_limit_goes_at_once_then_attempts_are_spaced(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=200, window_s=300.0)

    assert budget.burst == 100
    assert all(budget.try_acquire(now=0.0) == 0.0 for _ in range(100))
    assert budget.try_acquire(now=0.0) == pytest.approx(1.5)   # 300 s / 200 attempts
    assert budget.try_acquire(now=1.5) == 0.0
    assert budget.try_acquire(now=1.5) == pytest.approx(1.5)


def test_a_boot_of_200_workers_gets_100_at_once_and_the_rest_one_every_1_5_s(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=200, window_s=300.0)
    waiting, t, grants = 200, 0.0, []
    while waiting:
        wait = budget.try_acquire(now=round(t, 6))
        if wait == 0.0:
            grants.append(t)
            waiting -= 1
        else:
            t += wait

    assert grants.count(0.0) == 100
    assert grants[-1] == pytest.approx(150.0)
    assert min(b - a for a, b in zip(grants[100:], grants[101:])) == pytest.approx(1.5)


def test_after_the_burst_and_the_spread_the_hard_limit_holds_until_the_oldest_leave(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=4, window_s=8.0)   # burst 2, 1 per 2 s
    assert [budget.try_acquire(now=t) for t in (0.0, 0.0)] == [0.0, 0.0]
    assert budget.try_acquire(now=0.0) == pytest.approx(2.0)
    assert [budget.try_acquire(now=t) for t in (2.0, 4.0)] == [0.0, 0.0]

    assert budget.try_acquire(now=6.0) == pytest.approx(2.0)   # 4 in the window: wait for 0.0
    assert budget.try_acquire(now=8.0) == 0.0


def test_a_lone_reconnect_never_waits_while_the_window_is_mostly_free(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=200, window_s=300.0)

    assert all(budget.try_acquire(now=float(t)) == 0.0 for t in range(0, 300, 3))


# -- a damaged or missing file, clock jumps ------------------------------------------------------

def test_a_corrupt_file_is_recovered_keeping_the_lines_that_parse(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_bytes(b"100.000000\n\x00\x00garbage\nnan\n101.5\n10")   # a torn write
    budget = ConnectBudget(path, limit=3, window_s=10.0, burst=3)

    assert budget.try_acquire(now=102.0) == 0.0

    assert logged(path) == [100.0, 101.5, 102.0]   # the torn tail 10 was out of the window
    assert budget.try_acquire(now=103.0) > 0


def test_a_file_of_pure_garbage_counts_as_empty_and_is_rewritten(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_bytes(os.urandom(300).replace(b"\n", b"x"))
    budget = ConnectBudget(path, limit=2, window_s=10.0)

    assert budget.snapshot(now=50.0)["used"] == 0
    assert budget.try_acquire(now=50.0) == 0.0
    assert logged(path) == [50.0]


def test_a_missing_run_directory_is_created(tmp_path):
    path = budget_path(tmp_path / "run" / "nested")
    budget = ConnectBudget(path, limit=2, window_s=10.0)

    assert budget.try_acquire(now=1.0) == 0.0
    assert path == tmp_path / "run" / "nested" / "connect-budget.log"
    assert logged(path) == [1.0]


def test_a_deleted_file_starts_an_empty_budget(tmp_path):
    path = tmp_path / FILE_NAME
    budget = ConnectBudget(path, limit=1, window_s=10.0)
    budget.try_acquire(now=1.0)
    path.unlink()

    assert budget.try_acquire(now=2.0) == 0.0


def test_attempts_logged_in_the_future_count_as_made_now_after_the_clock_goes_back(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_text("5000.000000\n5001.000000\n")     # made before the clock went back an hour
    budget = ConnectBudget(path, limit=2, window_s=300.0, burst=2)

    assert budget.try_acquire(now=1400.0) == pytest.approx(300.0)   # not 3600 s, not 0
    assert logged(path) == [1400.0, 1400.0]
    assert budget.try_acquire(now=1700.0) == 0.0


def test_attempts_a_moment_ahead_are_kept_as_they_are(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_text("100.200000\n")
    budget = ConnectBudget(path, limit=1, window_s=10.0)

    assert budget.try_acquire(now=100.0) == pytest.approx(10.2)


# -- snapshot for status -----------------------------------------------------------------------

def test_snapshot_reports_use_and_the_wait_without_writing(tmp_path):
    path = tmp_path / FILE_NAME
    budget = ConnectBudget(path, limit=2, window_s=10.0, burst=2)
    assert budget.snapshot(now=0.0) == {"used": 0, "limit": 2, "window_s": 10.0, "burst": 2,
                                        "wait_s": 0.0, "held_until": 0.0, "held_reason": ""}
    assert not path.exists()

    budget.try_acquire(now=0.0)
    budget.try_acquire(now=4.0)
    before = path.read_bytes()

    assert budget.snapshot(now=5.0) == {"used": 2, "limit": 2, "window_s": 10.0, "burst": 2,
                                        "wait_s": pytest.approx(5.0), "held_until": 0.0,
                                        "held_reason": ""}
    assert budget.snapshot(now=12.0)["used"] == 1
    assert path.read_bytes() == before


def test_snapshot_uses_the_injected_clock(tmp_path):
    clock = Clock(300.0)
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=1, window_s=60.0, clock=clock)
    assert budget.try_acquire() == 0.0
    assert budget.last_granted_at == 300.0

    clock.now = 330.0
    assert budget.snapshot()["wait_s"] == pytest.approx(30.0)
    assert budget.try_acquire() == pytest.approx(30.0)


def test_bad_limits_are_refused(tmp_path):
    with pytest.raises(ValueError):
        ConnectBudget(tmp_path / FILE_NAME, limit=0, window_s=10.0)
    with pytest.raises(ValueError):
        ConnectBudget(tmp_path / FILE_NAME, limit=1, window_s=0.0)


# -- acquire: waits, tells the caller, stops -----------------------------------------------------

def test_acquire_takes_a_free_token_at_once_without_calling_on_wait(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=1, window_s=60.0)
    waits: List[float] = []

    assert budget.acquire(threading.Event(), waits.append) is True
    assert waits == []


def test_acquire_reports_the_wait_then_takes_the_token_when_the_window_frees(tmp_path):
    budget = ConnectBudget(tmp_path / FILE_NAME, limit=1, window_s=0.3)
    budget.try_acquire()
    waits: List[float] = []

    started = time.monotonic()
    assert budget.acquire(threading.Event(), waits.append) is True

    assert 0.2 <= time.monotonic() - started < 2.0
    assert waits and 0.0 < waits[0] <= 0.3


def test_acquire_returns_false_and_takes_nothing_when_stopping_is_set_while_waiting(tmp_path):
    path = tmp_path / FILE_NAME
    budget = ConnectBudget(path, limit=1, window_s=600.0)
    budget.try_acquire()
    stopping = threading.Event()
    waits = []

    def on_wait(seconds: float) -> None:
        waits.append(seconds)
        threading.Timer(0.05, stopping.set).start()

    started = time.monotonic()
    assert budget.acquire(stopping, on_wait) is False

    assert time.monotonic() - started < 2.0
    assert len(waits) == 1 and waits[0] == pytest.approx(600.0, abs=1.0)
    assert len(logged(path)) == 1


def test_acquire_with_stopping_already_set_takes_nothing(tmp_path):
    path = tmp_path / FILE_NAME
    budget = ConnectBudget(path, limit=5, window_s=60.0)
    stopping = threading.Event()
    stopping.set()

    assert budget.acquire(stopping, lambda s: None) is False
    assert not path.exists() or logged(path) == []


# -- real OS processes -------------------------------------------------------------------------

def _worker(path: str, attempts: int, start_at: float, out) -> None:
    budget = ConnectBudget(Path(path), limit=50, window_s=2.0)
    while time.time() < start_at:   # every process starts asking at the same moment
        time.sleep(0.001)
    grants = []
    stopping = threading.Event()
    for _ in range(attempts):
        assert budget.acquire(stopping, lambda s: None)
        grants.append(budget.last_granted_at)
    out.put(grants)


def test_six_processes_sharing_the_file_never_exceed_the_limit_in_any_window(tmp_path):
    path = tmp_path / "run" / FILE_NAME
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.3
    procs = [ctx.Process(target=_worker, args=(str(path), 20, start_at, out)) for _ in range(6)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=10) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    grants = [t for result in results for t in result]

    assert len(grants) == 120
    assert most_in_any_window(grants, 2.0) <= 50
    assert sum(1 for t in grants if t < min(grants) + 0.1) <= 25 + 3   # the burst, then spread
    assert max(grants) - min(grants) < 8.0
    assert all(p.exitcode == 0 for p in procs)


def test_a_hold_after_a_refusal_makes_every_budget_on_the_file_wait_until_it_ends(tmp_path):
    clock = [1000.0]
    a = ConnectBudget(tmp_path / "b.log", 10, 60, clock=lambda: clock[0])
    b = ConnectBudget(tmp_path / "b.log", 10, 60, clock=lambda: clock[0])
    a.hold(1030.0, "HTTP 429")
    assert b.try_acquire() == pytest.approx(30.0)
    a.hold(1010.0, "HTTP 429")  # a shorter hold never shortens the one in force
    assert b.snapshot()["held_until"] == pytest.approx(1030.0)
    assert b.snapshot()["held_reason"] == "HTTP 429"
    clock[0] = 1030.5
    assert b.try_acquire() == 0.0
    assert b.snapshot()["held_until"] == 0.0
