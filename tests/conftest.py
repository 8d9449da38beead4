"""Shared fixtures: the real servers every integration test runs against.

- influx_server / influx_db / influx_front: Debian's InfluxDB 1.6.7 in a temp dir, a fresh
  database per test, and the v2-write front that injects faults (tests/support/influx_*.py).
- exchange_sim: starts Binance simulators as subprocesses (tests/support/exchange/).
A missing InfluxDB skips locally and fails on CI (CI set in the environment).
"""
pytest_plugins = (
    "tests.support.influx_fixtures",
    "tests.support.exchange.fixtures",
)
