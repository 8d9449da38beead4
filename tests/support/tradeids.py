"""Compare the trade ids stored in InfluxDB with the simulator's ledger: the exactly-once check."""
from __future__ import annotations

import time
from typing import Callable, Iterable, List, Set, Tuple


def ranges(ids: Iterable[int]) -> List[Tuple[int, int]]:
    """Sorted ids folded into inclusive ranges: [1,2,3,7] -> [(1,3),(7,7)]."""
    out: List[Tuple[int, int]] = []
    for i in sorted(set(ids)):
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def describe_difference(expected: Set[int], stored: List[int]) -> str:
    stored_set = set(stored)
    missing = ranges(expected - stored_set)
    extra = ranges(stored_set - expected)
    dupes = len(stored) - len(stored_set)
    return (f"expected {len(expected)} ids, stored {len(stored)} points ({len(stored_set)} "
            f"distinct); missing ranges {missing[:10]}{'...' if len(missing) > 10 else ''}; "
            f"unexpected ranges {extra[:10]}; duplicate points {dupes}")


def wait_for_exact_ids(expected: Set[int], read_stored: Callable[[], List[int]],
                       timeout: float) -> List[int]:
    """Wait until the stored ids are exactly `expected`, each once; AssertionError otherwise."""
    deadline = time.monotonic() + timeout
    stored: List[int] = []
    while True:
        stored = read_stored()
        if len(stored) == len(expected) and set(stored) == expected:
            return stored
        if time.monotonic() >= deadline:
            raise AssertionError("stored trade ids differ from the ledger after "
                                 f"{timeout:.0f}s: {describe_difference(expected, stored)}")
        time.sleep(0.5)
