"""scripts/verify's command line: it refuses what the archive cannot have as history does."""
from __future__ import annotations

import os
from datetime import date, datetime, timezone

import pytest

from workers.errors import EXIT_CONFIG
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
