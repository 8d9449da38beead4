"""Load the line-protocol files of the no-database mode into the InfluxDB of `.env.local`.

    python -m workers.tools.load_files [--lp-dir data/lp] [--worker NAME] [--dry-run]

After switching from files to InfluxDB, the trades written only to `data/lp/<worker>/*.lp[.gz]`
are not in the database yet. This writes every point of those files (plain and gzipped; the
header, comment and blank lines skipped) through the worker's own sink: batches of
WRITE_BATCH_SIZE lines, the same error classification and retries (backoff up to
WRITE_RETRY_BUDGET_S per batch, honouring Retry-After). Loading is idempotent: a point's key is
its trade time and id, so a point already stored is overwritten with itself, and running it
twice (or after `scripts/gap-audit --repair`) adds nothing.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

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
from workers.settings import InfluxSettings, WriteSettings, load_env, load_settings
from workers.storage.lp_files import lp_files, point_batches
from workers.storage.retry_write import Notice, quiet, write_with_retries
from workers.storage.sink import InfluxSink, Sink


@dataclass
class FileResult:
    path: Path
    points: int = 0
    problem: str = ""  # why (part of) the file was not loaded


def load_file(path: Path, sink: Optional[Sink], write: WriteSettings,
              notice: Notice = quiet) -> FileResult:
    """Write every point of `path` (count them only when `sink` is None). Stops at the first
    batch InfluxDB refuses for its content, and says which lines and why."""
    result = FileResult(path)
    line_no = 0
    try:
        for batch in point_batches(path, write.batch_size):
            if sink is not None:
                try:
                    write_with_retries(sink, "\n".join(batch), write, notice=notice)
                except ContentRefused as exc:
                    result.problem = (f"InfluxDB refused points {line_no + 1}..."
                                      f"{line_no + len(batch)} of the file: {exc.reason}")
                    return result
            line_no += len(batch)
            result.points = line_no
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        result.problem = f"unreadable after {line_no} points: {exc}"
    return result


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
    total, failed, unreadable = 0, 0, 0
    code = EXIT_OK
    try:
        for path in files:
            result = load_file(path, sink, settings.write, _say)
            total += result.points
            verb = "points counted (dry run)" if sink is None else "points loaded"
            line = f"{shown(path)}: {result.points} {verb}"
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
    if failed:
        code = EXIT_RUNTIME
    elif unreadable:
        code = EXIT_PROBLEM
    done = "would load" if sink is None else "loaded"
    print(f"total: {len(files)} file(s), {total} points {done} into {target}"
          + (f"; {failed} file(s) refused in part" if failed else "")
          + (f"; {unreadable} file(s) unreadable" if unreadable else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
