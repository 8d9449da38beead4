"""Every entry point of scripts/ on a fresh clone, under the system python.

A fresh clone is `git clone` of this checkout's committed HEAD, with no .venv; each script runs
under /usr/bin/python3 with no venv on PATH. No test here installs anything, so the module stays
within seconds (a real set-up would take minutes):
- `--help` while there is no .venv is answered by the launcher (scripts/_venv.py) from the
  script's own usage, before any venv is needed: exit 0, a usage text, nothing set up;
- set-up made impossible (pip with no index and no links, what an offline box sees): every
  script exits 2 with one line saying what to run, nothing on stdout (scripts/status is read by
  monitors), never a traceback;
- a broken .venv (its python gone, or not a venv any more): the commands of the service say so
  in one line; a tool makes .venv again (then fails, offline, in one line);
- the set-up that succeeds (scripts/setup-env replaced by a stub linking the test venv) is one
  line on stderr, and the tool then runs;
- each script's short usage names only options its full --help (run in this checkout, through
  the launcher from the system python) has.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from tests.support.procs import REPO_ROOT, SYSTEM_PYTHON, plain_env

pytestmark = pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK),
                                reason=f"no {SYSTEM_PYTHON}")

SHIMS: Dict[str, Tuple[bool, str]] = {  # script -> (sets .venv up itself, the extras it needs)
    "apply-symbols": (False, ""),
    "bench": (True, "test"),
    "bench-history": (True, "test"),
    "demo": (True, "test"),
    "doctor": (True, ""),
    "exchange-sim": (True, "test"),
    "gap-audit": (True, ""),
    "history": (True, ""),
    "influx-rig": (True, "test"),
    "load-files": (True, ""),
    "plot": (True, "plot"),
    "status": (False, ""),
    "supervisorctl": (False, ""),
    "verify": (True, ""),
}
SETUP_SCRIPTS = ("run", "setup-env", "test")  # bash: the set-up itself
SERVICE_COMMANDS = sorted(name for name, (sets_up, _) in SHIMS.items() if not sets_up)
TOOLS = sorted(name for name, (sets_up, _) in SHIMS.items() if sets_up)
NOT_AN_OPTION = "--no-such-option"  # should a launcher let a tool run, it only exits at once


def committed_head() -> str:
    done = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"{REPO_ROOT} is not a git checkout: {done.stderr.strip()}")
    return done.stdout.strip()


def fresh_clone(dest: Path) -> Path:
    """What `git clone` gives a newcomer: the committed tree, no .venv."""
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO_ROOT), str(dest)],
                   check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", committed_head()], check=True)
    assert not (dest / ".venv").exists()
    return dest


def offline_env() -> Dict[str, str]:
    """pip with nowhere to install from: the set-up cannot be done, and fails at once."""
    env = {k: v for k, v in plain_env().items() if not k.startswith("PIP_")}
    return {**env, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run_script(clone: Path, name: str, *args: str, env: Dict[str, str]
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEM_PYTHON, str(clone / "scripts" / name), *args], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=300)


def stderr_lines(done: subprocess.CompletedProcess[str]) -> List[str]:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return list(done.stderr.strip().splitlines())


def setup_command(clone: Path, extras: str) -> str:
    return f"run `cd {clone} && scripts/setup-env{' ' + extras if extras else ''}`"


def assert_says_not_set_up(clone: Path, name: str, why: str, env: Dict[str, str]) -> None:
    """A command of the service: one line naming the set-up, exit 2, stdout left empty."""
    done = run_script(clone, name, NOT_AN_OPTION, env=env)
    lines = stderr_lines(done)
    assert (done.returncode, done.stdout) == (2, ""), f"{name}: {done.returncode}\n{done.stdout}"
    assert len(lines) == 1, f"{name}: {done.stderr}"
    assert lines[0].startswith(f"{name}: .venv is not set up ({why}"), lines[0]
    assert setup_command(clone, "") in lines[0], lines[0]


def assert_set_up_fails_in_one_line(clone: Path, name: str, why: str) -> None:
    """A tool: one line saying it sets .venv up, one saying it could not and what to run."""
    extras = SHIMS[name][1]
    done = run_script(clone, name, NOT_AN_OPTION, env=offline_env())
    lines = stderr_lines(done)
    assert (done.returncode, done.stdout) == (2, ""), f"{name}: {done.returncode}\n{done.stderr}"
    assert len(lines) == 2, f"{name}: {done.stderr}"
    assert lines[0].startswith(f"{name}: {why}") and ": setting up .venv" in lines[0], lines[0]
    assert lines[1].startswith(f"{name}: could not set up .venv"), lines[1]
    assert lines[1].endswith(setup_command(clone, extras)), lines[1]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh clone for the tests that set nothing up."""
    return fresh_clone(tmp_path_factory.mktemp("fresh") / "project")


def test_every_script_goes_through_the_one_launcher(clone: Path) -> None:
    scripts = {p.name for p in (clone / "scripts").iterdir()} - {"_venv.py"}
    assert scripts == set(SHIMS) | set(SETUP_SCRIPTS)
    for name, (sets_up, extras) in SHIMS.items():
        text = (clone / "scripts" / name).read_text()
        assert text.startswith("#!/usr/bin/env python3\n"), name
        calls = [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name) and node.func.id == "launch"]
        assert len(calls) == 1, f"{name}: one launch(...) call"
        keywords = {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords
                    if k.arg in ("sets_up", "extras")}
        assert (keywords.get("sets_up", True), keywords.get("extras", "")) == (sets_up, extras)


