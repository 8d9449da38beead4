"""The one launcher of scripts/: every entry point there but run, test and setup-env uses it.

Each of apply-symbols, bench, demo, doctor, exchange-sim, gap-audit, influx-rig, load-files, plot,
status and supervisorctl is the same thin shim: `#!/usr/bin/env python3`, a docstring that is its
short usage, and one call, `launch("package.module:function", __doc__, ...)`. It starts under
whatever `python3` the shell finds (`scripts/NAME` or `python3 scripts/NAME`, usually the system
one, which has none of the project's dependencies). `launch`, standard library only, then:

1. `-h`/`--help` while there is no `.venv/bin/python`: prints the shim's usage and how to get the
   full help, exit 0, and sets nothing up;
2. not running in `<project>/.venv`: re-executes the shim there, with the same arguments;
3. when there is no working .venv (none, its python gone, not a venv) or it lacks a module the
   project needs (the `extras` too):
   - a tool (`sets_up=True`: bench, demo, doctor, exchange-sim, gap-audit, influx-rig,
     load-files, plot) runs `scripts/setup-env EXTRAS`, saying so in one line on stderr
     (setup-env's own lines are kept for the failure line), then re-executes once;
   - a command of the running service (`sets_up=False`: status, apply-symbols, supervisorctl;
     scripts/run set their .venv up) changes nothing: a cron health check must read "not set up",
     not "unhealthy", and never waits on pip;
   either way, when it cannot be done: one line on stderr saying why and what to run, exit 2 (the
   set-up/configuration code of the project's exit codes), never a traceback;
4. calls the function with the shim's fixed arguments and the command line's, and exits with
   what it returns. A module still missing then (a late import) is one line and exit 2 too.

stdout belongs to the tool (monitors parse scripts/status): every line of the launcher goes to
stderr. Runs under any Python 3.9+.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, NoReturn, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = REPO_ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
SETUP_ENV = REPO_ROOT / "scripts" / "setup-env"
# What .venv must hold, by import name: setup.cfg's install_requires, and what each extra adds
# (type stubs aside: nothing imports them at run time). A spec checks both against setup.cfg.
BASE_MODULES = ("websocket", "influxdb_client", "urllib3", "dotenv", "supervisor", "yaml",
                "orjson", "wsaccel")
EXTRA_MODULES: Dict[str, Tuple[str, ...]] = {
    "": (),
    "plot": ("matplotlib",),
    "test": ("pytest", "aiohttp", "xdist", "websockets", "mypy", "ruff", "matplotlib"),
}
# Set for the re-executed process, so that it never loops: MOVED after a plain re-exec into
# .venv, SET_UP after scripts/setup-env ran (a second set-up would fail the same way).
MARKER = "TICK_CAPTURE_VENV_REEXEC"
MOVED, SET_UP = "moved", "set-up"
# EXIT_CONFIG of workers/errors.py (a set-up a person must do). Not imported: this file runs
# under any python3 before .venv exists; a unit spec keeps the two equal.
EXIT_SETUP = 2
HELP_FLAGS = ("-h", "--help")
OUR_PACKAGES = ("workers", "tests")  # an ImportError of these is a bug, shown in full
# setup-env's failure lines end so; the launcher names the exact command instead.
SETUP_ENV_TAIL = ", then run this again"


def _prog() -> str:
    return Path(sys.argv[0]).name


def _setup_command(extras: str) -> str:
    return f"cd {REPO_ROOT} && scripts/setup-env{' ' + extras if extras else ''}"


def _with_extras(extras: str) -> str:
    return f" with the {extras} extras" if extras else ""


def _fail(line: str) -> NoReturn:
    print(f"{_prog()}: {line}", file=sys.stderr)
    sys.exit(EXIT_SETUP)


def _in_repo_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def _missing(extras: str) -> List[str]:
    """The modules the project (with `extras`) needs that this interpreter cannot import.

    find_spec only locates them: no module of the project's dependencies runs here.
    """
    wanted = BASE_MODULES + EXTRA_MODULES.get(extras, ())
    return [name for name in dict.fromkeys(wanted) if importlib.util.find_spec(name) is None]


def _some(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _wants_help(args: Sequence[str]) -> bool:
    before_dashes = args[:list(args).index("--")] if "--" in args else args
    return any(arg in HELP_FLAGS for arg in before_dashes)


def _print_usage(usage: str, sets_up: bool) -> NoReturn:
    """The shim's own usage, before anything is set up: --help must never install."""
    first = (f"scripts/{_prog()} sets .venv up on its first run" if sets_up
             else "`scripts/setup-env` sets .venv up (`scripts/run` too, and starts the service)")
    note = textwrap.fill(f".venv is not set up yet: {first}; then `scripts/{_prog()} --help` "
                         "lists every option.", width=95)
    text = f"{textwrap.dedent(usage).strip()}\n\n{note}\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `--help | head -1`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


