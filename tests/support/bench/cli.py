"""`scripts/bench`: run the sections, print the markdown report and save it.

Bounded: every wait has a timeout, sections are skipped once the profile's deadline has passed,
and every process started is stopped at the end, on an error and on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tests.support.influx_server import InfluxdNotFound, find_influxd
from tests.support.procs import REPO_ROOT
from workers.errors import EXIT_CONFIG, EXIT_OK, exit_codes_help

from . import (
    ceilings,
    hotpath,
    latency,
    machine,
    memory,
    original,
    quota,
    ramp,
    recovery,
    scale,
    storm,
    targets,
)
from .procstat import LoadWatch
from .report import Section, Target, render_document, targets_table
from .rig import FULL, QUICK, Profile, Rig

SectionRun = Callable[[Rig, Profile, Dict[str, Any]], Section]
SECTIONS: List[Tuple[str, str, SectionRun]] = [
    ("ceilings", "1. Ceilings (same run)", lambda rig, p, f: ceilings.run(rig, p)),
    ("ramp", "2. One worker, one symbol: ramp of offered load", ramp.run),
    ("original", "3. The original design at the same offered loads", original.run),
    ("latency", "4. Latency: trade time → stored", latency.run),
    ("memory", "5. Memory per worker process", memory.run),
    ("scale", "6. Scale: the whole spot list under supervisord", scale.run),
    ("storm", "7. A start of many workers under the connection budget", storm.run),
    ("recovery", "8. Recovery: spool drain, backfill, first trade, kill -9", recovery.run),
    ("hotpath", "9. The hot path, stage by stage (one process, no network)", hotpath.run),
    ("quota", "10. The write quota: bytes per trade line, gzip's cost", quota.run),
]
DISTURBED_CORES = 0.5  # other processes using this much CPU on average: the section re-runs
DEFAULT_OUT = REPO_ROOT / "bench-results" / "latest.md"
# Outside the table of workers/errors.py on purpose: the shell's code for a run ended by Ctrl-C
# (128 + SIGINT), so a caller never takes a partial report for a finished one.
EXIT_INTERRUPTED = 130


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    names = [name for name, _, _ in SECTIONS]
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark the capture service on this box: simulator, InfluxDB (through "
                    "the test front) and real worker processes on 127.0.0.1. Prints a markdown "
                    "report and saves it (default bench-results/latest.md).",
        epilog=f"Sections: {', '.join(names)}. Full run ~18 min (at most 30), --quick ~4 min. "
               + exit_codes_help(ok="report written",
                                 config="an argument, or no influxd: install influxdb or set "
                                        "INFLUXD")
               + f" {EXIT_INTERRUPTED}: interrupted (the partial report is saved apart).")
    parser.add_argument("--quick", action="store_true", help="short windows, fewer steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where to save the report (a .json of the raw facts goes next "
                             "to it); default %(default)s")
    parser.add_argument("--only", default="", metavar="SECTION[,SECTION]",
                        help=f"run only these sections ({', '.join(names)})")
    parser.add_argument("--update-readme", action="store_true",
                        help="replace the table between the bench markers of README.md "
                             "with this run's (a full run's figures are the published ones)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (logs of every process) and print its path")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in names]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.sections = only or names
    return args


def _stop_on_signal(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt  # one clean-up path for Ctrl-C and SIGTERM


def run_sections(rig: Rig, profile: Profile, wanted: List[str], watch: LoadWatch,
                 began: float, log: Callable[[str], None], done: List[Section],
                 facts: Dict[str, Any]) -> None:
    """Run the wanted sections in order, appending to `done` and `facts` as each finishes
    (so an interrupted run still reports the finished ones)."""
    for key, title, fn in SECTIONS:
        if key not in wanted:
            continue
        if time.monotonic() - began > profile.deadline_s:
            done.append(Section(key, title, error="skipped: the run's time budget "
                                                  f"({profile.deadline_s / 60:.0f} min) is spent"))
            continue
        log(f"section {key} ...")
        sec = _attempt(rig, profile, facts, key, title, fn, watch)
        fits = sec.load is not None and (time.monotonic() - began + sec.load.seconds
                                         < profile.deadline_s * 0.85)
        if (profile.rerun_disturbed and sec.load is not None and not sec.error
                and sec.load.foreign_cores > DISTURBED_CORES and fits):
            log(f"section {key}: disturbed ({sec.load.foreign_cores:.2f} foreign cores), "
                "running it again")
            again = _attempt(rig, profile, facts, key, title, fn, watch)
            first_load = sec.load.describe()
            if not again.error and again.load is not None and \
                    again.load.foreign_cores < sec.load.foreign_cores:
                sec = again
            sec.attempts = 2
            sec.notes.append(f"Re-run because other processes used more than "
                             f"{DISTURBED_CORES} cores; first run: {first_load}.")
        facts.update(sec.facts)
        done.append(sec)
        log(f"section {key} done in {sec.load.seconds if sec.load else 0:.0f} s")


def _attempt(rig: Rig, profile: Profile, facts: Dict[str, Any], key: str, title: str,
             fn: SectionRun, watch: LoadWatch) -> Section:
    mark = watch.mark()
    try:
        sec = fn(rig, profile, dict(facts))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # report it and go on with the next section
        sec = Section(key, title, error=f"{type(exc).__name__}: {exc}")
        sec.notes.append("Traceback (last lines): `" +
                         " / ".join(traceback.format_exc().strip().splitlines()[-4:]) + "`")
    sec.load = watch.since(mark)
    return sec


README_BEGIN = "<!-- bench:begin (scripts/bench --update-readme writes this block) -->"
README_END = "<!-- bench:end -->"


def readme_block(mode: str, box: Sequence[Sequence[str]], found: List[Target],
                 started: float, seconds: float, command: str) -> str:
    """The README's goal / measured / verdict table, with the run and the machine it ran on."""
    facts = dict((k, v) for k, v in box)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    head = (f"Measured {when} by `{command}` ({mode} run, {seconds / 60:.1f} min) on "
            f"{facts.get('cores (logical)')} x {facts.get('CPU')}, {facts.get('RAM')}, "
            f"Python {facts.get('Python')}, {facts.get('influxd')}, websocket-client "
            f"{facts.get('websocket-client')}, influxdb-client {facts.get('influxdb-client')}; "
            f"code {facts.get('code under test')}.")
    table = targets_table(found)
    table.title = ""
    return f"{head}\n\n{table.render()}"


