"""Keep supervisord's workers in line with `config/symbols.yaml`.

    python -m workers.ops.reconcile --watch   # what supervisord runs as [program:reconciler]
    python -m workers.ops.reconcile --once    # apply the file now and print what changed

One pass: read and check the symbols file -> keep this host's share of it ('hosts:' and
CAPTURE_HOST; a file without 'hosts:': every worker) -> check new symbols against the exchange ->
render `run/workers.conf` (written only if its text changed) -> reloadConfig over the socket and
apply the difference (supervisor_rpc.apply_changes). A file with an error changes nothing: the
running workers go on, and the error is logged once per version of the file. A worker that
leaves this host's share is stopped and unloaded like a removed one (its data/ and checkpoint
stay); a change of the share is logged once (`event=share host=a workers=... elsewhere=...`).

`--watch` polls the file's mtime every 2 s (no inotify dependency), retries a pass that failed
(supervisord busy or shutting down, an operator's `stop all` racing a removal, a broken hand
edit of supervisor.conf), and revives FATAL workers after a cool-down unless they failed on a
configuration error.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from workers.common.atomic import write_atomic
from workers.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, ConfigError, exit_codes_help
from workers.ops.supervisor_render import (
    RenderSettings,
    parse_rendered,
    read_text,
    render,
    write_if_changed,
)
from workers.ops.supervisor_rpc import (
    RPC_ERRORS,
    ApplyResult,
    apply_changes,
    connect,
    describe,
    revive_fatal,
)
from workers.ops.symbol_check import SymbolCheck, exchange_check, unknown_symbols_error
from workers.settings import (
    PROJECT_ROOT,
    REVIVE_AFTER_S,
    load_env,
    revive_after_s,
    supervisor_process_name,
    supervisor_server_url,
)
from workers.symbols import SymbolsFile, WorkerSpec, load_file, this_host

log = logging.getLogger("workers.ops.reconcile")
SELF_NAME = "reconciler"  # never touched, whatever reloadConfig says about it
POLL_S = 2.0
SETTLE_S = 1.0  # a file younger than this may still be being written by an editor
RECHECK_S = 60.0  # symbols applied unchecked (exchange unreachable) are checked this often
FileSig = Optional[Tuple[int, int, int]]
# The error of the symbols file the reconciler refused, for scripts/status: an unknown symbol
# is found only by asking the exchange, which scripts/status does not do itself.
CONFIG_ERROR_NAME = "symbols-error.json"


class Reconciler:
    def __init__(self, settings: RenderSettings, rpc_factory: Callable[[], Any],
                 check: Optional[SymbolCheck] = None, host: Optional[str] = None) -> None:
        self.settings = settings
        self.host = host  # None: CAPTURE_HOST (.env.local, the environment) at each pass
        self.rpc_factory = rpc_factory
        self.check = check
        self.self_name = supervisor_process_name(SELF_NAME)
        # Every name rendered by this process or found in the include file: ours to manage.
        self.known: Set[str] = set(parse_rendered(read_text(settings.include_path)))
        self._said: Dict[str, str] = {}  # topic -> last message logged, to log a state once
        # Symbols applied while the exchange could not be asked: a misspelt one would run as a
        # worker that never receives a trade (the stream accepts any name), so ask again.
        self.unchecked: Set[str] = set()
        self.refused: Set[str] = set()  # found unknown (applied unchecked before): ask again
        self._checked_at = 0.0
        self._share: Optional[str] = None  # the share last logged (event=share)
        self.file: Optional[SymbolsFile] = None  # the file of the last load()
        self.host_now = host or ""  # the host of the last load()

    # -- one pass -----------------------------------------------------------------------
    def load(self) -> List[WorkerSpec]:
        """This host's checked specs; ConfigError (file:line: problem: fix) when the file is
        wrong (or names hosts, but not this one)."""
        # First start (nothing rendered yet): a missing file is created from the example.
        file = load_file(self.settings.symbols_file,
                         create=not parse_rendered(read_text(self.settings.include_path)))
        host = self.host or this_host()
        specs = file.share(host)
        self.file, self.host_now = file, host
        if self.check is not None:
            self._check_exchange(specs)
        return specs

    def _check_exchange(self, specs: List[WorkerSpec]) -> None:
        """Refuse symbols the exchange does not know, before a worker is restarted for them."""
        before = {s for syms in parse_rendered(read_text(self.settings.include_path)).values()
                  for s in syms}
        new = [s for spec in specs for s in spec.symbols
               if s not in before or s in self.unchecked or s in self.refused]
        if not new or self.check is None:
            return
        try:
            known = self.check(new)
        except Exception as exc:  # the exchange is unreachable: checked again until it answers
            self.unchecked = set(new)
            self._checked_at = time.monotonic()
            self.say("symbol_check", logging.WARNING,
                     f"event=symbol_check_skipped error={str(exc)[:200]!r} note='new symbols "
                     f"applied unchecked: {','.join(new)}; checked again every "
                     f"{RECHECK_S:.0f} s until the exchange answers'")
            return
        self._said.pop("symbol_check", None)
        self.unchecked = set()
        unknown = [s for s in new if s not in known]
        self.refused = set(unknown)  # asked about again at each pass, until fixed
        if unknown:
            raise unknown_symbols_error(self.settings.symbols_file,
                                        read_text(self.settings.symbols_file), specs, unknown)

    def apply(self, specs: List[WorkerSpec]) -> ApplyResult:
        """Write the include file and apply it; raises RPC errors from reloadConfig."""
        with self._lock():
            text = render(specs, self.settings)
            self.known |= set(parse_rendered(read_text(self.settings.include_path)))
            self.known |= {s.name for s in specs}
            write_if_changed(self.settings.include_path, text)
            rpc = self.rpc_factory()
            self._adopt(rpc)
            return apply_changes(rpc, self.is_managed, self.settings.stopwaitsecs + 10.0)

    def _adopt(self, rpc: Any) -> None:
        """Also manage programs that log where render() puts worker logs.

        That covers a worker dropped from an include file whose apply failed in an earlier
        process (a --once that supervisord refused): no other record of it is left.
        """
        for info in rpc.supervisor.getAllProcessInfo():
            if info.get("stdout_logfile") == str(self.settings.logfile(info["name"])):
                self.known.add(info["name"])

    def is_managed(self, name: str) -> bool:
        return name != self.self_name and name != SELF_NAME and name in self.known

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # --once and --watch may run at the same time: one pass at a time.
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.run_dir / "reconcile.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def say(self, topic: str, level: int, message: str) -> None:
        """Log `message` unless it is what was last said on `topic` (a state, not an event)."""
        if self._said.get(topic) != message:
            self._said[topic] = message
            log.log(level, "%s %s", self.self_name, message)

    # -- the watch loop -----------------------------------------------------------------
    def watch(self, stop: threading.Event, poll_s: float = POLL_S,
              revive_after_s: float = REVIVE_AFTER_S) -> None:
        _tighten(self.settings.run_dir)
        last_sig: FileSig = None
        pending = True  # the first pass always applies: the file may have changed while down
        log.info("%s event=watching file=%s poll_s=%.1f revive_after_s=%.0f", self.self_name,
                 self.settings.symbols_file, poll_s, revive_after_s)
        while not stop.is_set():
            try:
                sig = _signature(self.settings.symbols_file)
                if (sig != last_sig or pending) and not _settling(self.settings.symbols_file):
                    last_sig = sig
                    pending = self.pass_once()
                elif self.unchecked and time.monotonic() - self._checked_at >= RECHECK_S:
                    self._checked_at = time.monotonic()
                    pending = self.pass_once()  # asks the exchange about them again
                self.revive(revive_after_s)
            except Exception as exc:  # a bug, an unwritable run/: keep watching and retry
                pending = True
                if self._said.get("crash") != repr(exc):
                    self._said["crash"] = repr(exc)
                    log.exception("%s event=pass_crashed note='retrying at every poll'",
                                  self.self_name)
            stop.wait(poll_s)
        log.info("%s event=stopped", self.self_name)

    def pass_once(self) -> bool:
        """Load, render, apply and log; True when the pass must be retried at the next poll."""
        sig = _signature(self.settings.symbols_file)
        try:
            specs = self.load()
        except ConfigError as exc:
            # Waits for the next edit of the file: retrying cannot help.
            self.say("config", logging.ERROR, f"event=config_error error={exc} "
                     "note='nothing changed; the running workers go on'")
            _record_config_error(self.settings, str(exc), sig)
            return False
        _record_config_error(self.settings, None, sig)
        if self._said.pop("config", None) is not None:
            log.info("%s event=config_ok file=%s", self.self_name, self.settings.symbols_file)
        self._log_share()
        try:
            result = self.apply(specs)
        except RPC_ERRORS as exc:
            self.say("rpc", logging.ERROR, f"event=apply_failed error={describe(exc)!r} "
                     "note='retrying at every poll'")
            return True
        if result.errors:
            self.say("rpc", logging.ERROR, f"event=apply_incomplete done={result.summary()!r} "
                     f"errors={'; '.join(result.errors)!r} note='retrying at every poll'")
        else:
            self._said.pop("rpc", None)
        if not result.nothing:
            log.info("%s event=applied added=%s changed=%s removed=%s", self.self_name,
                     ",".join(result.added), ",".join(result.changed), ",".join(result.removed))
        return bool(result.errors)

    def _log_share(self) -> None:
        """One line when this host's share changes (a file without 'hosts:' has none)."""
        file = self.file
        if file is None:
            return
        host = self.host_now
        if file.sharded:
            share = (f"host={host} workers={','.join(w.name for w in file.share(host))} "
                     f"elsewhere={','.join(w.name for w in file.elsewhere(host))}")
        else:
            share = f"host={host} workers=all note='no hosts: section: every worker runs here'"
        if self._share is None and not file.sharded:
            self._share = share  # never sharded: nothing to say
        elif share != self._share:
            self._share = share
            log.info("%s event=share %s", self.self_name, share)

    def revive(self, cooldown_s: float) -> None:
        """Revive FATAL workers; report (once) those that stopped on a config error."""
        try:
            rpc = self.rpc_factory()
            infos = rpc.supervisor.getAllProcessInfo()
            out = revive_fatal(rpc, infos, self.is_managed, cooldown_s)
        except RPC_ERRORS as exc:
            self.say("revive", logging.WARNING, f"event=status_unavailable "
                     f"error={describe(exc)!r}")
            return
        self._said.pop("revive", None)
        for name in out.revived:
            log.warning("%s event=revived worker=%s note='it was FATAL (too many quick exits) "
                        "for %.0f s; starting it again'", self.self_name, name, cooldown_s)
        for name, error in sorted(out.config_errors.items()):
            self.say(f"dead:{name}", logging.ERROR, f"event=worker_config_error worker={name} "
                     f"error={error} note='not restarted: fix it, then scripts/supervisorctl start "
                     f"{name}'")
        for name in [t[5:] for t in self._said if t.startswith("dead:")]:
            if name not in out.config_errors:
                del self._said[f"dead:{name}"]
        for error in out.errors:
            log.error("%s event=revive_failed error=%r", self.self_name, error)


