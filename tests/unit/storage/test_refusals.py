"""Sorting out what InfluxDB refused of a batch: the refused lines are found by writing parts
again, set aside in rejected.lp with their reasons, and the outcome says what was stored, what
was refused and where it went. A failure of another kind sets nothing aside.

Against a fake server (a `send` that refuses lines as InfluxDB 1.x does); tests/unit/
test_writer.py specifies how the writer counts and retries around it, and tests/integration/
test_partial_writes.py runs it against a real InfluxDB.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional

import pytest

from workers.errors import ContentRefused, PartialWrite, RetryableWriteError
from workers.health import Stats
from workers.settings import InfluxSettings
from workers.storage import refusals
from workers.storage.refusals import Outcome, Refusals
from workers.storage.sink import classify_status
from workers.storage.spool import Spool

INFLUX = InfluxSettings(url="http://influx:8086", token="tok", org="o", bucket="ticks",
                        measurement="price_ticks", health_measurement="streamer_health",
                        timeout_s=10.0, gzip=False)
CONFLICT = ('field type conflict: input field "price" on measurement "price_ticks" is type '
            'string, already exists as type float')
RETENTION = "points beyond retention policy"


def trade(symbol: str, i: int) -> str:
    return f"price_ticks,symbol={symbol} price=1.0,trade_id={i}i {i}"


def health(i: int) -> str:
    return f"streamer_health,worker=w received={i}i {i}"


class Server:
    """`send` of the writer: stores the lines `refuse` has no reason for, answers as 1.x does
    (400 "partial write: <first reason> dropped=N"), or `fail` for every request."""

    def __init__(self, refuse: Callable[[str], Optional[str]]) -> None:
        self.refuse = refuse
        self.requests: List[str] = []
        self.stored: List[str] = []
        self.fail: Optional[Exception] = None

    def send(self, body: str) -> Optional[Exception]:
        self.requests.append(body)
        if self.fail is not None:
            return self.fail
        lines = body.split("\n")
        reasons = [why for why in map(self.refuse, lines) if why]
        self.stored.extend(line for line in lines if not self.refuse(line))
        return partial(reasons[0], len(reasons)) if reasons else None

    def first_answer(self, body: str) -> PartialWrite:
        answer = self.send(body)
        assert isinstance(answer, PartialWrite)
        self.requests.clear()
        return answer


def partial(reason: str, dropped: int) -> PartialWrite:
    error = classify_status(400, f'{{"error": "partial write: {reason} dropped={dropped}"}}',
                            None, INFLUX)
    assert isinstance(error, PartialWrite)
    return error


@pytest.fixture
def spool(tmp_path) -> Spool:
    return Spool(tmp_path / "w" / "spool", "ticks", "w")


def refusals_of(server: Server, spool: Optional[Spool], stats: Optional[Stats] = None):
    return Refusals("w", server.send, spool, stats or Stats())


def point_lines(outcome: Outcome) -> List[str]:
    assert outcome.path is not None
    return [line for line in outcome.path.read_text().splitlines()
            if line and not line.startswith("#")]


def test_the_refused_run_of_a_partial_write_is_found_and_set_aside(spool):
    lines = [trade("AAA", i) for i in range(1, 65)]
    old = set(lines[:5])  # beyond the retention cut-off: a run at the start
    server = Server(lambda line: RETENTION if line in old else None)
    body = "\n".join(lines)
    stats = Stats()

    outcome = refusals_of(server, spool, stats).sort_out(body, server.first_answer(body))

    assert outcome.settled and outcome.failure is None
    assert outcome.lines == 64 and outcome.stored == 59
    assert (outcome.refused_lines, outcome.refused_trades) == (5, 5)
    assert outcome.path == spool.rejected_path
    assert sorted(point_lines(outcome)) == sorted(old)
    assert {group.key for group in outcome.refused} == {f"partial write: {RETENTION}"}
    assert 0 < outcome.extra_requests <= 1 + 4 * 6
    assert set(server.stored) == set(lines) - old
    assert (stats.rejected_lines, stats.rejected_trades) == (5, 5)


def test_a_group_refused_whole_is_set_aside_without_a_further_request(spool):
    lines = [trade("AAA", i) for i in range(1, 9)] + [health(1), health(2)]
    server = Server(lambda line: CONFLICT if line.startswith("price_ticks") else None)
    body = "\n".join(lines)

    outcome = refusals_of(server, spool).sort_out(body, server.first_answer(body))

    # one request per measurement, none to split the trades (dropped == their count)
    assert len(server.requests) == 2 and outcome.extra_requests == 2
    assert (outcome.refused_lines, outcome.refused_trades) == (8, 8)
    assert outcome.stored == 2
    (group,) = outcome.refused
    assert group.key == refusals.reason_key(group.reason)
    assert group.note.startswith("rejected by InfluxDB (400): partial write: field type")


def test_lines_not_sorted_out_within_the_bound_are_set_aside_as_may_be_stored(spool,
                                                                             monkeypatch):
    monkeypatch.setattr(refusals, "SPLIT_REQUESTS_PER_LEVEL", 1)
    lines = [trade("AAA", i) for i in range(1, 33)]
    scattered = set(lines[::3])  # refusals that form no run: bisection needs many requests
    server = Server(lambda line: RETENTION if line in scattered else None)
    body = "\n".join(lines)

    outcome = refusals_of(server, spool).sort_out(body, server.first_answer(body))

    assert outcome.settled and outcome.extra_requests == 1 + 5
    unsettled = [g for g in outcome.refused if g.key.startswith(refusals.UNSETTLED)]
    assert len(unsettled) == 1 and "may or may not be stored" in unsettled[0].note
    assert scattered <= set(point_lines(outcome))  # every refused line is in the file


def test_a_rewrite_failing_otherwise_sets_nothing_aside_and_carries_the_failure(spool):
    lines = [trade("AAA", 1), health(1)]
    server = Server(lambda line: RETENTION if "AAA" in line else None)
    body = "\n".join(lines)
    first = server.first_answer(body)
    busy = RetryableWriteError("InfluxDB answered 503", 503)
    server.fail = busy
    stats = Stats()

    outcome = refusals_of(server, spool, stats).sort_out(body, first)

    assert outcome.failure is busy and not outcome.settled
    assert outcome.refused == [] and outcome.path is None
    assert not spool.rejected_path.exists()
    assert stats.rejected_lines == 0


def test_a_batch_refused_whole_for_its_content_is_set_aside_with_the_servers_reason(spool):
    error = classify_status(413, "", None, INFLUX)
    assert isinstance(error, ContentRefused)
    lines = [trade("AAA", 1), trade("AAA", 2), health(1)]

    outcome = refusals_of(Server(lambda _: None), spool).refused_whole("\n".join(lines), error)

    assert outcome.settled and outcome.stored == 0
    assert (outcome.refused_lines, outcome.refused_trades) == (3, 2)
    assert point_lines(outcome) == lines
    assert "# " in outcome.path.read_text() and "request too large (413)" in \
        outcome.path.read_text()


def test_without_a_spool_nothing_can_be_set_aside_and_the_batch_is_not_settled():
    error = classify_status(400, '{"error": "bad"}', None, INFLUX)
    assert isinstance(error, ContentRefused)

    outcome = refusals_of(Server(lambda _: None), None).refused_whole("m x=1 1", error)

    assert not outcome.settled and outcome.path is None and outcome.failure is None


def test_a_rejected_file_that_cannot_be_written_settles_nothing_and_counts_nothing(
        spool, monkeypatch):
    def disk_full(_groups):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "reject", disk_full)
    error = classify_status(400, '{"error": "bad"}', None, INFLUX)
    assert isinstance(error, ContentRefused)
    stats = Stats()

    outcome = refusals_of(Server(lambda _: None), spool, stats).refused_whole("m x=1 1", error)

    assert not outcome.settled and outcome.path is None
    assert stats.rejected_lines == 0 and "rejected.lp" in stats.last_error


def test_each_reason_is_logged_once_with_its_fix(spool, caplog):
    server = Server(lambda line: CONFLICT if line.startswith("price_ticks") else None)
    sorter = refusals_of(server, spool)
    for i in (1, 3):
        body = "\n".join([trade("AAA", i), trade("AAA", i + 1), health(i)])
        sorter.sort_out(body, server.first_answer(body))

    said = [r for r in caplog.records if "event=lines_rejected " in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR
    assert "INFLUXDB_MEASUREMENT" in said[0].getMessage()
