"""The front's command line: `python -m tests.support.influx_front --influx-url URL --port N`."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from tests.support.influx_front.dialects import FLAVORS, LENIENT, dialect, resolve_limits
from tests.support.influx_front.faults import Fault, parse_fault, parse_fault_arg
from tests.support.influx_front.server import FrontServer
from workers.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME

log = logging.getLogger("influx_front")


def parse_dbrp_arg(text: str) -> Dict[str, Any]:
    """`--dbrp DB=BUCKET` (or `DB/RP=BUCKET`): a mapping as POST /api/v2/dbrps takes it."""
    name, sep, bucket = text.partition("=")
    database, _, rp = name.partition("/")
    if not sep or not database or not bucket:
        raise ValueError(f"--dbrp {text!r}: give DB=BUCKET, e.g. ticks=ticks")
    return {"database": database, "retention_policy": rp or "autogen", "bucketID": bucket,
            "default": True}


async def serve(server: FrontServer, faults: Sequence[Fault]) -> None:
    """Run the front until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(faults)
        await stop.wait()
    finally:
        await server.close()
    log.info("influx-front stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.influx_front",
        description="Serve the InfluxDB 2.x write API and InfluxQL /query on loopback in front "
                    "of an InfluxDB 1.x server, in the dialect of one InfluxDB flavor, with "
                    "faults on demand (see tests/support/influx_front/__init__.py).")
    parser.add_argument("--influx-url", required=True,
                        help="the influxd 1.x HTTP URL, e.g. http://127.0.0.1:8086")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--token", default=None,
                        help="require this token (`Authorization: Token TOKEN`; on 1.8 it is "
                             "`user:password`); default: accept any")
    parser.add_argument("--flavor", choices=FLAVORS, default=LENIENT,
                        help=f"the server to answer like (default {LENIENT}: the front as it "
                             "always was)")
    parser.add_argument("--write-quota", default=None, metavar="SIZE/WINDOW",
                        help="429 + Retry-After beyond SIZE uncompressed bytes per fixed WINDOW, "
                             "e.g. 5MB/5m, or off (default: the flavor's; serverless 5MB/5m)")
    parser.add_argument("--max-body", default=None, metavar="SIZE",
                        help="413 over SIZE bytes as sent, or off (default: the flavor's)")
    parser.add_argument("--max-inflated", default=None, metavar="SIZE",
                        help="413 over SIZE bytes after gzip, or off (default: the flavor's)")
    parser.add_argument("--retention", default=None, metavar="DURATION",
                        help="refuse points older than this, e.g. 30d, or off (default: the "
                             "flavor's; serverless 30d)")
    parser.add_argument("--query-span", default=None, metavar="DURATION",
                        help="refuse a SELECT over more than this (or with no time bound), "
                             "or off (default: the flavor's; 3core 72h)")
    parser.add_argument("--dbrp", action="append", default=[], metavar="DB=BUCKET",
                        help="a DBRP mapping at start (2.7, serverless); repeatable")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                        help="arm a fault at start: `action[:key=value,...]` or a JSON object, "
                             "e.g. `throttle:count=3,retry_after=2`; repeatable")
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        faults: List[Fault] = [parse_fault(parse_fault_arg(text), time.monotonic())
                               for text in args.fault]
    except (ValueError, TypeError) as exc:
        print(f"influx-front: bad --fault: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        flavor = dialect(args.flavor)
        limits = resolve_limits(flavor, args.write_quota, args.max_body, args.max_inflated,
                                args.retention, args.query_span)
        dbrps = [parse_dbrp_arg(text) for text in args.dbrp]
        if flavor.query_password == "user_password" and args.token and ":" not in args.token:
            raise ValueError("flavor 1.8 takes the token as `user:password`")
    except ValueError as exc:
        print(f"influx-front: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    server = FrontServer(args.influx_url, args.host, args.port, args.token, flavor, limits,
                         dbrps)
    try:
        asyncio.run(serve(server, faults))
    except OSError as exc:  # typically the port is taken
        print(f"influx-front: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK
