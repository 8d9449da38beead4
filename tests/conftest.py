"""Shared fixtures: the real servers every integration test runs against.

- influx_server / influx_db / influx_front: Debian's InfluxDB 1.6.7 in a temp dir, a fresh
  database per test, and the v2-write front that injects faults (tests/support/influx_*.py).
- exchange_sim: starts Binance simulators as subprocesses (tests/support/exchange/).
- stop_workers (automatic): no worker process outlives its test.
A missing InfluxDB skips locally and fails on CI (CI set in the environment).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.support import workerproc

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
