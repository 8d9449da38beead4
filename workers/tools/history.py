"""Load past days of pairs from Binance's public archive into the InfluxDB of `.env.local`
(without INFLUXDB_URL: into line-protocol files under DATA_DIR/lp/, for scripts/load-files).

    scripts/history SYMBOL... --from DATE [--to DATE] [--force] [--parallel N] [--daily-only]

Each whole calendar month asked is one monthly file (its daily files instead while the monthly
one is not published yet), every other day a daily file; each is checked against its
`.CHECKSUM`, read row by row out of the zip (memory bounded whatever its size) and written
through the worker's own write path (history/load.py): the same point key and fields, so a
trade live capture already stored is the same point, and loading twice adds nothing.

Downloads run N at a time (--parallel, default 4) into DATA_DIR/history/download-<pid>/ (each
file removed once loaded, the directory at the end, or by the next run after a kill); loading
is sequential. A file loaded whole is recorded in
DATA_DIR/history/<SYMBOL>/loaded.json and skipped on the next run unless --force: an
interrupted run (Ctrl-C, SIGTERM, a kill) loads again only what it had not recorded. After it,
one `capture_days` point (check=loaded) per UTC day the file covers.

One line per file on stdout (loaded, not published yet, checksum mismatch, corrupt); a day
that is not published or fails its checksum is said and left for the next run, never loaded
halfway in silence. Progress on stderr: a bar on a terminal, a plain line every 10 s otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Deque, Dict, List, Optional, Tuple

from workers.common.atomic import write_atomic
from workers.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    AlreadyRunning,
    ArchiveError,
    ConfigError,
    LoadFailed,
    NotPublished,
    exit_codes_help,
)
from workers.exchange.archive import (
    ArchiveClient,
    ArchiveFile,
    Downloaded,
    archive_problem,
    files_for,
)
from workers.history.days import archive_span, check_symbols, parse_day, today_utc
from workers.history.load import ArchiveLoader, DaySpan, FileLoad, busy
from workers.settings import Settings, load_env, load_settings
from workers.storage.capture_days import LOADED, DayCheck, now_ns
from workers.storage.influx_query import InfluxQuery
from workers.storage.retention import retention_s

PLAIN_EVERY_S = 10.0  # progress lines when stderr is not a terminal
STOP_POLL_S = 0.2  # how often a wait of the main thread looks at the stop request
BAR_EVERY_S = 0.2


# -- the days asked ---------------------------------------------------------------------------
def span(first_text: str, last_text: Optional[str], today: date) -> Tuple[date, date]:
    """The days asked (--to defaults to yesterday), refused up front when the archive cannot
    have them (history/days.py)."""
    first = parse_day(first_text, "--from")
    last = parse_day(last_text, "--to") if last_text else today - timedelta(days=1)
    if not last_text and first >= today:  # the default --to is not what the user got wrong
        last = first
    return archive_span(first, last, today)


def refuse_expired(settings: Settings, first: date, today: date) -> None:
    """Days older than the bucket keeps would be deleted as soon as written: refused up front,
    when the server tells its retention (storage/retention.py; not 3.x)."""
    if settings.influx is None:
        return
    query = InfluxQuery(settings.influx)
    try:
        kept_s = retention_s(query)
    finally:
        query.close()
    if not kept_s:  # None: the server does not say; 0: kept forever
        return
    oldest = (datetime.now(timezone.utc) - timedelta(seconds=kept_s)).date() + timedelta(days=1)
    if first < oldest:
        raise ConfigError(
            f"--from {first}: bucket {settings.influx.bucket!r} keeps {kept_s / 86400:g} days, "
            f"so the points of days before {oldest} would be deleted as soon as written; use "
            f"--from {oldest} or later, or lengthen the bucket's retention (2.x: influx bucket "
            "update --retention 0; 1.x: ALTER RETENTION POLICY ... DURATION INF)")


# -- what is loaded already -------------------------------------------------------------------
@dataclass
class Record:
    sha256: str
    trades: int
    first_id: int
    last_id: int
    loaded_at: str
    into: str = ""  # where the trades went (destination()): a file is loaded for that one only


def destination(settings: Settings) -> str:
    """Where a run writes: the InfluxDB bucket, or the files of the no-database mode. A file
    loaded into files is not loaded into InfluxDB (it waits for scripts/load-files)."""
    if settings.influx is not None:
        return f"InfluxDB {settings.influx.url} bucket {settings.influx.bucket}"
    return f"files under {settings.data_dir / 'lp'}"


class LoadedFiles:
    """DATA_DIR/history/<SYMBOL>/loaded.json: period -> Record of each file loaded whole, and
    where it went; only the records of `into` count as loaded."""

    def __init__(self, path: Path, into: str) -> None:
        self.path = path
        self.into = into
        self.records: Dict[str, Record] = {}
        try:
            raw = json.loads(path.read_text()).get("files", {})
            self.records = {k: Record(**v) for k, v in raw.items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path} is unreadable ({exc}): move it away to load every "
                              "day again (loading twice stores nothing twice)") from None

    def covers(self, file: ArchiveFile) -> bool:
        """Loaded whole into `into`: itself, its month, or (a month) every one of its days."""
        if self._here(file.period):
            return True
        if file.monthly:
            return all(self._here(day.isoformat()) for day in file.days())
        return self._here(file.period[:7])

    def _here(self, period: str) -> bool:
        record = self.records.get(period)
        return record is not None and record.into == self.into

    def add(self, load: FileLoad, sha256: str) -> None:
        self.records[load.file.period] = Record(
            sha256, load.trades, load.first_id or 0, load.last_id or 0,
            datetime.now(timezone.utc).isoformat(timespec="seconds"), self.into)
        data = {"files": {k: asdict(v) for k, v in sorted(self.records.items())}}
        write_atomic(self.path, json.dumps(data, indent=1) + "\n")


# -- progress ---------------------------------------------------------------------------------
class Progress:
    """Bytes downloaded and trades loaded, their rate and the time left, on stderr: redrawn as
    a bar on a terminal, a plain line every PLAIN_EVERY_S otherwise. Thread-safe (downloads)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.bytes = 0
        self.trades = 0
        self.files_total = 0
        self.files_done = 0
        self.files_failed = 0  # of the done ones, not loaded (not published, corrupt, ...)
        self._shown = 0.0
        self._drawn = False

    def downloaded(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            self._maybe_show()

    def loaded(self, n: int) -> None:
        with self.lock:
            self.trades += n
            self._maybe_show()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        failed = f" ({self.files_failed} not loaded)" if self.files_failed else ""
        text = (f"{self.files_done}/{self.files_total} files{failed}, {self.bytes / 1e6:,.1f} MB "
                f"downloaded, {self.trades:,} trades loaded ({self.trades / elapsed:,.0f}/s)")
        if self.files_done and self.files_total > self.files_done:
            left = elapsed / self.files_done * (self.files_total - self.files_done)
            text += f", ~{_duration(left)} left"
        return text

    def _maybe_show(self) -> None:
        now = time.monotonic()
        if now - self._shown < (BAR_EVERY_S if self.tty else PLAIN_EVERY_S):
            return
        self._shown = now
        if self.tty:
            self.out.write(f"\r\x1b[K{self.line()}")
            self._drawn = True
        else:
            self.out.write(f"history: {self.line()}\n")
        self.out.flush()

    def done(self) -> None:
        """The run's totals on stderr, once at the end: a periodic line may have shown only
        the first seconds."""
        with self.lock:
            if self._drawn:
                self.out.write("\r\x1b[K")
                self._drawn = False
            self.out.write(f"history: done: {self.line()}\n")
            self.out.flush()

    def say(self, text: str) -> None:
        """One result line on stdout, with the bar cleared first."""
        with self.lock:
            if self._drawn:
                self.out.write("\r\x1b[K")
                self.out.flush()
                self._drawn = False
            print(text, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# -- a run ------------------------------------------------------------------------------------
class Run:
    def __init__(self, settings: Settings, parallel: int, force: bool, monthly: bool,
                 progress: Progress) -> None:
        self.settings = settings
        self.force = force
        self.monthly = monthly
        self.parallel = parallel
        self.progress = progress
        self.stopping = threading.Event()
        self.today = today_utc()
        self.home = settings.data_dir / "history"
        self.home.mkdir(parents=True, exist_ok=True)
        remove_stale_downloads(self.home)
        self.tmp = self.home / f"download-{os.getpid()}"
        self.tmp.mkdir(exist_ok=True)
        self.client = ArchiveClient(settings.archive_url, parallel, stopping=self.stopping)
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="download")
        self.problems = 0
        self.published = 0  # files of the current symbol the archive had
        self.skipped = 0  # and files of it loaded before, not asked again
        self.unreachable = 0  # files whose download failed past its retries (the network)
        self.loader: Optional[ArchiveLoader] = None

    def symbol(self, symbol: str, first: date, last: date) -> None:
        try:  # first: the pair's lock, before its loaded.json is read
            self.loader = ArchiveLoader(self.settings, symbol, stopping=self.stopping)
        except AlreadyRunning as exc:
            self.problems += 1
            self.progress.say(busy(symbol, exc))
            return
        try:
            self._symbol(symbol, first, last)
        finally:
            self.loader.close()
            self.loader = None

    def _symbol(self, symbol: str, first: date, last: date) -> None:
        loaded = LoadedFiles(self.home / symbol / "loaded.json", destination(self.settings))
        asked = files_for(symbol, first, last, monthly=self.monthly)
        pending = deque(f for f in asked if self.force or not loaded.covers(f))
        if len(pending) < len(asked):
            self.progress.say(f"{symbol}: {len(asked) - len(pending)} file(s) of the span "
                              f"loaded before into {loaded.into}, skipped (--force loads "
                              "them again)")
        self.progress.files_total += len(pending)
        self.published = 0
        self.skipped = len(asked) - len(pending)
        unreachable_before = self.unreachable
        self._files(symbol, pending, loaded)
        if self.published == self.skipped == 0 and self.unreachable == unreachable_before:
            # a misspelled pair looks exactly like days not published yet: say both
            self.progress.say(f"{symbol}: the archive has no file of the span: check the "
                              "pair's name (Binance's spelling, e.g. BTCUSDT), or run again "
                              "once the days are published")

    def _files(self, symbol: str, pending: Deque[ArchiveFile], loaded: LoadedFiles) -> None:
        window: Deque[Tuple[ArchiveFile, "Future[Downloaded]"]] = deque()
        running: Dict[ArchiveFile, "Future[Downloaded]"] = {}  # downloads put back in line
        while pending or window:
            while pending and len(window) < self.parallel:
                file = pending.popleft()
                window.append((file, running.pop(file) if file in running else self.pool.submit(
                    self.client.download, file, self.tmp, self.progress.downloaded)))
            file, future = window.popleft()
            started = time.monotonic()
            label = f"{symbol} {file.period}"
            try:
                downloaded = self._result(future)
                self.published += 1
            except ArchiveError as exc:
                if isinstance(exc, NotPublished) and file.monthly:
                    days = [d for d in file.daily_files() if self.force or not loaded.covers(d)]
                    self.skipped += len(file.daily_files()) - len(days)
                    # the month's days come before the later files already downloading, so
                    # the lines stay in date order: those go back in line, still running
                    running.update(window)
                    pending.extendleft(reversed(days + [later for later, _ in window]))
                    window.clear()
                    self.progress.files_total += len(days) - 1
                    self.progress.say(f"{label}: monthly file not published yet: its "
                                      f"{len(days)} daily files instead")
                    continue
                if self.stopping.is_set():
                    raise KeyboardInterrupt from None
                if type(exc) is ArchiveError:  # not a defect of the file: no answer at all
                    self.unreachable += 1
                self._problem(label, archive_problem(exc, file.first_day, self.today))
                continue
            except OSError as exc:  # the temp dir: a full or read-only disk
                self._problem(label, f"cannot save the download in {self.tmp}: {exc}; free "
                                     "space under DATA_DIR and run again")
                continue
            try:
                self._load(label, downloaded, loaded, started)
            finally:
                downloaded.path.unlink(missing_ok=True)

    def _result(self, future: "Future[Downloaded]") -> Downloaded:
        """The download's result, waited for in steps so that a stop is seen at once (a
        download blocked in a read may take READ_TIMEOUT_S to notice it)."""
        while not wait([future], timeout=STOP_POLL_S).done:
            if self.stopping.is_set():
                raise KeyboardInterrupt
        return future.result()

    def _load(self, label: str, downloaded: Downloaded, loaded: LoadedFiles,
              started: float) -> None:
        assert self.loader is not None
        result = self.loader.load(downloaded, progress=self.progress.loaded)
        if self.stopping.is_set():
            raise KeyboardInterrupt
        if result.spooled:
            self.progress.say(f"{label}: {result.problem}")
            raise LoadFailed(result.problem)
        if not result.whole:
            self._problem(label, f"{result.problem}; run again later")
            return
        if not self.loader.write_lines(day_checks(result, downloaded.sha256)):
            if self.stopping.is_set():
                raise KeyboardInterrupt
            raise LoadFailed("the day checks could not be written")
        loaded.add(result, downloaded.sha256)
        with self.progress.lock:
            self.progress.files_done += 1
        ids = f"ids {result.first_id}..{result.last_id}" if result.trades else "no trade"
        text = (f"{label}: {result.written:,} trades loaded ({ids}), sha256 "
                f"{downloaded.sha256[:12]}..., {time.monotonic() - started:.0f} s")
        if result.set_aside:
            text += (f"; {result.set_aside:,} refused by InfluxDB, set aside in "
                     f"{self.home / downloaded.file.symbol / 'rejected.lp'} with the reason")
            self.problems += 1
        self.progress.say(text)
        if downloaded.file.monthly:  # one line per day, as for daily files
            for line in day_lines(result):
                self.progress.say(line)

    def _problem(self, label: str, text: str) -> None:
        self.problems += 1
        with self.progress.lock:
            self.progress.files_done += 1
            self.progress.files_failed += 1
        self.progress.say(f"{label}: {text}")

    def close(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.loader is not None:
            self.loader.close()
        self.client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_stale_downloads(home: Path) -> None:
    """The temp dirs of runs that were killed (download-<pid> of a process gone)."""
    for directory in home.glob("download-*"):
        pid = directory.name.partition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def day_lines(result: FileLoad) -> List[str]:
    """A monthly file's days, one line each under the file's line: trades and ids per day."""
    spans = {span.day: span for span in result.days}
    lines = []
    for day in result.file.days():
        span = spans.get(day)
        ids = f"ids {span.first_id}..{span.last_id}" if span else "no trade that day"
        lines.append(f"  {result.file.symbol} {day.isoformat()}: {span.trades if span else 0:,} "
                     f"trades ({ids})")
    return lines


def day_checks(result: FileLoad, sha256: str) -> List[str]:
    """One `capture_days` point (check=loaded) per UTC day the file covers, a day without a
    trade included: loading is not verifying (verified=false, nothing compared)."""
    spans = {span.day: span for span in result.days}
    stamp = now_ns()
    lines = []
    for day in result.file.days():
        span = spans.get(day, DaySpan(day))
        lines.append(DayCheck(result.file.symbol, day, LOADED, span.trades, span.trades,
                              span.first_id, span.last_id, 0, 0, 0, sha256, False,
                              stamp).line())
    return lines


# -- the command ------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/history", description=__doc__.split("\n\n")[0],
        epilog=exit_codes_help(
            ok="every file asked loaded (or loaded before)",
            problem="a file not published yet, failing its checksum or corrupt (run again "
                    "later: the rest is loaded), or interrupted",
            config="a setting or an argument (a day the archive or the bucket cannot have)",
            runtime="InfluxDB failed (what was read waits in the spool, sent on the next run), "
                    "or the archive could not be reached"))
    p.add_argument("symbols", nargs="+", metavar="SYMBOL", help="pairs, e.g. BTCUSDT ETHUSDT")
    p.add_argument("--from", dest="first", required=True, metavar="DATE",
                   help="first UTC day, YYYY-MM-DD")
    p.add_argument("--to", dest="last", default=None, metavar="DATE",
                   help="last UTC day, included (default: yesterday)")
    p.add_argument("--force", action="store_true", help="load files recorded as loaded again")
    p.add_argument("--parallel", type=int, default=4, metavar="N",
                   help="downloads at a time (default 4)")
    p.add_argument("--daily-only", action="store_true",
                   help="daily files only, never a monthly one")
    p.add_argument("--env-file", type=Path, default=None,
                   help="settings file (default: .env.local)")
    return p


def _stop_on_signals(stopping: threading.Event) -> None:
    """Ctrl-C and SIGTERM ask the run to stop: the main thread sees `stopping` where it waits
    (a download, the writer) and ends the run cleanly. Raising KeyboardInterrupt from the
    handler instead can land while the main thread holds a Future's lock, and the download
    pool's shutdown then waits on that lock forever. A second signal stops at once."""
    def handler(signum: int, frame: object) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        if not 1 <= args.parallel <= 32:
            raise ConfigError(f"--parallel {args.parallel}: give 1 to 32")
        settings = load_settings(load_env(args.env_file))
        symbols = check_symbols(args.symbols)
        today = today_utc()
        first, last = span(args.first, args.last, today)
        refuse_expired(settings, first, today)
    except ConfigError as exc:
        print(f"history: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    run = Run(settings, args.parallel, args.force, not args.daily_only, Progress(sys.stderr))
    _stop_on_signals(run.stopping)
    try:
        for symbol in symbols:
            run.symbol(symbol, first, last)
    except KeyboardInterrupt:
        run.progress.say("history: interrupted: files not reported loaded above are loaded "
                         "on the next run")
        return EXIT_PROBLEM
    except LoadFailed:
        run.progress.say("history: InfluxDB failed: run again once it answers (what was "
                         "loaded is recorded; the spool is sent first)")
        return EXIT_RUNTIME
    except ConfigError as exc:  # a pair's loaded.json that cannot be read
        print(f"history: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        run.close()
        run.progress.done()
    if run.unreachable:
        print(f"history: the archive at {settings.archive_url} did not answer for "
              f"{run.unreachable} file(s): check the network or BINANCE_ARCHIVE_URL, and run "
              "again", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_PROBLEM if run.problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
