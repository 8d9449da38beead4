"""The days and pairs scripts/history and scripts/verify may ask the archive for."""
from __future__ import annotations

from datetime import date

import pytest

from workers.errors import ConfigError
from workers.history.days import archive_span, check_symbols, parse_day

TODAY = date(2026, 12, 3)


@pytest.mark.parametrize("first,last,said", [
    ("2026-12-03", "2026-12-03", "is today (UTC 2026-12-03): a day is published after it ends"),
    ("2026-12-01", "2027-01-01", "is in the future"),
    ("2017-07-13", "2017-07-20", "archive starts on 2017-07-14; use --from 2017-07-14"),
    ("2025-03-05", "2025-03-04", "is after --to 2025-03-04: swap them"),
    ("2025-3-4x", "2025-03-04", "not a day; write it as YYYY-MM-DD"),
])
def test_days_the_archive_cannot_have_are_refused_with_the_fix(first: str, last: str,
                                                              said: str) -> None:
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        archive_span(parse_day(first, "--from"), parse_day(last, "--to"), TODAY)


def test_days_the_archive_has_pass_as_asked() -> None:
    assert archive_span(date(2017, 7, 14), date(2026, 12, 2), TODAY) == \
        (date(2017, 7, 14), date(2026, 12, 2))


def test_pairs_are_upper_cased_once_each_and_checked() -> None:
    assert check_symbols(["btcusdt", "ETHUSDT", "BTCUSDT"]) == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(ConfigError, match="not a pair: BTC/USDT"):
        check_symbols(["BTC/USDT"])
