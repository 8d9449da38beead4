"""Shared fixtures: the real servers every integration test runs against.

- influx_server / influx_db / influx_front: Debian's InfluxDB 1.6.7 in a temp dir, a fresh
  database per test, and the v2-write front that injects faults (tests/support/influx_*.py).
- exchange_sim: starts Binance simulators as subprocesses (tests/support/exchange/).
- refused_url: an http:// URL on 127.0.0.1 that refuses connections (an InfluxDB that is down).
- stop_workers (automatic): no worker process outlives its test.
- the specs marked `slow` run first (pytest_collection_modifyitems).
A missing InfluxDB skips locally and fails on CI (CI set in the environment).
"""
from __future__ import annotations

from typing import Iterator, List

import pytest

from tests.support import workerproc
from tests.support.procs import refusing_port

pytest_plugins = (
    "tests.support.influx_fixtures",
    "tests.support.exchange.fixtures",
)


@pytest.fixture(autouse=True)
def stop_workers() -> Iterator[None]:
    """Stop every worker a test started, whatever the test did or where it failed."""
    yield
    while workerproc.STARTED:
        workerproc.STARTED.pop().stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """http://127.0.0.1:PORT where nothing answers, and nothing can start, during the test."""
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}"


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """The specs marked `slow` first, each group in its collected order. pytest-xdist hands
    the tests out in this order, so the long scenarios start at once on every worker and the
    short ones fill in around them; in collected order the longest came last (test_zero_gap.py)
    and the run ended with one worker alone on a two-minute spec."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
