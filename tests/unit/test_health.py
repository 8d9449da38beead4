"""The worker's counters (workers/health.py): the bytes sent per fixed window of the quota."""
from __future__ import annotations

from workers.health import Stats, counters

WINDOW_START = 1_700_000_100.0  # a multiple of 300: windows are aligned to the epoch


def test_bytes_add_up_within_a_window_aligned_to_the_epoch():
    stats = Stats()

    stats.count_sent(1000, 6, WINDOW_START + 1)
    stats.count_sent(500, 3, WINDOW_START + 299.9)

    assert stats.quota_window_start == WINDOW_START
    assert stats.quota_window_bytes == 1500
    assert (stats.sent_bytes, stats.sent_lines) == (1500, 9)


def test_the_window_rolls_over_at_each_5_minute_boundary():
    stats = Stats()
    stats.count_sent(1000, 6, WINDOW_START + 299.9)

    stats.count_sent(700, 4, WINDOW_START + 300.0)  # the next window: counted from zero
    assert (stats.quota_window_start, stats.quota_window_bytes) == (WINDOW_START + 300, 700)

    stats.count_sent(10, 1, WINDOW_START + 1200.5)  # windows with nothing sent are skipped
    assert (stats.quota_window_start, stats.quota_window_bytes) == (WINDOW_START + 1200, 10)
    assert (stats.sent_bytes, stats.sent_lines) == (1710, 11)  # the totals never roll


def test_the_window_has_the_length_the_writer_set():
    stats = Stats(quota_window_s=60.0)

    stats.count_sent(100, 1, WINDOW_START + 59)
    stats.count_sent(100, 1, WINDOW_START + 61)

    assert (stats.quota_window_start, stats.quota_window_bytes) == (WINDOW_START + 60, 100)


def test_the_status_file_carries_the_window_and_the_totals():
    stats = Stats()
    stats.count_sent(1234, 7, WINDOW_START + 5)

    status = counters(stats)

    assert status["quota_window_s"] == 300.0
    assert status["quota_window_start"] == WINDOW_START
    assert status["quota_window_bytes"] == 1234
    assert (status["sent_bytes"], status["sent_lines"]) == (1234, 7)
