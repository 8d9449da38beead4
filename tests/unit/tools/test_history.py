"""scripts/history's decisions: which days it refuses, what counts as loaded, what it reports."""
from __future__ import annotations

import io
import os
import signal
import threading
from datetime import date
from pathlib import Path

import pytest

from workers.common import lock
from workers.errors import (
    EXIT_CONFIG,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    ArchiveError,
    ConfigError,
    NotPublished,
)
from workers.exchange.archive import ArchiveClient, ArchiveFile
from workers.history.load import DaySpan, FileLoad
from workers.tools import history
from workers.tools.history import LoadedFiles, Progress, day_checks, span

TODAY = date(2026, 12, 3)
INTO = "InfluxDB http://db:8086 bucket ticks"


def test_to_defaults_to_yesterday() -> None:
    assert span("2025-03-01", None, TODAY) == (date(2025, 3, 1), date(2026, 12, 2))


def test_the_days_asked_are_checked_by_the_shared_rules() -> None:
    with pytest.raises(ConfigError, match="is today"):  # history/days.py: test_days
        span("2026-12-03", "2026-12-03", TODAY)


def loaded(symbol: str, period: str, trades: int = 1) -> FileLoad:
    return FileLoad(ArchiveFile(symbol, period), trades, trades, 1, trades)


def test_a_file_is_covered_by_itself_its_month_or_all_of_its_days(tmp_path: Path) -> None:
    record = LoadedFiles(tmp_path / "loaded.json", INTO)
    record.add(loaded("BTCUSDT", "2024-02"), "ab" * 32)
    for d in range(1, 31):
        record.add(loaded("BTCUSDT", f"2024-04-{d:02d}"), "cd" * 32)
    again = LoadedFiles(tmp_path / "loaded.json", INTO)  # as the next run reads it
    assert again.covers(ArchiveFile("BTCUSDT", "2024-02"))
    assert again.covers(ArchiveFile("BTCUSDT", "2024-02-29"))
    assert again.covers(ArchiveFile("BTCUSDT", "2024-04"))
    assert not again.covers(ArchiveFile("BTCUSDT", "2024-03"))
    assert not again.covers(ArchiveFile("BTCUSDT", "2024-03-01"))
    assert again.records["2024-02"].sha256 == "ab" * 32


def test_a_file_loaded_elsewhere_is_not_loaded_here(tmp_path: Path) -> None:
    in_files = LoadedFiles(tmp_path / "loaded.json", "files under /srv/data/lp")
    in_files.add(loaded("BTCUSDT", "2024-02-03"), "ab" * 32)
    assert LoadedFiles(tmp_path / "loaded.json", "files under /srv/data/lp").covers(
        ArchiveFile("BTCUSDT", "2024-02-03"))
    into_db = LoadedFiles(tmp_path / "loaded.json", INTO)
    assert not into_db.covers(ArchiveFile("BTCUSDT", "2024-02-03"))
    into_db.add(loaded("BTCUSDT", "2024-02-03"), "ab" * 32)
    assert LoadedFiles(tmp_path / "loaded.json", INTO).covers(
        ArchiveFile("BTCUSDT", "2024-02-03"))


def test_an_unreadable_record_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "loaded.json").write_text("{not json")
    with pytest.raises(ConfigError, match="loaded.json is unreadable"):
        LoadedFiles(tmp_path / "loaded.json", INTO)


def test_one_loaded_check_per_day_a_file_covers_quiet_days_included() -> None:
    result = FileLoad(ArchiveFile("BTCUSDT", "2024-02"), 5, 5, 10, 14,
                      days=[DaySpan(date(2024, 2, 3), 5, 10, 14)])
    lines = day_checks(result, "ef" * 32)
    assert len(lines) == 29
    assert lines[2].startswith('capture_days,symbol=BTCUSDT,check=loaded day="2024-02-03",'
                               "trades=5i,stored=5i,first_id=10i,last_id=14i,missing=0i,"
                               f'extra=0i,differing=0i,sha256="{"ef" * 32}",verified=false ')
    assert 'day="2024-02-01",trades=0i,stored=0i,first_id=0i,last_id=0i' in lines[0]


