"""Command line of the exchange simulator (`scripts/exchange-sim`)."""
from __future__ import annotations

import argparse
import errno
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import orjson

from tests.support.procs import busy_port_line, port_busy
from workers.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, exit_codes_help

from . import control
from .config import (
    ConfigError,
    SimConfig,
    SymbolSpec,
    check_status,
    check_symbol,
    parse_day,
    parse_symbol_spec,
    parse_utc_us,
)
from .replay import describe, load

DESCRIPTION = """\
A local Binance spot exchange for tests.  One port on 127.0.0.1 serves:
  WebSocket  /ws/<stream>[/<stream>...], /ws (then SUBSCRIBE), /stream?streams=a/b
             (combined framing); timeUnit=MICROSECOND|MILLISECOND (either case) on the URL
  REST       /api/v3/ping, /time, /exchangeInfo, /trades, /historicalTrades
             (weights 1/1/20/25/25, X-MBX-USED-WEIGHT-1M, 429 + Retry-After past the limit)
  control    /_sim/fault, /_sim/ledger, /_sim/stats, /_sim/trades (see below)
  archive    /data/spot/daily/trades/SYM/SYM-trades-YYYY-MM-DD.zip[.CHECKSUM] and
             /data/spot/monthly/trades/SYM/SYM-trades-YYYY-MM.zip[.CHECKSUM]: the ledger's
             trades of each UTC day or month that is over on the simulator's clock, in
             data.binance.vision's format (ms times before 2025, µs from 2025-01-01);
             defects with the control action "archive_defect"

Without --symbol and --replay one symbol runs: BTCUSDT at --rate trades/s.

Stream connection limits, all on by default and as strict as Binance's (binance.md 3);
each refusal is counted in GET /_sim/stats "refusals" (kind -> count):
  attempts   at most --max-connect-attempts (300) handshake attempts per peer IP in any
             rolling --connect-window (300 s); every attempt counts, refused ones too.
             Over it: HTTP 429, Retry-After = seconds until an attempt fits again,
             body {"code":-1003,"msg":...}                              [attempts_429]
             An attempt before that Retry-After passed: a ban of --ban-seconds (120):
             HTTP 418, Retry-After = ban left, for every attempt during the ban
             (all test clients are 127.0.0.1: one budget for the whole run)  [banned_418]
  URL        request target (path + query, as sent) over --max-url-length (8000)
             characters: HTTP 414 "URL too long: N characters, at most 8000"  [url_too_long]
  streams    more than --max-streams (1024) in the URL: HTTP 400 "Too many streams: ..."
             [too_many_streams]; a SUBSCRIBE past it: {"error":{"code":4,"msg":"Too many
             subscriptions"},"id":..}, none of its streams added  [subscribe_over_limit]
  messages   more than --max-incoming-per-sec (5) client frames (ping, pong, text)
             in a rolling second: close 1008 "Too many requests"  [too_many_requests_1008]
  Checked in that order at the handshake; "refused" in the stats is the total of handshake
  refusals (also invalid_url 400, not_websocket 426).  Change them at run time with the
  control action "limits".
"""


