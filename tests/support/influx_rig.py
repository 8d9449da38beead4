"""Local InfluxDB for demos: Debian's influxd 1.6.7 plus the 2.x-write front, until Ctrl-C.

Prints the URLs and the lines to put in .env.local, so the service can write to it with the
official client as if it were InfluxDB 2.x: the command line of `scripts/influx-rig`, on
tests/support/influx_server.py and tests/support/influx_front/.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Optional

from tests.support.influx_front import InfluxFront, parse_fault_arg
from tests.support.influx_server import InfluxdNotFound, InfluxServer, find_influxd
from workers.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, exit_codes_help

EXIT_START_FAILED = EXIT_RUNTIME  # influxd or the front did not come up, or one of them died
EXIT_NO_INFLUXD = EXIT_CONFIG  # nothing to run: install influxdb or set INFLUXD


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="influx-rig",
        description="Start influxd 1.6.7 in a temp dir (or --data-dir), create a database and "
                    "serve the InfluxDB 2.x write API in front of it on 127.0.0.1. Runs until "
                    "Ctrl-C or SIGTERM, then stops both.",
        epilog=exit_codes_help(ok="stopped by Ctrl-C or SIGTERM",
                               config="an argument, or no influxd: install influxdb or set "
                                      "INFLUXD",
                               runtime="influxd or the front did not start, or one died"))
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep influxd's config, data and logs here (reused on the next "
                             "run); default: a temp dir removed on exit")
    parser.add_argument("--db", default="ticks",
                        help="database to create, used as the bucket name (default: ticks)")
    parser.add_argument("--port", type=int, default=8086,
                        help="port of the front, the URL the service writes to (default: 8086; "
                             "0 picks a free one)")
    parser.add_argument("--token", default="local-dev-token",
                        help="token the front requires as `Authorization: Token ...` "
                             "(default: local-dev-token)")
    parser.add_argument("--org", default="local",
                        help="org printed for INFLUXDB_ORG; the front ignores it (default: local)")
    parser.add_argument("--influxd", default=None,
                        help="influxd binary (default: $INFLUXD, else influxd on PATH)")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                        help="arm a front fault at start, e.g. `throttle:count=3,retry_after=2`; "
                             "repeatable (actions: see tests/support/influx_front/faults.py)")
    return parser


def _stop_on_signal(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt  # one shutdown path for Ctrl-C and SIGTERM


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        influxd = args.influxd or find_influxd()
        faults = [parse_fault_arg(text) for text in args.fault]
    except InfluxdNotFound as exc:
        print(f"influx-rig: {exc}", file=sys.stderr)
        return EXIT_NO_INFLUXD
    except ValueError as exc:
        print(f"influx-rig: bad --fault: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    temp_root: Optional[Path] = None
    if args.data_dir is None:
        temp_root = Path(tempfile.mkdtemp(prefix="influx-rig-"))
        root = temp_root
    else:
        root = Path(args.data_dir).resolve()
    # Set SIGINT explicitly too: a shell starting us in the background leaves it ignored.
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    server: Optional[InfluxServer] = None
    front: Optional[InfluxFront] = None
    try:
        server = InfluxServer.start(root, binary=influxd)
        server.create_database(args.db)
        front = InfluxFront.start(root, server.url, token=args.token,
                                  port=args.port or None, faults=faults)
        print(f"influxd (v1 API, InfluxQL): {server.url}   log: {server.process.log_path}")
        print(f"front (v2 write API):       {front.url}   log: {front.process.log_path}")
        print(f"front control API:          {front.url}/_front/stats, /_front/fault, "
              "/_front/reset")
        print(f"data dir:                   {root}{' (removed on exit)' if temp_root else ''}")
        print("\n# .env.local")
        print(f"INFLUXDB_URL={front.url}")
        print(f"INFLUXDB_TOKEN={args.token}")
        print(f"INFLUXDB_ORG={args.org}")
        print(f"INFLUXDB_BUCKET={args.db}")
        print("\n# query it (InfluxQL; the front takes the token as the password)")
        print(f"influx -host 127.0.0.1 -port {front.port} -username {args.org} "
              f"-password {args.token} -database {args.db} "
              "-execute 'SELECT count(trade_id) FROM price_ticks'")
        print("\nCtrl-C to stop.", flush=True)
        while server.process.alive() and front.process.alive():
            time.sleep(0.5)
        print("influx-rig: a child exited; see the logs above", file=sys.stderr)
        return EXIT_START_FAILED
    except KeyboardInterrupt:
        print("\ninflux-rig: stopping", file=sys.stderr)
        return EXIT_OK
    except (RuntimeError, OSError) as exc:
        print(f"influx-rig: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        if front is not None:
            front.stop()
        if server is not None:
            server.stop()
        if temp_root is not None:
            shutil.rmtree(temp_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
