"""`python -m workers NAME`: run worker NAME of config/symbols.yaml until SIGTERM or Ctrl-C."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

from workers.common import diskerrors, lock
from workers.common.lean_imports import keep_unused_imports_out
from workers.errors import (
    EXIT_CONFIG,
    EXIT_UNEXPECTED,
    AlreadyRunning,
    ConfigError,
    exit_codes_help,
)
from workers.settings import DEFAULT_ENV_FILE, Settings, load_env, load_settings
from workers.symbols import DEFAULT_SYMBOLS_FILE, find_worker, load_symbols

log = logging.getLogger("workers")
LOCK_NAME = "worker.lock"  # in the worker's home, DATA_DIR/<worker>/
# An unexpected crash waits this long before exiting, so supervisord cannot respawn it hot.
CRASH_PAUSE_S = 5.0


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workers",
        description="Stream every trade of one worker's Binance pairs into InfluxDB (or into "
                    "line-protocol files when INFLUXDB_URL is unset). Settings come from the "
                    "environment and .env.local; see .env.example.",
        epilog=exit_codes_help(ok="stopped cleanly (SIGTERM or Ctrl-C)",
                               config="restarting cannot help: fix the named setting or line"))
    parser.add_argument("name", help="the worker: a symbol in lowercase (btcusdt) or a group "
                                     "name from the symbols file")
    parser.add_argument("--config", type=Path, default=DEFAULT_SYMBOLS_FILE,
                        help=f"the symbols file (default: {DEFAULT_SYMBOLS_FILE})")
    parser.add_argument("--env-file", type=Path, default=None,
                        help=f"settings file (default: {DEFAULT_ENV_FILE} if it exists); the "
                             "process environment wins over it")
    parser.add_argument("--no-symbol-check", action="store_true",
                        help="skip checking the symbols against the exchange's exchangeInfo")
    return parser.parse_args(argv)


def set_log_host(host: str) -> None:
    """Every later line carries `host=<CAPTURE_HOST>` after the level (the time stays first),
    so the logs of several hosts capturing the same pairs can be told apart when merged."""
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s host={host} %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def claim_home(settings: Settings, name: str) -> lock.HeldLock:
    """Before anything opens the worker's checkpoint, spool or status file: its directories
    can be written (else one ConfigError naming the directory, the cause and the fix), and no
    other process runs this worker (else AlreadyRunning, with nothing of that one touched).
    The lock is held until the process ends."""
    home = settings.data_dir / name
    try:
        home.mkdir(parents=True, exist_ok=True)
        held = lock.hold(home / LOCK_NAME)
    except OSError as exc:
        raise diskerrors.config_error(exc, home, "DATA_DIR") from None
    diskerrors.writable_dir(settings.run_dir / "status", "RUN_DIR")
    return held


def already_running(name: str, exc: AlreadyRunning) -> str:
    """The refusal: who runs the worker, how to see it, how to run this one instead."""
    who = f"pid {exc.pid}" if exc.pid else "another process"
    stop = f"scripts/supervisorctl stop {name}" + (f", or kill {exc.pid}" if exc.pid else "")
    return (f"worker {name} already runs as {who} on {exc.path.parent}: see it with "
            f"scripts/supervisorctl status {name} (or scripts/status); stop it first ({stop}), "
            "or give this one its own DATA_DIR and RUN_DIR")


def main(argv: Optional[List[str]] = None) -> int:
    keep_unused_imports_out()
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.Formatter.converter = time.gmtime
    try:
        settings = load_settings(load_env(args.env_file))
        logging.getLogger().setLevel(settings.log_level)
        set_log_host(settings.capture_host)
        spec = find_worker(load_symbols(args.config), args.name, args.config)
        held = claim_home(settings, spec.name)
        from workers.capture.worker import (
            Worker,  # after the config checks: a bad config fails fast
        )

        worker = Worker(spec, settings)
        if not args.no_symbol_check:
            worker.check_symbols()
    except AlreadyRunning as exc:
        log.error("worker=%s event=already_running pid=%s lock=%s error='%s'", args.name,
                  exc.pid or "?", exc.path, already_running(args.name, exc))
        return EXIT_CONFIG
    except ConfigError as exc:
        log.error("worker=%s event=config_error error=%s", args.name, exc)
        return EXIT_CONFIG
    try:
        code = worker.run()
    except Exception:
        log.exception("worker=%s event=crashed pause_s=%.0f", args.name, CRASH_PAUSE_S)
        code = EXIT_UNEXPECTED
    if code == EXIT_UNEXPECTED:
        time.sleep(CRASH_PAUSE_S)  # flushed already; the pause keeps supervisord from a hot loop
    held.release()  # only now: the flush and the pause are still this worker's
    return code


if __name__ == "__main__":
    sys.exit(main())
