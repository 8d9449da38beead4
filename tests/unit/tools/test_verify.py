"""scripts/verify's command line: it refuses what the archive cannot have as history does."""
from __future__ import annotations

import os
from array import array
from datetime import date, datetime, timezone
from typing import List

import pytest

from workers.errors import EXIT_CONFIG
from workers.history.verify import DayDiff, DayResult
from workers.tools import verify


@pytest.fixture
def configured(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings of a database that is never reached: the checks come first."""
    for name, value in (("INFLUXDB_URL", "http://127.0.0.1:9"), ("INFLUXDB_TOKEN", "t"),
                        ("INFLUXDB_ORG", "o"), ("INFLUXDB_BUCKET", "b"),
                        ("RUN_DIR", str(tmp_path / "run")), ("DATA_DIR", str(tmp_path))):
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("args, said", [
    (["BTC/USDT", "--from", "2025-01-01"], "not a pair: BTC/USDT"),
    (["BTCUSDT", "--from", "2017-07-01"], "archive starts on 2017-07-14"),
    (["BTCUSDT", "--from", datetime.now(timezone.utc).date().isoformat()], "is today"),
    (["BTCUSDT", "--from", "2025-01-01", "--to", "2026-06-01"], "within 366 days"),
    (["BTCUSDT", "--from", "yesterday"], "not a day; write it as YYYY-MM-DD"),
])
def test_what_the_archive_cannot_have_is_refused_before_anything_is_read(
        configured, capsys: pytest.CaptureFixture[str], args, said) -> None:
    assert verify.main([*args, "--env-file", os.devnull]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("verify: ") and said in err, err


def test_yesterday_is_the_last_day_there_is() -> None:
    assert verify.chosen_days(verify.parse_args(["BTCUSDT", "--yesterday"])) == \
        [date.fromordinal(datetime.now(timezone.utc).date().toordinal() - 1)]


def result_of(stored: int, missing: List[int], repaired: int = 0) -> DayResult:
    diff = DayDiff("BTCUSDT", date(2025, 3, 4), trades=3, stored=stored, first_id=1, last_id=3,
                   missing=array("q", missing))
    return DayResult("BTCUSDT", date(2025, 3, 4), diff.check("ab" * 32, 0), diff,
                     repaired=repaired)


def test_a_day_with_nothing_stored_says_to_load_it() -> None:
    assert verify.day_line(result_of(0, [1, 2, 3])).endswith(
        "; nothing of this day is stored: load it with scripts/history (or "
        "scripts/load-files, if it went to files)")


def test_a_day_with_trades_missing_says_repair_writes_them_unless_this_run_did() -> None:
    assert verify.day_line(result_of(2, [2])).endswith(
        "; --repair writes them again from the archive")
    assert "--repair writes" not in verify.day_line(result_of(2, [2], repaired=1))
    assert "--repair" not in verify.day_line(result_of(3, []))  # verified: nothing to do
