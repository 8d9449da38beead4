"""load-files' writes: the worker's batch retries (workers/storage/writer.py `batch_backoff`) on a
fake clock: retried with growing delays, Retry-After honoured, given up when the budget is spent
or InfluxDB refuses the token, a content refusal left to the caller; and a file's batches that
InfluxDB refuses whole (2.7, 3 Core) sorted out as the worker does, only the refused lines set
aside in the worker's rejected.lp."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pytest

from tests.support.clock import FakeClock
from workers.errors import ContentRefused, LoadFailed, RetryableWriteError
from workers.settings import InfluxSettings, WriteSettings
from workers.storage.retry_write import write_with_retries
from workers.storage.sink import classify_status
from workers.tools.load_files import load_file, refusals_for

INFLUX = InfluxSettings(url="http://influx:8086", token="tok", org="acme", bucket="ticks",
                        measurement="price_ticks", health_measurement="streamer_health",
                        timeout_s=10.0, gzip=False)
WRITE = WriteSettings(batch_size=100, flush_interval_s=1.0, retry_initial_s=1.0,
                      retry_max_delay_s=4.0, retry_budget_s=10.0, queue_batches=4)
BUSY = classify_status(503, "service unavailable", None, INFLUX)


class FailingSink:
    """Fails with `errors` in turn (then every time with `always`, if set), else stores."""

    def __init__(self, *errors: Exception, always: Optional[Exception] = None) -> None:
        self.errors = list(errors)
        self.always = always
        self.stored: List[str] = []
        self.tries = 0

    def write(self, body: str) -> None:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)
        if self.always is not None:
            raise self.always
        self.stored.append(body)

    def close(self) -> None:
        pass


def test_a_busy_server_is_tried_again_with_growing_delays_until_it_takes_the_batch():
    clock, sink = FakeClock(), FailingSink(BUSY, BUSY)

    write_with_retries(sink, "a b=1 1", WRITE, clock)

    assert sink.stored == ["a b=1 1"]
    first, second = clock.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0


def test_the_servers_retry_after_is_waited_at_least():
    clock = FakeClock()
    sink = FailingSink(classify_status(429, "slow down", 3.5, INFLUX))

    write_with_retries(sink, "a b=1 1", WRITE, clock)

    assert clock.sleeps[0] >= 3.5 and sink.stored


def test_loading_stops_when_the_retry_budget_is_spent():
    clock, sink = FakeClock(), FailingSink(always=BUSY)

    with pytest.raises(LoadFailed, match="WRITE_RETRY_BUDGET_S=10"):
        write_with_retries(sink, "a b=1 1", WRITE, clock)

    assert sink.tries >= 2
    assert sum(clock.sleeps) <= WRITE.retry_budget_s


def test_a_refused_token_stops_loading_at_once():
    clock = FakeClock()
    sink = FailingSink(classify_status(401, "unauthorized", None, INFLUX))

    with pytest.raises(LoadFailed):
        write_with_retries(sink, "a b=1 1", WRITE, clock)

    assert sink.tries == 1 and clock.sleeps == []


def test_a_batch_refused_for_its_content_is_left_to_the_caller():
    refusal = classify_status(400, '{"error":"unable to parse \'x\'"}', None, INFLUX)
    assert isinstance(refusal, ContentRefused)
    sink = FailingSink(refusal)

    with pytest.raises(ContentRefused):
        write_with_retries(sink, "x", WRITE, FakeClock())

    assert sink.tries == 1


# -- saying at once what it waits for (issue 21.9: silent for a minute with InfluxDB down) --------

UNREACHABLE = RetryableWriteError("InfluxDB at http://influx:8086 unreachable: [Errno 111] "
                                  "Connection refused")


def test_the_first_failed_attempt_says_at_once_what_failed_and_how_long_it_keeps_trying():
    notices: List[str] = []
    sink = FailingSink(always=UNREACHABLE)

    with pytest.raises(LoadFailed):
        write_with_retries(sink, "a b=1 1", WRITE, FakeClock(), notices.append)

    assert sink.tries >= 2
    assert notices == ["InfluxDB at http://influx:8086 unreachable: [Errno 111] Connection "
                       "refused; retrying until WRITE_RETRY_BUDGET_S=10 s have passed "
                       "(Ctrl-C stops)"]


def test_a_server_that_answers_again_is_said_to_and_loading_goes_on():
    notices: List[str] = []
    sink = FailingSink(UNREACHABLE, UNREACHABLE)

    write_with_retries(sink, "a b=1 1", WRITE, FakeClock(), notices.append)

    assert sink.stored == ["a b=1 1"]
    assert len(notices) == 2 and notices[0].startswith("InfluxDB at http://influx:8086 unreach")
    assert notices[1] == "InfluxDB took the batch after 2 failed attempts: loading goes on"


def test_a_write_that_succeeds_at_once_says_nothing():
    notices: List[str] = []

    write_with_retries(FailingSink(), "a b=1 1", WRITE, FakeClock(), notices.append)

    assert notices == []


# -- a batch refused whole: only its refused lines set aside (issue 19, load-files) -------------

WHOLE = classify_status(400, '{"code": "invalid", "message": "unable to parse \'oops\'"}', None,
                        INFLUX)


class WholeBatchServer:
    """Refuses a whole body when a line of it holds `oops`, as 2.7 and 3 Core do; else stores."""

    def __init__(self) -> None:
        self.stored: List[str] = []
        self.requests = 0

    def write(self, body: str) -> None:
        self.requests += 1
        lines = body.split("\n")
        if any("oops" in line for line in lines):
            raise WHOLE
        self.stored.extend(lines)

    def close(self) -> None:
        pass


def lp_file_of(tmp_path: Path, lines: List[str]) -> Path:
    path = tmp_path / "lp" / "btcusdt" / "btcusdt-20261124T100000Z.lp"
    path.parent.mkdir(parents=True)
    path.write_text("# DML\n# CONTEXT-DATABASE: ticks\n" + "".join(f"{ln}\n" for ln in lines))
    return path


def test_a_batch_refused_whole_sets_aside_only_its_refused_lines_and_loads_the_rest(tmp_path):
    assert isinstance(WHOLE, ContentRefused) and WHOLE.status == 400
    lines = [f"price_ticks,symbol=BTCUSDT price=1.5,trade_id={i}i {i}" for i in range(1, 301)]
    bad = (7, 150, 299)
    for i in bad:
        lines[i] = f"price_ticks,symbol=BTCUSDT price=oops,trade_id={i}i {i + 1}"
    path = lp_file_of(tmp_path, lines)
    server = WholeBatchServer()
    refusals = refusals_for("btcusdt", tmp_path / "data", "ticks", server, WRITE)

    result = load_file(path, server, WRITE, refusals=refusals)

    assert result.problem == "" and result.points == 300 and result.set_aside == 3
    path = tmp_path / "data" / "btcusdt" / "rejected.lp"
    assert result.rejected == path
    rejected = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert rejected == [lines[i] for i in bad]
    assert sorted(server.stored) == sorted(set(lines) - set(rejected))
    assert not (tmp_path / "data" / "btcusdt" / "spool").exists()  # the worker's: not opened


def test_without_refusals_a_refused_batch_stops_the_file_with_its_line_range(tmp_path):
    lines = [f"price_ticks,symbol=BTCUSDT price=1.5,trade_id={i}i {i}" for i in range(1, 251)]
    lines[120] = "price_ticks,symbol=BTCUSDT price=oops 121"

    result = load_file(lp_file_of(tmp_path, lines), WholeBatchServer(), WRITE)

    assert result.points == 100 and result.set_aside == 0
    assert result.problem.startswith("InfluxDB refused points 101...200 of the file: ")