def _record_config_error(settings: RenderSettings, error: Optional[str], sig: FileSig) -> None:
    """Keep (or clear) the refused file's error where scripts/status finds it."""
    path = settings.run_dir / CONFIG_ERROR_NAME
    try:
        if error is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, json.dumps({"error": error, "file": list(sig or ())}),
                         durable=False)
    except OSError as exc:
        log.warning("%s event=status_write_failed file=%s error=%s", SELF_NAME, path, exc)


def config_error(settings: RenderSettings) -> Optional[str]:
    """The reconciler's error for the symbols file as it is now (None: none, or the file
    changed since, so the reconciler has yet to check it)."""
    try:
        data = json.loads((settings.run_dir / CONFIG_ERROR_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("file") != list(
            _signature(settings.symbols_file) or ()):
        return None
    return str(data.get("error") or "") or None


def _signature(path: Path) -> FileSig:
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return None


def _settling(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime < SETTLE_S
    except OSError:
        return False


def _tighten(run_dir: Path) -> None:
    """run/ holds the control socket: only its owner should enter it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
    except OSError as exc:
        log.warning("%s event=chmod_failed dir=%s error=%s", SELF_NAME, run_dir, exc)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.ops.reconcile",
        description="Apply config/symbols.yaml to the running supervisord: render "
                    "run/workers.conf and add, restart or remove only the workers that changed.",
        epilog="--once: " + exit_codes_help(
            ok="applied, nothing to do, or supervisord not running (applied when it starts)",
            config="the symbols file or a setting is wrong: nothing was changed",
            runtime="supervisord refused or failed part of it"))
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--watch", action="store_true", help="poll the file and apply each change "
                      "(run by supervisord as [program:reconciler])")
    mode.add_argument("--once", action="store_true", help="apply the file now, print the changes")
    mode.add_argument("--render", action="store_true", help="print run/workers.conf as it would "
                      "be written, and exit")
    parser.add_argument("--no-symbol-check", action="store_true",
                        help="do not ask the exchange whether new symbols exist")
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between polls")
    parser.add_argument("--revive-after", type=float, default=None,
                        help="seconds a worker stays FATAL before it is started again "
                             f"(default: $RECONCILER_REVIVE_AFTER_S or {REVIVE_AFTER_S:g})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.Formatter.converter = time.gmtime

    settings = RenderSettings.for_root(PROJECT_ROOT)
    try:
        env = load_env()
        if args.revive_after is None:
            args.revive_after = revive_after_s(env)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    check = None if args.no_symbol_check or args.render else exchange_check(env)
    url = supervisor_server_url() or settings.socket_url
    rec = Reconciler(settings, lambda: connect(url), check)
    if args.render:
        try:
            sys.stdout.write(render(load_file(settings.symbols_file).share(this_host()),
                                    settings))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_OK
    if args.watch:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        rec.watch(stop, args.poll, args.revive_after)
        return EXIT_OK
    return _once(rec, url)


def _once(rec: Reconciler, url: str) -> int:
    try:
        specs = rec.load()
    except ConfigError as exc:
        print(f"error: {exc}\nnothing was changed.", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result = rec.apply(specs)
    except RPC_ERRORS as exc:
        include = rec.settings.include_path
        if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
            print(f"supervisord is not running (no answer at {url}): {include} is written and "
                  f"applies when it starts (scripts/run, or scripts/run --daemon)")
            return EXIT_OK
        print(f"error: supervisord refused the change: {describe(exc)}", file=sys.stderr)
        return EXIT_RUNTIME
    print(result.summary())
    file = rec.file
    if file is not None and file.sharded:
        elsewhere = ", ".join(w.name for w in file.elsewhere(rec.host_now)) or "none"
        print(f"this host ({rec.host_now}) runs its share of {rec.settings.symbols_file.name}; "
              f"on other hosts only: {elsewhere}")
    if result.ignored:
        print(f"left alone (not from the symbols file): {', '.join(result.ignored)}")
    for error in result.errors:
        print(f"error: {error} (run this again, or let the reconciler retry)", file=sys.stderr)
    return EXIT_RUNTIME if result.errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