def build_parser() -> argparse.ArgumentParser:
    epilog = ("control API (POST /_sim/fault, and --fault):\n" + (control.__doc__ or "") + "\n"
              + exit_codes_help(ok="stopped by Ctrl-C or SIGTERM",
                                config="an argument, or a --replay file that cannot be read",
                                runtime="the port is busy"))
    parser = argparse.ArgumentParser(prog="exchange-sim", description=DESCRIPTION, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--port", type=int, default=9443, help="TCP port on 127.0.0.1 (default 9443)")
    g = parser.add_argument_group("symbols and trades")
    g.add_argument("--symbol", action="append", default=[], metavar="SPEC",
                   help="a generated symbol, repeatable: NAME[:rate=N][:price=P][:status=S]"
                        "[:start=ID], e.g. BTCUSDT:rate=200:price=60000.00 or "
                        "SHIBUSDT:price=0.00000123; rate in trades/s")
    g.add_argument("--rate", type=float, default=50.0,
                   help="trades/s of a --symbol without rate= (default 50)")
    g.add_argument("--seed", type=int, default=1,
                   help="seed of the trade sequence; each symbol's sequence depends only on "
                        "seed and symbol (default 1)")
    g.add_argument("--start-id", type=int, default=100_000,
                   help="first trade id of every symbol without start= (default 100000)")
    g.add_argument("--history", type=int, default=2_000_000, metavar="N",
                   help="trades kept per symbol for REST and resend; older ids are no longer "
                        "served, like the exchange's retention (default 2000000)")
    g.add_argument("--legacy-fields", action="store_true",
                   help="add the pre-2024-06 `b` and `a` order ids to trade payloads")
    g.add_argument("--symbol-status", action="append", default=[], metavar="SYM=STATUS",
                   help="status of a symbol in exchangeInfo, repeatable; a symbol not given by "
                        "--symbol is listed with no trades (TRADING, HALT, BREAK, END_OF_DAY, "
                        "CANCEL_ONLY); non-TRADING symbols generate nothing")
    g.add_argument("--quiet-symbols", type=int, default=0, metavar="N",
                   help="add N listed TRADING symbols without trades, Q0001USDT.. (scale tests)")
    g = parser.add_argument_group("clock, past days and archive")
    g.add_argument("--clock", metavar="UTC", default=None,
                   help="start the simulator's clock at this UTC time (YYYY-MM-DD or "
                        "YYYY-MM-DDTHH:MM:SS[Z]); it then runs at wall-clock speed. Trade "
                        "times, serverTime and the days the archive publishes follow it "
                        "(default: the wall clock)")
    g.add_argument("--past-days", action="append", default=[], metavar="SPEC",
                   help="generate past days at start, repeatable: SYMBOL:from=YYYY-MM-DD"
                        "[:to=YYYY-MM-DD][:per_day=N] (default per_day 1000): N trades "
                        "spread over each UTC day, served by REST and the archive, sent on "
                        "no stream (the control action past_days does the same at run time)")
    g.add_argument("--archive-dir", type=Path, default=None, metavar="DIR",
                   help="where archive zips are built (default: a temp dir removed at exit)")
    g = connections = parser.add_argument_group("connections")
    g.add_argument("--ping-interval", type=float, default=20.0, metavar="S",
                   help="server ping every S seconds (default 20)")
    g.add_argument("--pong-timeout", type=float, default=60.0, metavar="S",
                   help="close with 1008 'Pong timeout' when a ping is unanswered for S seconds"
                        " (default 60); the pong must echo the ping payload")
    g.add_argument("--no-server-ping", action="store_true", help="never send pings")
    g.add_argument("--no-pong-reply", action="store_true", help="never answer client pings")
    g = parser.add_argument_group("connection limits (see above; all on by default)")
    g.add_argument("--max-incoming-per-sec", type=int, default=5, metavar="N",
                   help="close with 1008 'Too many requests' when a client sends more than N "
                        "frames (ping, pong, text: SUBSCRIBE and every control message) in a "
                        "rolling second (default 5)")
    g.add_argument("--max-streams", type=int, default=1024, metavar="N",
                   help="streams per connection; SUBSCRIBE past it gets error code 4, a URL "
                        "with more is refused with HTTP 400 (default 1024)")
    g.add_argument("--max-url-length", type=int, default=8000, metavar="N",
                   help="refuse a stream connection whose request target (path + query, as "
                        "sent) is longer than N characters with HTTP 414 (default 8000; "
                        "request lines over 64 KiB get aiohttp's own 400, uncounted)")
    g.add_argument("--max-connect-attempts", type=int, default=300, metavar="N",
                   help="WebSocket handshake attempts per peer IP in a rolling "
                        "--connect-window, refused ones included; past it HTTP 429 with "
                        "Retry-After (default 300)")
    g.add_argument("--connect-window", type=float, default=300.0, metavar="S",
                   help="the rolling window of --max-connect-attempts, seconds (default 300)")
    g.add_argument("--ban-seconds", type=float, default=120.0, metavar="S",
                   help="an attempt before a 429's Retry-After has passed bans the IP for S "
                        "seconds: HTTP 418 with Retry-After = the ban left, for every attempt "
                        "until it ends (default 120)")
    g = connections
    g.add_argument("--max-conn-age", type=float, default=None, metavar="S",
                   help="close connections with 1001 at this age (the 24 h cut, compressed)")
    g.add_argument("--max-send-buffer-mb", type=float, default=64.0, metavar="MB",
                   help="abort a connection whose unsent data passes this (default 64)")
    g = parser.add_argument_group("REST")
    g.add_argument("--weight-limit", type=int, default=6000,
                   help="request weight per rolling minute before 429 (default 6000)")
    g.add_argument("--strict-limit", action="store_true",
                   help="limit > 1000 is error -1130 instead of being clamped to 1000")
    g = parser.add_argument_group("replay")
    g.add_argument("--replay", type=Path, metavar="FILE.jsonl",
                   help="play recorded stream messages (combined or raw, one a line) instead "
                        "of generating those symbols; ids per symbol must be consecutive")
    g.add_argument("--replay-timing", choices=("original", "asap"), default="original",
                   help="keep the recorded spacing of event times, or send at once")
    g.add_argument("--replay-speed", type=float, default=1.0, metavar="X",
                   help="time factor for original timing (2 = twice as fast)")
    g.add_argument("--replay-wait-for-client", action="store_true",
                   help="start the replay when a client subscribes to a replayed symbol")
    g = parser.add_argument_group("faults and logging")
    g.add_argument("--fault", action="append", default=[], metavar="JSON",
                   help="a control action at start, repeatable, e.g. "
                        "'{\"action\":\"close\",\"code\":1001,\"at\":5,\"every\":30}' "
                        "(at: seconds after start, every: repeat period)")
    g.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this one dies (tests use it, so a "
                        "killed pytest leaves no simulator behind)")
    g.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="(default INFO)")
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Validated SimConfig; raises ConfigError with a message for the user."""
    specs: Dict[str, SymbolSpec] = {}
    for text in args.symbol:
        spec = parse_symbol_spec(text, args.rate)
        if spec.name in specs:
            raise ConfigError(f"symbol {spec.name} given twice")
        specs[spec.name] = spec
    for text in args.symbol_status:
        name, sep, status = text.partition("=")
        if not sep:
            raise ConfigError(f"--symbol-status {text!r}: expected SYM=STATUS")
        name, status = check_symbol(name), check_status(status)
        base = specs.get(name) or parse_symbol_spec(name, 0.0)
        specs[name] = SymbolSpec(name, base.rate, base.price_units, status, base.start_id)
    if not specs and args.replay is None:
        specs["BTCUSDT"] = parse_symbol_spec("BTCUSDT", args.rate)
    faults: List[Dict[str, Any]] = []
    for text in args.fault:
        try:
            fault = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"--fault {text!r}: invalid JSON ({exc})") from None
        if not isinstance(fault, dict) or fault.get("action") not in control.ACTIONS:
            raise ConfigError(f"--fault {text!r}: needs a known \"action\"")
        faults.append(fault)
    past_days = [parse_past_days(text) for text in args.past_days]
    offset = 0 if args.clock is None else parse_utc_us(args.clock) - time.time_ns() // 1000
    for name, value in (("--ping-interval", args.ping_interval),
                        ("--pong-timeout", args.pong_timeout), ("--history", args.history),
                        ("--max-incoming-per-sec", args.max_incoming_per_sec),
                        ("--max-streams", args.max_streams), ("--replay-speed", args.replay_speed),
                        ("--max-url-length", args.max_url_length),
                        ("--max-connect-attempts", args.max_connect_attempts),
                        ("--connect-window", args.connect_window),
                        ("--ban-seconds", args.ban_seconds),
                        ("--max-send-buffer-mb", args.max_send_buffer_mb)):
        if value <= 0:
            raise ConfigError(f"{name} must be positive")
    return SimConfig(port=args.port, symbols=list(specs.values()),
                     quiet_symbols=args.quiet_symbols, seed=args.seed, start_id=args.start_id,
                     history=args.history, legacy_fields=args.legacy_fields,
                     ping_interval=args.ping_interval, pong_timeout=args.pong_timeout,
                     server_pings=not args.no_server_ping, answer_pings=not args.no_pong_reply,
                     max_incoming_per_sec=args.max_incoming_per_sec,
                     max_streams=args.max_streams, max_url_length=args.max_url_length,
                     max_connect_attempts=args.max_connect_attempts,
                     connect_window=args.connect_window, ban_seconds=args.ban_seconds,
                     max_conn_age=args.max_conn_age,
                     max_send_buffer=int(args.max_send_buffer_mb * 1024 * 1024),
                     weight_limit=args.weight_limit, strict_limit=args.strict_limit,
                     replay=args.replay, replay_timing=args.replay_timing,
                     replay_speed=args.replay_speed, replay_wait=args.replay_wait_for_client,
                     faults=faults, exit_with_parent=args.exit_with_parent,
                     clock_offset_us=offset, past_days=past_days, archive_dir=args.archive_dir)


def parse_past_days(text: str) -> Dict[str, Any]:
    """`BTCUSDT:from=2024-12-30:to=2025-01-01:per_day=1000` -> past_days action params."""
    name, *options = text.split(":")
    params: Dict[str, Any] = {"symbol": check_symbol(name)}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("from", "to", "per_day"):
            raise ConfigError(f"--past-days {text!r}: use from=, to= and per_day=")
        params[key] = value
    if "from" not in params:
        raise ConfigError(f"--past-days {text!r}: from= is required")
    for key in ("from", "to"):
        if key in params:
            parse_day(params[key], key)
    if "per_day" in params:
        try:
            params["per_day"] = int(params["per_day"])
        except ValueError:
            raise ConfigError(f"--past-days {text!r}: per_day must be an integer") from None
    return params


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from aiohttp import web

    from .server import Simulator

    try:
        config = config_from_args(args)
        replay = load(config.replay) if config.replay is not None else None
        sim = Simulator(config, replay)
    except (ConfigError, OSError) as exc:
        print(f"exchange-sim: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if port_busy(config.port, config.host):  # before anything is printed
        print(busy_port_line("exchange-sim", config.port), file=sys.stderr)
        return EXIT_RUNTIME
    log = logging.getLogger("exchange_sim")
    for spec in config.symbols:
        log.info("symbol %s: %s, %.6g trades/s", spec.name, spec.status, spec.rate)
    if replay:
        log.info("replay %s: %s", config.replay, describe(replay))
    # aiohttp's own request-line limit stays far above --max-url-length, so that the simulator
    # sees a long URL, answers it with its own 414 and counts it.
    try:
        web.run_app(sim.make_app(), host=config.host, port=config.port, shutdown_timeout=2.0,
                    access_log=None, print=lambda text: log.info("%s", text.strip()),
                    max_line_size=65536, max_field_size=65536)
    except OSError as exc:  # taken between the check and the bind
        if exc.errno != errno.EADDRINUSE:
            raise
        print(busy_port_line("exchange-sim", config.port), file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK
