"""workers/common/timefmt.py: the one way times are written (and read back) in UTC."""
from __future__ import annotations

import re
import time

import pytest

from workers.common.timefmt import file_stamp, iso_millis, iso_seconds, parse_time

AT = 1_764_478_800  # 2025-11-30T05:00:00Z


def test_iso_seconds_is_the_form_of_log_lines_and_status_files():
    assert iso_seconds(AT) == "2025-11-30T05:00:00Z"
    assert iso_seconds(AT + 0.999) == "2025-11-30T05:00:00Z"  # the fraction is dropped


def test_iso_seconds_without_a_time_is_now():
    before = time.time()
    text = iso_seconds()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)
    assert int(before) <= parse_time(text) // 1_000_000_000 <= time.time()


def test_iso_millis_is_a_stored_trades_time():
    assert iso_millis(AT * 1_000_000_000 + 42_000_000) == "2025-11-30T05:00:00.042Z"
    assert iso_millis(AT * 1_000_000_000) == "2025-11-30T05:00:00.000Z"


def test_iso_millis_never_rounds_into_the_next_second():
    # As a float, AT.999999999 s is AT + 1 s: the integer maths keeps the second it is in.
    assert iso_millis(AT * 1_000_000_000 + 999_999_999) == "2025-11-30T05:00:00.999Z"


def test_file_stamp_is_compact_for_file_names():
    assert file_stamp(AT) == "20251130T050000Z"
    assert re.fullmatch(r"\d{8}T\d{6}Z", file_stamp())


def test_what_is_written_reads_back():
    assert parse_time(iso_seconds(AT)) == AT * 1_000_000_000
    ns = AT * 1_000_000_000 + 42_000_000
    assert parse_time(iso_millis(ns)) == ns


def test_relative_times_count_back_from_now():
    assert abs(parse_time("2h") / 1e9 - (time.time() - 7200)) < 5


def test_a_time_it_cannot_read_names_every_accepted_form_with_an_example():
    """`--since yesterday` (issue 21.9): the error lists what would have worked."""
    for text in ("yesterday", "1w", "1.5h", "-2h", "", "2026-13-01"):
        with pytest.raises(ValueError) as info:
            parse_time(text)
        message = str(info.value)
        assert repr(text) in message
        for example in ("90s", "30m", "24h", "7d", "2026-11-24", "2026-11-24T00:00:00Z",
                        "2026-11-24T02:00:00+02:00"):
            assert example in message, (text, message)
    with pytest.raises(ValueError, match="month must be in 1..12"):  # and why, when known
        parse_time("2026-13-01")


def test_the_error_names_the_option_when_told():
    with pytest.raises(ValueError, match=r"^--since 'yesterday' is not a time"):
        parse_time("yesterday", "--since")


def test_every_accepted_form_reads():
    assert parse_time("2026-11-24") == parse_time("2026-11-24T00:00:00Z")
    assert parse_time("2026-11-24T02:00:00+02:00") == parse_time("2026-11-24T00:00:00Z")
    assert parse_time("2026-11-24T00:00:00") == parse_time("2026-11-24T00:00:00Z")  # no zone: UTC
    for span, seconds in (("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)):
        assert abs(parse_time(span) / 1e9 - (time.time() - seconds)) < 5
