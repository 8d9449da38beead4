"""Run a Python entry point of scripts/ under the project's .venv, with the test extras.

The entry points (exchange-sim, influx-rig, bench) start under whatever `python3` the shell
finds (`#!/usr/bin/env python3`, or `python3 scripts/NAME`), usually the system one, which has
none of the project's dependencies. Each calls `use_repo_venv("NAME")` first, before importing
anything of the project:

- not running in `<project>/.venv`: make sure it exists, then re-execute there with the same
  arguments;
- running there but the test extras (aiohttp, websockets) are missing: install them with
  `scripts/setup-env test` (the set-up `scripts/test` uses: `pip install -e ".[test]"`, quiet
  unless it fails), then re-execute once;
- when that cannot be done: one line on stderr saying what to run, and exit 2.

Standard library only: this runs under any Python 3.9+.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = REPO_ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
SETUP_ENV = REPO_ROOT / "scripts" / "setup-env"
TEST_EXTRAS = ("aiohttp", "websockets")
# Set for the re-executed process, so that it never loops: MOVED after a plain re-exec into
# .venv, SET_UP after scripts/setup-env ran (a second set-up would fail the same way).
MARKER = "TICK_CAPTURE_VENV_REEXEC"
MOVED, SET_UP = "moved", "set-up"
EXIT_SETUP = 2


def _in_repo_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def _missing(modules: Iterable[str]) -> List[str]:
    missing = []
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return missing


def _give_up(prog: str, why: str) -> NoReturn:
    print(f"{prog}: {why}: fix that, then run `cd {REPO_ROOT} && scripts/setup-env test`",
          file=sys.stderr)
    sys.exit(EXIT_SETUP)


def _setup(prog: str, why: str, extras: str = "test") -> None:
    """Run `scripts/setup-env EXTRAS`: creates .venv if needed and installs those extras."""
    print(f"{prog}: {why}: setting up .venv with the {extras} extras (scripts/setup-env "
          f"{extras}) ...", file=sys.stderr, flush=True)
    try:  # the stamp says "installed", the imports say otherwise: let setup-env install again
        (VENV / f".installed-{extras}").unlink()
    except FileNotFoundError:
        pass
    try:
        code = subprocess.run(["bash", str(SETUP_ENV), extras], cwd=REPO_ROOT).returncode
    except OSError as exc:
        _give_up(prog, f"cannot run scripts/setup-env ({exc})")
    if code == EXIT_SETUP:
        sys.exit(EXIT_SETUP)  # a missing Debian package: setup-env's one line said what to run
    if code != 0 or not VENV_PYTHON.exists():
        _give_up(prog, f"could not set up .venv with the {extras} extras (above)")


def _reexec(stage: str) -> NoReturn:
    os.environ[MARKER] = stage
    script = os.path.abspath(sys.argv[0])
    try:
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), script, *sys.argv[1:]])
    except OSError as exc:
        print(f"cannot run {VENV_PYTHON}: {exc}", file=sys.stderr)
        sys.exit(EXIT_SETUP)


def use_repo_venv(prog: str, modules: Iterable[str] = TEST_EXTRAS, extras: str = "test") -> None:
    """Return when this process runs in the project's .venv with `modules` importable.

    Otherwise set the venv up (at most once per start) and re-execute this script there, or
    print one line saying what to run and exit 2. `extras` names the setup.cfg extra that
    brings `modules` (scripts/plot: "plot", for matplotlib).
    """
    stage = os.environ.pop(MARKER, "")  # popped: the children we start begin afresh
    if _in_repo_venv():
        missing = _missing(modules)
        if not missing:
            return
        why = f"{', '.join(missing)} missing from .venv (the {extras} extras)"
        if stage == SET_UP:
            _give_up(prog, why)
        _setup(prog, why, extras)
        _reexec(SET_UP)
    if stage:
        _give_up(prog, f"{VENV_PYTHON} does not run as the venv {VENV} (remove .venv)")
    if not VENV_PYTHON.exists():
        _setup(prog, "no .venv yet", extras)
        _reexec(SET_UP)
    _reexec(MOVED)
