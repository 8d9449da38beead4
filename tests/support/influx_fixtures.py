"""pytest fixtures for a real InfluxDB 1.6.7 server and the v2-write front in front of it.

Import them into a conftest (or a test module) to use them:

    from tests.support.influx_fixtures import influx_db, influx_front, influx_server  # noqa: F401
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.influx_front import InfluxFront
from tests.support.influx_server import InfluxdNotFound, InfluxServer, find_influxd
from tests.support.procs import ON_CI

FRONT_TOKEN = "test-token-0123456789"


@dataclass
class InfluxDb:
    """A database that exists for one test only."""

    name: str
    server: InfluxServer

    def query(self, q: str, epoch: str = "ns") -> list[dict[str, Any]]:
        """InfluxQL against this database; rows as dicts (see InfluxServer.query)."""
        return self.server.query(q, db=self.name, epoch=epoch)

    def write_lines(self, body: str | bytes, precision: str = "n") -> None:
        """Setup data straight into influxd (v1 precision letters), bypassing any front."""
        self.server.write_lines(self.name, body, precision=precision)


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One influxd 1.6.7 for the whole session; skipped locally (failed on CI) without it."""
    try:
        binary = find_influxd()
    except InfluxdNotFound as exc:
        if ON_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    server = InfluxServer.start(tmp_path_factory.mktemp("influxd"), binary=binary)
    try:
        yield server
    finally:
        server.stop()


def _db_name(test_name: str) -> str:
    # Unique per test run and readable in influxd's data dir; InfluxQL-safe characters only.
    stem = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[:40]
    return f"t_{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def influx_db(influx_server: InfluxServer, request: pytest.FixtureRequest) -> Iterator[InfluxDb]:
    """A fresh database for this test, dropped afterwards."""
    db = InfluxDb(_db_name(request.node.name), influx_server)
    influx_server.create_database(db.name)
    try:
        yield db
    finally:
        influx_server.drop_database(db.name)


@pytest.fixture
def influx_front(influx_server: InfluxServer, tmp_path: Path) -> Iterator[InfluxFront]:
    """A v2-write front before the session server, requiring `Token FRONT_TOKEN`."""
    front = InfluxFront.start(tmp_path / "influx-front", influx_server.url, token=FRONT_TOKEN)
    try:
        yield front
    finally:
        front.stop()
