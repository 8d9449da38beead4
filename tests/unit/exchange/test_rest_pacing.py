"""REST pacing by the IP's used weight: a lone backfill uses most of the exchange's allowance
and never passes it; several workers split the headroom without talking to each other.

A discrete simulation of workers that each pause `pace_s` before every 25-weight page, over a
rolling 60 s window of 6,000 weight (Binance's REQUEST_WEIGHT per IP, binance.md 4.1).
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import Deque, List, Tuple

import pytest

from workers.exchange.rest import PACE_CEILING, PACE_OVER_S, WEIGHT_LIMIT_1M, pace_s

PAGE_WEIGHT = 25
CEILING_TRADES_S = WEIGHT_LIMIT_1M / 60 / PAGE_WEIGHT * 1000  # 4,000 trades/s


def simulate(workers: int, seconds: float = 600.0, request_s: float = 0.05) -> Tuple[float, float]:
    """(peak share of the IP's weight, trades/s over the second half) for `workers` clients
    backfilling at once, each seeing the IP's weight in its own answers."""
    window: Deque[Tuple[float, int]] = deque()
    used = 0
    own: List[Deque[float]] = [deque() for _ in range(workers)]
    peak, late_pages = 0.0, 0
    due = [(0.0, w) for w in range(workers)]
    heapq.heapify(due)
    while due:
        now, w = heapq.heappop(due)
        if now > seconds:
            break
        while window and window[0][0] <= now - 60:
            used -= window.popleft()[1]
        while own[w] and own[w][0] <= now - 60:
            own[w].popleft()
        window.append((now, PAGE_WEIGHT))
        used += PAGE_WEIGHT
        own[w].append(now)
        share = used / WEIGHT_LIMIT_1M
        peak = max(peak, share)
        late_pages += now >= seconds / 2
        own_share = (len(own[w]) + 1) * PAGE_WEIGHT / (used + PAGE_WEIGHT)
        heapq.heappush(due, (now + request_s + pace_s(share, own_share, PAGE_WEIGHT), w))
    return peak, late_pages * 1000 / (seconds / 2)


def test_a_lone_backfill_uses_at_least_80_percent_of_the_allowance_and_never_passes_it():
    peak, rate = simulate(1)
    assert rate >= 0.80 * CEILING_TRADES_S
    assert peak < 1.0


def test_two_workers_backfilling_at_once_stay_under_the_limit_together():
    peak, rate = simulate(2)
    assert peak < 1.0
    assert rate >= 0.80 * CEILING_TRADES_S


def test_nothing_is_paused_with_headroom_and_everything_at_the_ceiling():
    assert pace_s(0.0, 1.0, PAGE_WEIGHT) < 0.01
    assert pace_s(PACE_CEILING, 1.0, PAGE_WEIGHT) == PACE_OVER_S
    assert pace_s(2.0, 1.0, PAGE_WEIGHT) == PACE_OVER_S


@pytest.mark.parametrize("share", [0.3, 0.6, 0.8, 0.89])
def test_a_client_with_a_smaller_part_of_the_used_weight_waits_longer(share):
    assert pace_s(share, 0.2, PAGE_WEIGHT) > pace_s(share, 1.0, PAGE_WEIGHT)
    assert pace_s(share, 1.0, PAGE_WEIGHT) < pace_s(share + 0.01, 1.0, PAGE_WEIGHT)