def test_progress_says_bytes_trades_rate_and_time_left() -> None:
    progress = Progress(io.StringIO())
    progress.files_total, progress.files_done = 4, 1
    progress.bytes, progress.trades = 2_500_000, 1_234_567
    line = progress.line()
    assert line.startswith("1/4 files, 2.5 MB downloaded, 1,234,567 trades loaded (")
    assert "/s), ~" in line and line.endswith(" left")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_cleared_before_a_result(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = Terminal()
    progress = Progress(out)
    progress.files_total = 2
    progress.loaded(5_000)
    assert out.getvalue().startswith("\r\x1b[K0/2 files, 0.0 MB downloaded, 5,000 trades")
    progress.say("BTCUSDT 2025-03-04: 5,000 trades loaded")
    assert out.getvalue().endswith("\r\x1b[K")
    assert capsys.readouterr().out == "BTCUSDT 2025-03-04: 5,000 trades loaded\n"


def test_elsewhere_progress_is_a_plain_line_at_most_every_10_s() -> None:
    out = io.StringIO()
    progress = Progress(out)
    for _ in range(100):
        progress.downloaded(1_000_000)
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("history: 0/0 files")


@pytest.fixture
def run_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """scripts/history's main in this process, no database (file mode), the archive's
    downloads replaced by `fail` (a fake: the specs of the real client are test_archive's)."""
    for name in ("INFLUXDB_URL", "INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(history, "_stop_on_signals", lambda stopping: None)

    def run(error: Exception) -> int:
        def fail(self: ArchiveClient, file: ArchiveFile, directory: Path,
                 progress: object = None) -> None:
            raise error
        monkeypatch.setattr(ArchiveClient, "download", fail)
        return history.main(["BTCUSDT", "--from", "2025-01-01", "--to", "2025-01-02",
                             "--env-file", os.devnull])
    return run


def test_an_archive_that_does_not_answer_is_a_runtime_failure_not_a_misspelled_pair(
        run_offline, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_offline(ArchiveError("BTCUSDT-trades-2025-01-01.zip.CHECKSUM",
                                    "failed 6 times (NameResolutionError) from https://..."))

    said = capsys.readouterr()
    assert code == EXIT_RUNTIME
    assert "BTCUSDT 2025-01-01: download failed: failed 6 times" in said.out + said.err
    assert "did not answer for 2 file(s): check the network or BINANCE_ARCHIVE_URL" in said.err
    assert "check the pair's name" not in said.out + said.err


def test_a_pair_the_archive_has_no_file_of_may_be_misspelled(
        run_offline, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_offline(NotPublished("BTCUSDT-trades-2025-01-01.zip", "not published yet (404)"))

    said = capsys.readouterr()
    assert code == EXIT_PROBLEM
    assert "BTCUSDT 2025-01-02: not in the archive " in said.out + said.err  # long over
    assert "most likely did not trade that day (listed later, or delisted); if it did, run " \
        "again later" in said.out + said.err
    assert "BTCUSDT: the archive has no file of the span: check the pair's name" in \
        said.out + said.err


def test_an_unreadable_record_ends_the_run_with_one_line_and_exit_2(
        run_offline, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = tmp_path / "data" / "history" / "BTCUSDT" / "loaded.json"
    record.parent.mkdir(parents=True)
    record.write_text("{not json")

    code = run_offline(AssertionError("nothing is downloaded"))

    said = capsys.readouterr()
    assert code == EXIT_CONFIG
    assert said.err.startswith(f"history: {record} is unreadable (")
    assert "move it away to load every day again" in said.err
    assert "Traceback" not in said.err


def test_a_pair_another_loader_holds_is_left_to_it_and_said(
        run_offline, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "data" / "history" / "BTCUSDT"
    home.mkdir(parents=True)
    other = lock.hold(home / "lock")  # as a running scripts/history of the pair holds it
    try:
        code = run_offline(AssertionError("nothing is downloaded"))
    finally:
        other.release()

    said = capsys.readouterr()
    assert code == EXIT_PROBLEM
    assert f"BTCUSDT: another scripts/history or verify --repair of the pair runs (pid " \
        f"{os.getpid()}): left to it; run again once it has ended" in said.out
    assert not (home / "loaded.json").exists()


def test_from_today_without_to_is_refused_as_today_not_as_swapped() -> None:
    with pytest.raises(ConfigError, match=r"--to 2026-12-03 is today"):
        span("2026-12-03", None, TODAY)


def test_files_not_loaded_are_counted_apart_from_those_done() -> None:
    progress = Progress(io.StringIO())
    progress.files_total, progress.files_done, progress.files_failed = 639, 639, 636
    assert progress.line().startswith("639/639 files (636 not loaded), 0.0 MB downloaded")


def test_the_run_ends_with_its_totals() -> None:
    out = io.StringIO()
    progress = Progress(out)
    progress.files_total, progress.files_done = 3, 3
    progress.loaded(1_000)
    progress.done()
    assert out.getvalue().splitlines()[-1].startswith(
        "history: done: 3/3 files, 0.0 MB downloaded, 1,000 trades loaded")


def test_a_signal_asks_the_run_to_stop_and_a_second_one_stops_at_once() -> None:
    stopping = threading.Event()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        history._stop_on_signals(stopping)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and signal.getsignal(signal.SIGINT) is handler
        handler(signal.SIGTERM, None)  # no exception: the main thread sees the event
        assert stopping.is_set()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)