def replace_between_markers(text: str, block: str) -> str:
    """`text` with what lies between the bench markers replaced by `block`."""
    try:
        start = text.index(README_BEGIN) + len(README_BEGIN)
        end = text.index(README_END, start)
    except ValueError:
        raise SystemExit(f"bench: README.md lacks the markers {README_BEGIN!r} ... "
                         f"{README_END!r}") from None
    return f"{text[:start]}\n{block}\n{text[end:]}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    try:
        influxd = find_influxd()
    except InfluxdNotFound as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    started, began = time.time(), time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    watch = LoadWatch(os.getpid()).start()
    rig = Rig(root, profile)
    sections: List[Section] = []
    facts: Dict[str, Any] = {}
    interrupted = False

    def log(text: str) -> None:
        print(f"[bench {time.monotonic() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    try:
        log(f"{profile.name} run, sections {', '.join(args.sections)}; temp dir {root}")
        rig.start()
        run_sections(rig, profile, args.sections, watch, began, log, sections, facts)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every process started")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        problems = rig.close()
        watch.stop()
        for p in problems:
            log(f"clean-up: {p}")
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    command = "scripts/bench " + " ".join(shlex.quote(a) for a in
                                          (sys.argv[1:] if argv is None else argv))
    doc = render_document(profile.name + (", interrupted" if interrupted else ""),
                          machine.describe(influxd, REPO_ROOT), targets.evaluate(facts), sections,
                          started, time.monotonic() - began, command.strip())
    print(doc)
    # An interrupted run must not replace the last complete report.
    out = args.out.with_name(f"{args.out.stem}-interrupted{args.out.suffix}") if interrupted \
        else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    out.with_suffix(".json").write_text(json.dumps(facts, indent=1, default=str))
    log(f"saved {out}")
    if args.update_readme and not interrupted:
        readme = REPO_ROOT / "README.md"
        readme.write_text(replace_between_markers(readme.read_text(), readme_block(
            profile.name, machine.describe(influxd, REPO_ROOT), targets.evaluate(facts),
            started, time.monotonic() - began, command.strip())))
        log(f"updated the benchmark table of {readme}")
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