def _setup(why: str, extras: str) -> None:
    """Run `scripts/setup-env EXTRAS` (creates or repairs .venv, installs the project), quietly.

    One line says it runs; its output is shown only through the failure line.
    """
    print(f"{_prog()}: {why}: setting up .venv{_with_extras(extras)} (scripts/setup-env"
          f"{' ' + extras if extras else ''}) ...", file=sys.stderr, flush=True)
    try:  # the stamp says "installed", the imports say otherwise: let setup-env install again
        (VENV / f".installed{'-' + extras if extras else ''}").unlink()
    except OSError:
        pass
    argv = ["bash", str(SETUP_ENV)] + ([extras] if extras else [])
    try:
        done = subprocess.run(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        _fail(f"could not set up .venv{_with_extras(extras)}: cannot run scripts/setup-env "
              f"({exc}), then run `{_setup_command(extras)}`")
    if done.returncode != 0:
        lines = done.stdout.strip().splitlines()
        detail = lines[-1] if lines else f"scripts/setup-env exited {done.returncode}"
        if detail.endswith(SETUP_ENV_TAIL):
            detail = detail[:-len(SETUP_ENV_TAIL)]
        _fail(f"could not set up .venv{_with_extras(extras)}: {detail}, then run "
              f"`{_setup_command(extras)}`")


def _not_set_up(why: str, extras: str) -> NoReturn:
    """For the commands of the running service: say what to run, change nothing."""
    _fail(f".venv is not set up ({why}): run `{_setup_command(extras)}` (scripts/run does it "
          "too, and starts the service)")


def _reexec(stage: str) -> NoReturn:
    """Run this shim again under .venv's python (OSError when that python cannot start)."""
    os.environ[MARKER] = stage
    script = os.path.abspath(sys.argv[0])
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), script, *sys.argv[1:]])


def _why_no_python() -> str:
    if not os.path.lexists(VENV):
        return "no .venv yet"
    if VENV_PYTHON.is_symlink():  # what an upgrade of the Python it was made with leaves
        return f"{VENV_PYTHON} does not run (it links to {os.readlink(VENV_PYTHON)}, gone)"
    return f"{VENV_PYTHON} is missing"


def _move_to_venv(stage: str, extras: str, sets_up: bool) -> NoReturn:
    """From outside .venv: re-execute there, setting it up first when its python cannot run."""
    if stage == SET_UP:  # setup-env succeeded, yet we are not in .venv: it cannot run as one
        _fail(f"{VENV_PYTHON} does not run as the venv {VENV} after scripts/setup-env: remove "
              f".venv, then run `{_setup_command(extras)}`")
    if stage == MOVED:
        why = f"{VENV_PYTHON} does not run as a venv (pyvenv.cfg missing?)"
    elif not VENV_PYTHON.exists():
        why = _why_no_python()
    else:
        try:
            _reexec(MOVED)
        except OSError as exc:  # a dangling link (its Python upgraded away), a wrong binary
            why = f"{VENV_PYTHON} does not run ({exc.strerror})"
    if not sets_up:
        _not_set_up(why, extras)
    _setup(why, extras)
    try:
        _reexec(SET_UP)
    except OSError as exc:
        _fail(f"{VENV_PYTHON} does not run after scripts/setup-env ({exc.strerror}): remove "
              f".venv, then run `{_setup_command(extras)}`")


def _run(target: str, args: Sequence[str], extras: str) -> NoReturn:
    """Import `module:function` of this checkout and exit with what it returns."""
    module_name, _, function = target.partition(":")
    sys.path.insert(0, str(REPO_ROOT))  # this checkout, whichever one .venv installed
    try:
        main = getattr(importlib.import_module(module_name), function)
        code = main(list(args))
    except ImportError as exc:  # a dependency .venv lacks; our own import errors stay loud
        if exc.name is None or exc.name.split(".")[0] in OUR_PACKAGES:
            raise
        _fail(f".venv lacks {exc.name} ({exc}): run `{_setup_command(extras)}`")
    sys.exit(code)


def launch(target: str, usage: str, *, extras: str = "", sets_up: bool = True,
           args: Sequence[str] = ()) -> NoReturn:
    """Run `target` ("package.module:function", called with the argument list) under .venv.

    `usage` is the shim's docstring, printed for --help while nothing is set up; `extras` names
    the setup.cfg extra the target needs ("test", "plot", or "" for the project alone);
    `sets_up` says whether a missing or incomplete .venv is set up here (the tools) or only
    named in one line, exit 2 (the commands of the running service); `args` go before the
    command line's.
    """
    stage = os.environ.pop(MARKER, "")  # popped: the children of the tool begin afresh
    command_line = sys.argv[1:]
    if not _in_repo_venv():
        if not stage and _wants_help(command_line) and not VENV_PYTHON.exists():
            _print_usage(usage, sets_up)
        _move_to_venv(stage, extras, sets_up)
    missing = _missing(extras)
    if missing:
        why = f"{_some(missing)} missing from .venv"
        if not sets_up:
            _not_set_up(why, extras)
        if stage == SET_UP:
            _fail(f"{why} after scripts/setup-env: see {VENV}/pip-install.log, then run "
                  f"`{_setup_command(extras)}`")
        _setup(why, extras)
        _reexec(SET_UP)
    _run(target, [*args, *command_line], extras)
