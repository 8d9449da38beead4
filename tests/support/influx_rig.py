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

from tests.support.influx_front import FLAVORS, LENIENT, InfluxFront, parse_fault_arg
from tests.support.influx_server import InfluxdNotFound, InfluxServer, find_influxd
from tests.support.procs import ManagedProcess, busy_port_line, port_busy
from workers.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, exit_codes_help

EXIT_START_FAILED = EXIT_RUNTIME  # influxd or the front did not come up, or one of them died
EXIT_NO_INFLUXD = EXIT_CONFIG  # nothing to run: install influxdb or set INFLUXD
LOG_TAIL_LINES = 15  # of a child that died: its log is in a temp dir removed on exit


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
    parser.add_argument("--flavor", choices=FLAVORS, default=LENIENT,
                        help="the InfluxDB to answer like: 1.8, 2.7, 3core, serverless "
                             f"(default {LENIENT}: the front the tests use; see "
                             "tests/support/influx_front/dialects.py)")
    parser.add_argument("--write-quota", default=None, metavar="SIZE/WINDOW",
                        help="429 beyond SIZE uncompressed bytes per fixed WINDOW, e.g. 5MB/5m, "
                             "or off (default: the flavor's; serverless 5MB/5m)")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                        help="arm a front fault at start, e.g. `throttle:count=3,retry_after=2`; "
                             "repeatable (actions: see tests/support/influx_front/faults.py)")
    return parser


def rig_token(flavor: str, token: str) -> str:
    """1.8 with auth on takes `Token user:password`: a bare token becomes rig's password."""
    return f"rig:{token}" if flavor == "1.8" and ":" not in token else token


def print_read_hints(args: argparse.Namespace, port: int, token: str) -> None:
    user, _, password = token.rpartition(":") if args.flavor == "1.8" else (args.org, "", token)
    if args.flavor == "serverless":
        print("\n# Cloud Serverless reads need a DBRP mapping first (until then: database not "
              "found)")
        print(f"curl -X POST http://127.0.0.1:{port}/api/v2/dbrps -H 'Authorization: Token "
              f"{token}' -d '{{\"bucketID\": \"{args.db}\", \"database\": \"{args.db}\", "
              '"retention_policy": "autogen", "default": true}\'')
    print("\n# query it (InfluxQL; the front takes the token as the password)")
    print(f"influx -host 127.0.0.1 -port {port} -username {user} -password {password} "
          f"-database {args.db} -execute 'SELECT count(trade_id) FROM price_ticks WHERE "
          "time > now() - 1h'")


def _stop_on_signal(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt  # one shutdown path for Ctrl-C and SIGTERM


def say_exited(child: ManagedProcess) -> None:
    """A child that died, with the end of its log: printed now, as the log may be in the temp
    dir removed on exit."""
    code = child.proc.returncode if child.proc is not None else None
    lines = child.output().rstrip().splitlines()[-LOG_TAIL_LINES:]
    print(f"influx-rig: {child.name} exited (code {code}); the last {len(lines)} lines of its "
          f"log {child.log_path}:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)


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

    # Before anything starts: a front that cannot bind would find another server's /ping (a
    # first rig's) answering, and the banner would announce a rig that is not there.
    if args.port and port_busy(args.port):
        print(busy_port_line("influx-rig", args.port), file=sys.stderr)
        return EXIT_START_FAILED
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
        token = rig_token(args.flavor, args.token)
        front = InfluxFront.start(root, server.url, token=token, port=args.port or None,
                                  faults=faults, flavor=args.flavor,
                                  write_quota=args.write_quota)
        print(f"influxd (v1 API, InfluxQL): {server.url}   log: {server.process.log_path}")
        print(f"front (v2 write API):       {front.url}   log: {front.process.log_path}")
        print(f"front flavor:               {args.flavor}")
        print(f"front control API:          {front.url}/_front/stats, /_front/fault, "
              "/_front/reset")
        print(f"data dir:                   {root}{' (removed on exit)' if temp_root else ''}")
        print("\n# .env.local")
        print(f"INFLUXDB_URL={front.url}")
        print(f"INFLUXDB_TOKEN={token}")
        print(f"INFLUXDB_ORG={args.org}")
        print(f"INFLUXDB_BUCKET={args.db}")
        print_read_hints(args, front.port, token)
        print("\nCtrl-C to stop.", flush=True)
        while server.process.alive() and front.process.alive():
            time.sleep(0.5)
        for child in (server.process, front.process):
            if not child.alive():
                say_exited(child)
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