@pytest.mark.parametrize("name", sorted(SHIMS) + list(SETUP_SCRIPTS))
def test_help_on_a_fresh_clone_needs_no_venv(name: str, clone: Path, tmp_path: Path) -> None:
    script = str(clone / "scripts" / name)
    runs = [([script, "--help"], tmp_path)]  # as typed, from anywhere: the shebang's python3
    if name in SHIMS:
        runs.append(([SYSTEM_PYTHON, f"scripts/{name}", "--help"], clone))
    for argv, cwd in runs:
        done = subprocess.run(argv, cwd=cwd, env=plain_env(), capture_output=True, text=True,
                              timeout=60)
        assert (done.returncode, done.stderr) == (0, ""), f"{argv}: {done.returncode}\n" \
                                                          f"{done.stderr}"
        assert done.stdout.startswith(f"usage: scripts/{name}"), done.stdout
        assert "Traceback" not in done.stdout
    assert not (clone / ".venv").exists(), "--help set something up"


@pytest.mark.slow
def test_a_set_up_that_cannot_be_done_is_one_line_and_exit_2(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "project")
    for name in SERVICE_COMMANDS:  # never set up: a cron check must not wait on pip
        assert_says_not_set_up(clone, name, "no .venv yet", offline_env())
    assert not (clone / ".venv").exists()

    assert_set_up_fails_in_one_line(clone, "gap-audit", "no .venv yet")
    assert (clone / ".venv" / "bin" / "python").exists()  # made, but the project is not in it
    # Without pip in it the remaining set-ups fail at once (the outcome is the same offline).
    for pip in (clone / ".venv").glob("lib/python3*/site-packages/pip*"):
        shutil.rmtree(pip)
    for name in TOOLS:
        assert_set_up_fails_in_one_line(clone, name, "websocket, influxdb_client, urllib3 and ")
    for name in SERVICE_COMMANDS:
        assert_says_not_set_up(clone, name, "websocket, influxdb_client, urllib3 and ",
                               offline_env())


def break_python(venv: Path) -> None:
    (venv / "bin" / "python").unlink()  # what a Python upgrade leaves: a link to nothing
    (venv / "bin" / "python").symlink_to("/nonexistent/python3.99")


def break_pyvenv_cfg(venv: Path) -> None:
    (venv / "pyvenv.cfg").unlink()  # its python starts as the base one, outside the venv


@pytest.mark.parametrize("breaks, why", [(break_python, "does not run (it links to /nonexistent"),
                                         (break_pyvenv_cfg, "does not run as a venv")],
                         ids=["python-gone", "not-a-venv"])
def test_a_broken_venv_is_named_or_made_again(breaks: Callable[[Path], None], why: str,
                                               tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "project")
    venv = clone / ".venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    breaks(venv)
    for name in SERVICE_COMMANDS:
        assert_says_not_set_up(clone, name, f"{venv / 'bin' / 'python'} {why}", offline_env())
    assert_set_up_fails_in_one_line(clone, "load-files", f"{venv / 'bin' / 'python'} {why}")
    repaired = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import sys; print(sys.prefix != sys.base_prefix)"],
                              capture_output=True, text=True)
    assert repaired.stdout.strip() == "True", "scripts/setup-env did not make .venv again"


def test_a_tool_sets_venv_up_in_one_line_then_runs(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "project")
    # The stub stands in for pip: a .venv of links to the test venv, and pip-like chatter.
    prefix = Path(sys.prefix)
    (clone / "scripts" / "setup-env").write_text(
        "#!/usr/bin/env bash\n"
        "echo 'installing the project into .venv ... (chatter the launcher keeps)' >&2\n"
        'cd "$(dirname "$0")/.." && mkdir .venv\n'
        f"ln -s {prefix / 'bin'} .venv/bin && ln -s {prefix / 'lib'} .venv/lib\n"
        f"cp {prefix / 'pyvenv.cfg'} .venv/pyvenv.cfg\n")
    (tmp_path / "lp").mkdir()
    done = run_script(clone, "load-files", "--dry-run", "--lp-dir", str(tmp_path / "lp"),
                      "--env-file", os.devnull, env=plain_env())
    lines = stderr_lines(done)
    assert done.returncode == 0, done.stderr
    assert lines == ["load-files: no .venv yet: setting up .venv (scripts/setup-env) ..."], lines
    assert done.stdout.strip(), "the tool did not run after the set-up"


@pytest.mark.parametrize("name", sorted(SHIMS))
def test_the_short_usage_names_only_options_of_the_full_help(name: str) -> None:
    """In this checkout (.venv set up): the launcher moves into .venv and the tool answers."""
    script = REPO_ROOT / "scripts" / name
    usage = (ast.get_docstring(ast.parse(script.read_text())) or "").splitlines()[0]
    assert usage.startswith(f"usage: scripts/{name}"), usage
    done = subprocess.run([SYSTEM_PYTHON, str(script), "--help"], cwd=REPO_ROOT,
                          env=plain_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout.lower() and "Traceback" not in done.stderr
    assert ".venv is not set up" not in done.stdout, "the full help, not the launcher's"
    for option in re.findall(r"--[a-z][a-z-]*", usage):
        assert option in done.stdout, f"{name}: {option} is not in its --help"
