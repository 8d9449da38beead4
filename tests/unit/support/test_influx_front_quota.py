"""The front's write quota: fixed windows of uncompressed bytes, as Cloud Serverless's free plan.

A write is let in while the window's count is below the quota (then counted); once at or over
it, the answer is 429 with a Retry-After of the whole seconds left in the window, at least 1.
Windows are fixed (multiples of their length from the origin), not sliding.
"""
from __future__ import annotations

import pytest

from tests.support.influx_front.quota import (
    FixedWindowQuota,
    QuotaSpec,
    parse_duration,
    parse_quota,
    parse_size,
)


@pytest.mark.parametrize("text, expected", [
    ("5MB", 5_000_000), ("25MB", 25_000_000), ("10MiB", 10 * 1024 * 1024), ("2KB", 2000),
    ("5000", 5000), ("1.5kb", 1500), ("off", None), ("none", None), (None, None)])
def test_sizes_are_decimal_or_binary_and_off_is_none(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("5m", 300.0), ("72h", 259_200.0), ("30d", 2_592_000.0), ("1.5s", 1.5), ("5min", 300.0),
    ("off", None)])
def test_durations_are_seconds(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["5XB", "MB", "5MB/", "/5m", "5MB/5", "abc"])
def test_a_malformed_quota_is_refused_with_the_form_it_wants(bad):
    with pytest.raises(ValueError):
        parse_quota(bad)


def test_the_free_plan_quota_reads_as_5mb_per_300_seconds():
    assert parse_quota("5MB/5m") == QuotaSpec(5_000_000, 300.0)
    assert parse_quota("off") is None


def test_writes_are_let_in_until_the_window_count_reaches_the_quota():
    quota = FixedWindowQuota(QuotaSpec(1000, 300.0))

    assert quota.admit(600, now=10.0) is None
    assert quota.admit(600, now=20.0) is None  # under the quota when it came: let in
    assert quota.used_in(20.0) == 1200
    assert quota.admit(1, now=30.0) == 270  # over: wait for the window's end at 300


def test_retry_after_is_the_whole_seconds_left_and_at_least_one():
    quota = FixedWindowQuota(QuotaSpec(10, 300.0))
    quota.admit(10, now=0.0)

    assert quota.admit(1, now=100.2) == 200  # 199.8 s left: rounded up
    assert quota.admit(1, now=299.9) == 1


def test_a_new_window_starts_from_zero_and_windows_are_fixed_not_sliding():
    quota = FixedWindowQuota(QuotaSpec(100, 60.0))
    assert quota.admit(100, now=59.0) is None
    assert quota.admit(1, now=59.5) == 1

    assert quota.admit(100, now=60.0) is None  # 1 s later: a fresh window, whole quota
    assert quota.used_in(60.0) == 100 and quota.used_in(120.0) == 0


def test_windows_are_aligned_on_the_origin():
    quota = FixedWindowQuota(QuotaSpec(1, 300.0), origin=1_000.0)

    assert quota.window_end(1_000.0) == 1_300.0
    assert quota.window_end(1_299.0) == 1_300.0
    assert quota.window_end(999.0) == 1_000.0


def test_a_request_larger_than_the_quota_goes_through_alone_in_a_fresh_window():
    quota = FixedWindowQuota(QuotaSpec(1000, 300.0))

    assert quota.admit(5000, now=1.0) is None
    assert quota.admit(1, now=2.0) == 298


def test_reset_forgets_the_window():
    quota = FixedWindowQuota(QuotaSpec(10, 300.0))
    quota.admit(10, now=1.0)
    quota.reset()

    assert quota.admit(10, now=2.0) is None
