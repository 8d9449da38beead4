"""Capped exponential backoff with jitter: x2 per attempt, drawn from [ceiling/2, ceiling]; an
operation's budget on the Backoff's clock; the real clock, and the fake one specs drive."""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.support.clock import FakeClock
from workers.common.backoff import SYSTEM_CLOCK, Backoff


class FixedRandom:
    """A stand-in for random.Random that always draws the same value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_lowest_draw_is_half_the_ceiling_which_doubles_each_attempt():
    backoff = Backoff(1.0, 100.0, rng=FixedRandom(0.0))

    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_highest_draw_is_the_ceiling():
    backoff = Backoff(0.5, 100.0, rng=FixedRandom(1.0))

    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_ceiling_is_capped_at_the_maximum():
    backoff = Backoff(1.0, 8.0, rng=FixedRandom(1.0))

    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 8, 8, 8]


def test_every_delay_lies_within_half_ceiling_and_ceiling_even_after_many_attempts():
    backoff = Backoff(0.5, 30.0, rng=random.Random(7))

    for attempt in range(100):
        ceiling = min(30.0, 0.5 * 2 ** attempt)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_the_delays_of_many_clients():
    delays = {round(Backoff(1.0, 30.0, rng=random.Random(seed)).next_delay(), 6)
              for seed in range(50)}

    assert len(delays) > 40


def test_retry_after_is_honoured_as_a_lower_bound():
    backoff = Backoff(1.0, 30.0, rng=FixedRandom(0.0))

    assert backoff.next_delay(at_least=120.0) == 120.0  # beyond the cap too


def test_a_small_retry_after_does_not_shorten_the_delay():
    backoff = Backoff(4.0, 30.0, rng=FixedRandom(1.0))

    assert backoff.next_delay(at_least=1.0) == 4.0


def test_retry_after_still_counts_as_an_attempt():
    backoff = Backoff(1.0, 30.0, rng=FixedRandom(1.0))

    backoff.next_delay(at_least=60.0)

    assert backoff.attempts == 1
    assert backoff.next_delay() == 2.0


def test_reset_starts_again_from_the_initial_delay():
    backoff = Backoff(1.0, 30.0, rng=FixedRandom(1.0))
    for _ in range(4):
        backoff.next_delay()

    backoff.reset()

    assert backoff.attempts == 0
    assert backoff.next_delay() == 1.0


@pytest.mark.parametrize("initial, maximum", [(0, 10), (-1, 10), (5, 1)])
def test_nonsense_limits_are_refused(initial, maximum):
    with pytest.raises(ValueError):
        Backoff(initial, maximum)


def test_initial_equal_to_maximum_is_allowed():
    backoff = Backoff(2.0, 2.0, rng=FixedRandom(1.0))

    assert [backoff.next_delay() for _ in range(3)] == [2.0, 2.0, 2.0]


# -- the budget of one operation, on the clock the Backoff was given -------------------------

def test_without_a_budget_every_wait_fits():
    backoff = Backoff(1.0, 30.0, clock=FakeClock())

    assert backoff.fits(10 ** 9)


def test_a_wait_fits_while_it_ends_within_the_budget_counted_from_creation():
    clock = FakeClock()
    backoff = Backoff(1.0, 30.0, budget_s=10.0, clock=clock)

    assert backoff.fits(10.0)
    clock.advance(7.0)
    assert backoff.fits(3.0)
    assert not backoff.fits(3.5)


def test_reset_starts_the_delays_afresh_but_not_the_budget():
    clock = FakeClock()
    backoff = Backoff(1.0, 30.0, FixedRandom(1.0), budget_s=10.0, clock=clock)
    backoff.next_delay()
    clock.advance(9.0)

    backoff.reset()

    assert backoff.next_delay() == 1.0
    assert not backoff.fits(1.5)


# -- the real clock ------------------------------------------------------------------------------

def test_the_system_clock_reads_the_real_clocks():
    before_mono, before_wall = time.monotonic(), time.time()

    assert before_mono <= SYSTEM_CLOCK.monotonic() <= time.monotonic()
    assert before_wall <= SYSTEM_CLOCK.time() <= time.time()


def test_a_system_sleep_returns_false_when_it_ran_its_course():
    started = time.monotonic()

    assert SYSTEM_CLOCK.sleep(0.02) is False
    assert SYSTEM_CLOCK.sleep(0.02, threading.Event()) is False
    assert time.monotonic() - started >= 0.04


def test_a_system_sleep_ends_early_and_says_so_when_stopping_is_set():
    stopping = threading.Event()
    threading.Timer(0.05, stopping.set).start()
    started = time.monotonic()

    assert SYSTEM_CLOCK.sleep(30.0, stopping) is True
    assert time.monotonic() - started < 5.0


def test_a_negative_sleep_is_no_sleep():
    assert SYSTEM_CLOCK.sleep(-1.0) is False
    assert SYSTEM_CLOCK.sleep(-1.0, threading.Event()) is False


# -- the fake clock the specs use (tests/support/clock.py) ---------------------------------------

def test_the_fake_clock_moves_only_when_slept_on_and_records_each_wait():
    clock = FakeClock()
    start, wall_start = clock.monotonic(), clock.time()

    assert clock.sleep(2.5) is False
    clock.advance(1.0)

    assert clock.monotonic() - start == 3.5
    assert clock.time() - wall_start == 3.5
    assert clock.sleeps == [2.5]


def test_a_fake_sleep_ends_at_a_timer_that_sets_stopping():
    clock = FakeClock()
    stopping = threading.Event()
    clock.call_later(0.3, stopping.set)
    start = clock.monotonic()

    assert clock.sleep(30.0, stopping) is True
    assert clock.monotonic() - start == pytest.approx(0.3)
