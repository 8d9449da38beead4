"""Capped exponential backoff with jitter: x2 per attempt, drawn from [ceiling/2, ceiling]."""
from __future__ import annotations

import random

import pytest

from workers.common.backoff import Backoff


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
