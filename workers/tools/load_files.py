"""Load the line-protocol files of the no-database mode into the InfluxDB of `.env.local`.

    python -m workers.tools.load_files [--lp-dir data/lp] [--worker NAME] [--dry-run]

After switching from files to InfluxDB, the trades written only to `data/lp/<worker>/*.lp[.gz]`
are not in the database yet. This writes every point of those files (plain and gzipped; the
header, comment and blank lines skipped) through the worker's own sink: batches of
WRITE_BATCH_SIZE lines, the same error classification and retries (backoff up to
WRITE_RETRY_BUDGET_S per batch, honouring Retry-After). Lines InfluxDB refuses are sorted out
as the worker does (storage/refusals.py: a batch refused whole, as 2.7 and 3 Core refuse it for
one line, is written again in parts) and only they are set aside, in the worker's
`DATA_DIR/<worker>/rejected.lp`; the rest of the file is loaded. Loading is idempotent: a
point's key is its trade time and id, so a point already stored is overwritten with itself, and
running it twice (or after `scripts/gap-audit --repair`) adds nothing.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from workers.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    ConfigError,
    ContentRefused,
    LoadFailed,
    exit_codes_help,
)
from workers.health import Stats
from workers.settings import InfluxSettings, WriteSettings, load_env, load_settings
from workers.storage.lp_files import lp_files, point_batches
from workers.storage.refusals import SPLIT_STATUSES, Refusals
from workers.storage.retry_write import Notice, quiet, write_with_retries
from workers.storage.sink import InfluxSink, Sink
from workers.storage.spool import RejectedFile


@dataclass
class FileResult:
    path: Path
    points: int = 0  # points of the file loaded or set aside
    problem: str = ""  # why (part of) the file was not loaded
    set_aside: int = 0  # lines InfluxDB refused, in `rejected`
    rejected: Optional[Path] = None


def refusals_for(worker: str, data_dir: Path, database: str, sink: Sink, write: WriteSettings,
                 notice: Notice = quiet) -> Refusals:
    """The worker's way with refused lines, for `worker`'s files: each part of a refused batch
    written with the same retries (a failure other than a refusal stops the load: LoadFailed),
    the refused lines set aside in the worker's `DATA_DIR/<worker>/rejected.lp`."""
    def send(body: str) -> Optional[Exception]:
        try:
            write_with_retries(sink, body, write, notice=notice)
        except ContentRefused as exc:
            return exc
        return None
    return Refusals(worker, send, RejectedFile(data_dir / worker / "rejected.lp", database),
                    Stats())


def load_file(path: Path, sink: Optional[Sink], write: WriteSettings,
              notice: Notice = quiet, refusals: Optional[Refusals] = None) -> FileResult:
    """Write every point of `path` (count them only when `sink` is None). A batch InfluxDB
    refuses for its content is sorted out by `refusals` and only its refused lines are set
    aside; without `refusals`, or when they cannot be set aside, loading the file stops there
    and the result says which lines and why."""
    result = FileResult(path)
    line_no = 0
    try:
        for batch in point_batches(path, write.batch_size):
            if sink is not None:
                try:
                    write_with_retries(sink, "\n".join(batch), write, notice=notice)
                except ContentRefused as exc:
                    if not _set_aside(result, batch, exc, refusals):
                        result.problem = (f"InfluxDB refused points {line_no + 1}..."
                                          f"{line_no + len(batch)} of the file: {exc.reason}")
                        return result
            line_no += len(batch)
            result.points = line_no
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        result.problem = f"unreadable after {line_no} points: {exc}"
    return result


def _set_aside(result: FileResult, batch: List[str], refused: ContentRefused,
               refusals: Optional[Refusals]) -> bool:
    """As the worker's writer: a refusal of lines is sorted out, a refusal of the batch's size
    (413) sets it aside whole. False when nothing could be set aside (no `refusals`, or
    rejected.lp not writable)."""
    if refusals is None:
        return False
    body = "\n".join(batch)
    outcome = (refusals.sort_out(body, refused) if refused.status in SPLIT_STATUSES
               else refusals.refused_whole(body, refused))
    if not outcome.settled:
        return False
    result.set_aside += outcome.refused_lines
    result.rejected = outcome.path or result.rejected
    return True


def shown(path: Path) -> Path:
    """`path` as the user would type it: relative to the current directory when under it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _say(message: str) -> None:
    print(f"load-files: {message}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/load-files", description=__doc__.split("\n\n")[0],
        epilog=exit_codes_help(
            ok="every file loaded", problem="a file could not be read",
            config="a setting or an argument",
            runtime="InfluxDB failed or refused points, as the line says: loading again "
                    "is harmless"))
    parser.add_argument("--lp-dir", type=Path, default=None,
                        help="the no-database mode's directory (default: DATA_DIR/lp, data/lp)")
    parser.add_argument("--worker", default=None, help="only this worker's files (btcusdt)")
    parser.add_argument("--dry-run", action="store_true",
                        help="count the points of each file, write nothing")
    parser.add_argument("--env-file", type=Path, default=None,
                        help="settings file (default: .env.local)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(load_env(args.env_file))
        influx: Optional[InfluxSettings] = settings.influx
        if influx is None and not args.dry_run:
            raise ConfigError("INFLUXDB_URL is not set: set INFLUXDB_URL, INFLUXDB_TOKEN, "
                              "INFLUXDB_ORG and INFLUXDB_BUCKET in .env.local (see .env.example) "
                              "to load the files into that InfluxDB")
        files = lp_files(args.lp_dir or settings.data_dir / "lp", args.worker)
    except ConfigError as exc:
        print(f"load-files: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sink = InfluxSink(influx) if influx is not None and not args.dry_run else None
    target = f"bucket {influx.bucket!r} at {influx.url}" if influx else "(INFLUXDB_URL not set)"
    total, failed, unreadable, set_aside = 0, 0, 0, 0
    code = EXIT_OK
    refusals: Dict[str, Refusals] = {}
    try:
        for path in files:
            worker = path.parent.name
            if sink is not None and influx is not None and worker not in refusals:
                refusals[worker] = refusals_for(worker, settings.data_dir, influx.bucket, sink,
                                                settings.write, _say)
            result = load_file(path, sink, settings.write, _say, refusals.get(worker))
            total += result.points - result.set_aside
            set_aside += result.set_aside
            verb = "points counted (dry run)" if sink is None else "points loaded"
            line = f"{shown(path)}: {result.points - result.set_aside} {verb}"
            if result.set_aside:
                line += (f"; {result.set_aside} refused by InfluxDB, set aside in "
                         f"{shown(result.rejected or path)}")
            if result.problem:
                line += f"; {result.problem}"
                if result.problem.startswith("unreadable"):
                    unreadable += 1
                else:
                    failed += 1
            print(line, flush=True)
    except LoadFailed as exc:
        print(f"{shown(path)}: stopped: {exc}", flush=True)
        print(f"load-files: InfluxDB failed, {total} points of {len(files)} file(s) written "
              f"before it; run it again once fixed (points already stored are overwritten "
              "with themselves)", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if sink is not None:
            sink.close()
    if failed or set_aside:
        code = EXIT_RUNTIME
    elif unreadable:
        code = EXIT_PROBLEM
    done = "would load" if sink is None else "loaded"
    print(f"total: {len(files)} file(s), {total} points {done} into {target}"
          + (f"; {failed} file(s) refused in part" if failed else "")
          + (f"; {set_aside} refused line(s) set aside" if set_aside else "")
          + (f"; {unreadable} file(s) unreadable" if unreadable else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
