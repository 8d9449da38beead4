"""load-files' writes: the worker's batch retries (workers/storage/writer.py `batch_backoff`) on a
fake clock: retried with growing delays, Retry-After honoured, given up when the budget is spent
or InfluxDB refuses the token, a content refusal left to the caller."""
from __future__ import annotations

from typing import List, Optional

import pytest

from tests.support.clock import FakeClock
from workers.errors import ContentRefused, LoadFailed, RetryableWriteError
from workers.settings import InfluxSettings, WriteSettings
from workers.storage.retry_write import write_with_retries
from workers.storage.sink import classify_status

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
