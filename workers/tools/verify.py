"""Verify stored UTC days against Binance's archive: one line per day, each day's check stored.

    python -m workers.tools.verify SYMBOL... --from DATE [--to DATE] [--repair]
    python -m workers.tools.verify --all --yesterday        (the unattended daily run)

Each day of each symbol is compared with the archive's daily file, id by id and string by
string (workers/history/verify.py), and the result is stored as a `capture_days` point
(check=verified), which `scripts/status` and the dashboards show. `--repair` writes the missing
(and differing) trades again from the archive through the history loader, then checks again.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import Callable, Container, Dict, List, Optional, Sequence

from workers.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    AlreadyRunning,
    ArchiveError,
    ConfigError,
    LoadFailed,
    SinkError,
    exit_codes_help,
)
from workers.exchange.archive import ArchiveClient, Downloaded, day_range
from workers.history.days import (
    archive_span,
    check_symbols,
    parse_day,
    today_utc,
    yesterday_utc,
)
from workers.history.load import ArchiveLoader, busy
from workers.history.verify import DayResult, DayVerifier, Repair
from workers.settings import Settings, load_env, load_settings
from workers.storage.influx_query import InfluxQuery
from workers.storage.sink import InfluxSink
from workers.symbols import load_file, this_host

SAMPLE_IDS = 5  # ids named per kind in a day's line
LONGEST_SPAN_DAYS = 366  # a longer --from..--to is a typo more often than a wish


def ids_text(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SAMPLE_IDS])
    return f" (ids {shown}{' ...' if len(ids) > SAMPLE_IDS else ''})" if ids else ""


def day_line(result: DayResult) -> str:
    """The one line a day gets."""
    head = f"{result.symbol} {result.day.isoformat()}: "
    check, diff = result.check, result.diff
    if check is None or diff is None:
        return head + result.not_now
    ids = f"ids {check.first_id}..{check.last_id}" if check.trades else "no trades"
    facts = f"{check.trades:,} trades, {ids}, sha256 {check.sha256[:12]}.."
    repaired = (f"; {result.repaired:,} trades written again from the archive, then checked"
                if result.repaired else "")
    if check.verified:
        return f"{head}verified, {facts}{repaired}"
    found = (f"{check.missing:,} missing{ids_text(diff.missing)}, {check.extra:,} extra"
             f"{ids_text(diff.extra)}, {check.differing:,} differing"
             f"{ids_text(diff.differing)}")
    if diff.problem:
        found = f"archive file unreadable ({diff.problem}): run again later; {found}"
    extra = ("; extra ids: the archive lacks trades we stored (its defect, or ours), never "
             "deleted" if check.extra else "")
    return f"{head}NOT verified, {found}; {facts}{repaired}{extra}{what_to_do(result)}"


def what_to_do(result: DayResult) -> str:
    """The fix for trades missing or differing, when this run did not repair them."""
    check = result.check
    if check is None or result.repaired or not (check.missing or check.differing):
        return ""
    if check.stored == 0:
        return ("; nothing of this day is stored: load it with scripts/history (or "
                "scripts/load-files, if it went to files)")
    return "; --repair writes them again from the archive"


def loader_repair(settings: Settings, loaders: Dict[str, ArchiveLoader],
                  stack: ExitStack) -> Callable[[str], Repair]:
    """A repair per symbol: the history loader writes the given ids of a file again."""

    def for_symbol(symbol: str) -> Repair:
        def repair(downloaded: Downloaded, ids: Container[int]) -> int:
            loader = loaders.get(symbol)
            if loader is None:
                loader = loaders[symbol] = ArchiveLoader(settings, symbol)
                stack.callback(loader.close)
            load = loader.load(downloaded, only_ids=ids)
            if load.problem:
                raise LoadFailed(f"repair of {downloaded.file.name}: {load.problem}")
            return load.written
        return repair

    return for_symbol


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/verify", description=__doc__.split("\n\n")[0],
        epilog=exit_codes_help(
            ok="every day verified", problem="a day not verified, or not published yet",
            config="a setting or an argument",
            runtime="InfluxDB or the archive unreachable"))
    parser.add_argument("symbols", nargs="*", metavar="SYMBOL", help="e.g. BTCUSDT")
    parser.add_argument("--all", action="store_true",
                        help="every symbol this host captures (config/symbols.yaml)")
    parser.add_argument("--from", dest="first", help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", help="last UTC day (default: --from)")
    parser.add_argument("--yesterday", action="store_true", help="yesterday (UTC) only")
    parser.add_argument("--repair", action="store_true",
                        help="write missing and differing trades again from the archive")
    parser.add_argument("--symbols-file", type=Path, default=None,
                        help="for --all (default: config/symbols.yaml)")
    parser.add_argument("--env-file", type=Path, default=None,
                        help="settings file (default: .env.local)")
    args = parser.parse_args(argv)
    if args.yesterday == bool(args.first):
        parser.error("give --from DATE [--to DATE], or --yesterday")
    if bool(args.symbols) == args.all:
        parser.error("give SYMBOL..., or --all")
    return args


def chosen_days(args: argparse.Namespace) -> List[date]:
    if args.yesterday:
        return [yesterday_utc()]
    first = parse_day(args.first, "--from")
    last = parse_day(args.last, "--to") if args.last else first
    first, last = archive_span(first, last, today_utc())
    if (last - first).days >= LONGEST_SPAN_DAYS:
        raise ConfigError(f"--to {last} must be within {LONGEST_SPAN_DAYS} days of --from "
                          f"{first}")
    return list(day_range(first, last))


def chosen_symbols(args: argparse.Namespace, env: Dict[str, str]) -> List[str]:
    if not args.all:
        return check_symbols(args.symbols)
    workers = load_file(args.symbols_file).share(this_host(env))
    return sorted({s for w in workers for s in w.symbols})


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        env = load_env(args.env_file)
        settings = load_settings(env)
        if settings.influx is None:
            raise ConfigError("INFLUXDB_URL is not set: a day is verified against the trades "
                              "InfluxDB stored; set INFLUXDB_URL, INFLUXDB_TOKEN, INFLUXDB_ORG "
                              "and INFLUXDB_BUCKET in .env.local")
        days, symbols = chosen_days(args), chosen_symbols(args, env)
    except ConfigError as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    results: List[DayResult] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="verify-")))
        client = ArchiveClient(settings.archive_url, parallel=1)
        stack.callback(client.close)
        sink = InfluxSink(settings.influx)
        stack.callback(sink.close)
        query = InfluxQuery(settings.influx)
        stack.callback(query.close)
        verifier = DayVerifier(settings, settings.influx, client, query, sink, workdir,
                               loader_repair(settings, {}, stack))
        try:
            for symbol in symbols:
                for day in days:
                    results.append(verifier.verify(symbol, day, repair=args.repair))
                    print(day_line(results[-1]), flush=True)
        except (SinkError, LoadFailed) as exc:
            print(f"verify: InfluxDB failed: {exc}; run it again once fixed", file=sys.stderr)
            return EXIT_RUNTIME
        except ArchiveError as exc:  # no answer at all: the network, or the URL
            print(f"verify: the archive at {settings.archive_url} failed: {exc}; check the "
                  "network or BINANCE_ARCHIVE_URL, and run it again", file=sys.stderr)
            return EXIT_RUNTIME
        except AlreadyRunning as exc:  # raised by the repair's loader, within the loop
            print(f"verify: --repair: {busy(symbol, exc)}", file=sys.stderr)
            return EXIT_PROBLEM
    return EXIT_OK if all(r.check and r.check.verified for r in results) else EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
