"""pytest fixtures for a real InfluxDB 1.6.7 server and the v2-write front in front of it.

Import them into a conftest (or a test module) to use them:

    from tests.support.influx_fixtures import influx_db, influx_front, influx_server  # noqa: F401

`front_for(flavor, **limits)` gives a front speaking one server's dialect
(tests/support/influx_front/dialects.py), started on first use and kept for the module, reset
(faults, stats, quota window) for each test; its token is `flavor_token(flavor)`.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest

from tests.support.influx_front import InfluxFront
from tests.support.influx_server import InfluxdNotFound, InfluxServer, find_influxd
from tests.support.procs import ON_CI

FRONT_TOKEN = "test-token-0123456789"
FLAVOR_TOKEN = "flavor-token-0123"
FLAVOR_TOKENS = {"1.8": "tester:" + FLAVOR_TOKEN}  # 1.8 with auth on: `Token user:password`
FLAVORS = ("lenient", "1.8", "2.7", "3core", "serverless")
SERVERS = FLAVORS[1:]  # the flavors that are a server our users run
FrontKey = Tuple[str, Tuple[Tuple[str, str], ...]]
FrontFor = Callable[..., InfluxFront]


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


def flavor_token(flavor: str) -> str:
    """The token a `front_for(flavor)` front takes (and a worker on it is given)."""
    return FLAVOR_TOKENS.get(flavor, FLAVOR_TOKEN)


@pytest.fixture(scope="module")
def flavored_fronts(influx_server: InfluxServer) -> Iterator[Dict[FrontKey, InfluxFront]]:
    """Fronts started on first use and kept for the module, one per flavor and options."""
    started: Dict[FrontKey, InfluxFront] = {}
    yield started
    for front in started.values():
        front.stop()


@pytest.fixture
def front_for(flavored_fronts: Dict[FrontKey, InfluxFront], influx_server: InfluxServer,
              tmp_path_factory: pytest.TempPathFactory) -> FrontFor:
    """`front_for("3core", retention="30d")`: that flavor's front, reset for this test."""
    def get(flavor: str, **options: Any) -> InfluxFront:
        key = (flavor, tuple(sorted(options.items())))
        if key not in flavored_fronts:
            flavored_fronts[key] = InfluxFront.start(
                tmp_path_factory.mktemp(f"front-{flavor}"), influx_server.url,
                token=flavor_token(flavor), flavor=flavor, **options)
        front = flavored_fronts[key]
        front.reset()
        return front
    return get
