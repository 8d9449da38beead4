"""The commands of scripts/ as a newcomer types them: from the system python, with no venv on
PATH, from the project root or elsewhere (every script from a fresh clone: test_launchers.py).

- the Python entry points (exchange-sim, influx-rig, bench) re-run themselves under .venv
  (scripts/_venv.py) and print their help, whether started as `scripts/NAME` or
  `python3 scripts/NAME`; when the test extras cannot be installed they say so in one line;
- `scripts/run` starts supervisord in a fresh clone without "No file matches via include";
- `scripts/supervisorctl` reaches that supervisord from any directory.
"""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.fixtures import StartSim, exchange_sim  # noqa: F401
from tests.support.procs import REPO_ROOT, SYSTEM_PYTHON, ManagedProcess, plain_env, wait_until

ENTRY_POINTS = {  # script -> a line of its --help
    "exchange-sim": "usage: exchange-sim",
    "influx-rig": "usage: influx-rig",
    "bench": "usage: scripts/bench",
}
INCLUDE_WARNING = "No file matches via include"


def run(argv: list, cwd: Path, env: Dict[str, str], timeout: float = 60
        ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="no /usr/bin/python3")
@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
def test_python_entry_points_start_from_the_system_python(script: str, tmp_path: Path) -> None:
    env = plain_env()
    for argv, cwd in (([SYSTEM_PYTHON, f"scripts/{script}", "--help"], REPO_ROOT),
                      ([f"scripts/{script}", "--help"], REPO_ROOT),
                      ([str(REPO_ROOT / "scripts" / script), "--help"], tmp_path)):
        done = run(argv, cwd, env)
        assert done.returncode == 0, f"{argv} in {cwd}: exit {done.returncode}\n{done.stderr}"
        assert ENTRY_POINTS[script] in done.stdout, f"{argv}: {done.stdout[:500]}"
        assert "Traceback" not in done.stderr, done.stderr


def test_missing_test_extras_that_cannot_be_installed_are_named_in_one_line(
        tmp_path: Path) -> None:
    """A .venv without aiohttp where pip cannot work: no traceback, one line saying what to run."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("_venv.py", "exchange-sim", "setup-env"):
        shutil.copy2(REPO_ROOT / "scripts" / name, project / "scripts" / name)
    # A venv with no pip in it: scripts/setup-env's install fails whatever the network.
    subprocess.run([SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable,
                    "-m", "venv", "--without-pip", str(project / ".venv")], check=True)
    done = run([str(project / "scripts" / "exchange-sim"), "--help"], project, plain_env(), 120)
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("exchange-sim: could not set up .venv with the test extras"), \
        done.stderr
    assert last.endswith(f"run `cd {project} && scripts/setup-env test`"), last


# -- scripts/run and scripts/supervisorctl in a fresh clone's layout ----------------------------
def make_clone(root: Path) -> Path:
    """What a fresh clone has, plus a .venv made of links to the test venv (set up already:
    scripts/run must neither install into the shared venv nor repoint its editable install)."""
    root.mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "supervisor.conf", root / "supervisor.conf")
    shutil.copy2(REPO_ROOT / "supervisord.conf", root / "supervisord.conf", follow_symlinks=False)
    shutil.copytree(REPO_ROOT / "workers", root / "workers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "scripts", root / "scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "config").mkdir()
    (root / "config" / "symbols.yaml").write_text("symbols:\n  - BTCUSDT\n")
    for kept in ("run", "logs"):  # committed with a .gitkeep only
        (root / kept).mkdir()
        (root / kept / ".gitkeep").touch()
    venv = root / ".venv"
    venv.mkdir()
    for part in ("bin", "lib"):
        (venv / part).symlink_to(Path(sys.prefix) / part)
    shutil.copy2(Path(sys.prefix) / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / ".installed").touch()  # what scripts/setup-env leaves after installing
    return root


@pytest.fixture
def clone(tmp_path: Path, exchange_sim: StartSim) -> Iterator[tuple]:  # noqa: F811
    sim: ExchangeSim = exchange_sim("--symbol", "BTCUSDT:rate=20")
    root = make_clone(tmp_path / "project")
    env = plain_env(BINANCE_WS_URL=sim.ws_url, BINANCE_REST_URL=sim.rest_url)
    yield root, env
    # Whatever the test did, no supervisord is left behind.
    if (root / "run" / "supervisor.sock").exists():
        run([str(root / "scripts" / "supervisorctl"), "shutdown"], tmp_path, env)


def wait_rendered(root: Path, what: str) -> None:
    workers_conf = root / "run" / "workers.conf"
    wait_until(lambda: "[program:btcusdt]" in workers_conf.read_text(), 30,
               what=f"the reconciler to render run/workers.conf ({what})")


def test_first_start_of_scripts_run_warns_of_no_missing_include(clone: tuple) -> None:
    root, env = clone
    assert not (root / "run" / "workers.conf").exists()
    proc = ManagedProcess("scripts/run", [str(root / "scripts" / "run")], root / "run.out",
                          env=env, cwd=root).start()
    try:
        wait_until(lambda: (root / "logs" / "supervisord.log").exists(), 30,
                   what="supervisord to start")
        wait_rendered(root, proc.output()[-2000:])
        status = run([str(root / "scripts" / "supervisorctl"), "status"], root, env)
        assert "btcusdt" in status.stdout and "reconciler" in status.stdout, status.stdout
    finally:
        code = proc.stop(timeout=60, sig=signal.SIGINT)  # Ctrl-C
    output = proc.output()
    assert code == 0, output
    assert INCLUDE_WARNING not in output, output
    assert INCLUDE_WARNING not in (root / "logs" / "supervisord.log").read_text()
    assert "Successfully installed" not in output and "editable" not in output, output


def test_scripts_supervisorctl_reaches_supervisord_from_any_directory(clone: tuple,
                                                                     tmp_path: Path) -> None:
    root, env = clone
    ctl = str(root / "scripts" / "supervisorctl")
    started = run([str(root / "scripts" / "run"), "--daemon"], root, env)
    assert started.returncode == 0, started.stdout + started.stderr
    wait_rendered(root, started.stderr)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    wait_until(lambda: "RUNNING" in run([ctl, "status", "btcusdt"], elsewhere, env).stdout, 30,
               what="btcusdt RUNNING through scripts/supervisorctl")
    status = run([ctl, "status"], elsewhere, env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "reconciler" in status.stdout and "btcusdt" in status.stdout, status.stdout
    restarted = run([ctl, "restart", "btcusdt"], elsewhere, env)
    assert "btcusdt: started" in restarted.stdout, restarted.stdout + restarted.stderr
    stopped = run([ctl, "shutdown"], elsewhere, env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert INCLUDE_WARNING not in (root / "logs" / "supervisord.log").read_text()


def test_scripts_run_daemon_says_what_it_started_and_how_to_see_and_stop_it(clone: tuple) -> None:
    """It said nothing at all: a user could not tell whether anything had started."""
    root, env = clone
    started = run([str(root / "scripts" / "run"), "--daemon"], root, env)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = (root / "run" / "supervisord.pid").read_text().strip()
    assert started.stdout.strip() == (
        f"scripts/run: supervisord runs in the background (pid {pid}); the reconciler starts "
        "the workers of config/symbols.yaml within seconds: see them with scripts/status, logs "
        "under logs/, stop with scripts/supervisorctl shutdown"), started.stdout
    stopped = run([str(root / "scripts" / "supervisorctl"), "shutdown"], root, env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


# -- starting things twice ------------------------------------------------------------------------
def test_a_second_scripts_run_says_already_running_with_the_pid(clone: tuple) -> None:
    root, env = clone
    started = run([str(root / "scripts" / "run"), "--daemon"], root, env)
    assert started.returncode == 0, started.stdout + started.stderr
    pidfile = root / "run" / "supervisord.pid"
    wait_until(lambda: pidfile.exists() and (root / "run" / "supervisor.sock").exists(), 30,
               what="supervisord to start")
    for argv in ([str(root / "scripts" / "run")], [str(root / "scripts" / "run"), "--daemon"]):
        again = run(argv, root, env)
        assert again.returncode == 2, again.stdout + again.stderr
        assert again.stderr.strip() == (
            f"scripts/run: already running (supervisord pid {pidfile.read_text().strip()}, "
            "run/supervisor.sock): see it with scripts/supervisorctl status (or scripts/status);"
            " stop it with scripts/supervisorctl shutdown, or Ctrl-C where it runs in the "
            "foreground"), again.stderr
        assert "Another program" not in again.stdout + again.stderr
    stopped = run([str(root / "scripts" / "supervisorctl"), "shutdown"], root, env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


class PingAnswerer(http.server.BaseHTTPRequestHandler):
    """What a first influx-rig's front answers on its port: /ping with 204."""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 held, for the test, by a server answering every GET with 204."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PingAnswerer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def assert_busy_port_line(done: subprocess.CompletedProcess, prog: str, port: int) -> None:
    assert done.returncode == 3, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.stdout == "", done.stdout
    assert done.stderr.strip() == (
        f"{prog}: port {port} on 127.0.0.1 is busy (another {prog} still running? "
        f"`ss -ltnp 'sport = :{port}'` shows who holds it): stop that one, or pick another "
        "port with --port PORT"), done.stderr


def test_exchange_sim_on_a_busy_port_says_so_in_one_line(busy_port: int) -> None:
    done = run([str(REPO_ROOT / "scripts" / "exchange-sim"), "--port", str(busy_port)],
               REPO_ROOT, plain_env(), timeout=60)
    assert_busy_port_line(done, "exchange-sim", busy_port)


def test_influx_rig_on_a_busy_port_fails_before_its_banner(busy_port: int) -> None:
    done = run([str(REPO_ROOT / "scripts" / "influx-rig"), "--port", str(busy_port)],
               REPO_ROOT, plain_env(), timeout=60)
    assert_busy_port_line(done, "influx-rig", busy_port)


def children(pid: int) -> List[int]:
    found: List[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def test_influx_rig_shows_the_log_of_a_child_that_died(tmp_path: Path) -> None:
    """Its logs are in a temp dir it removes on exit: the lines are printed before that."""
    rig = ManagedProcess("influx-rig", [str(REPO_ROOT / "scripts" / "influx-rig"), "--port",
                                        "0"], tmp_path / "rig.out", env=plain_env())
    rig.start()
    try:
        wait_until(lambda: "Ctrl-C to stop." in rig.output(), 60, what="the rig's banner")
        cmdlines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children(rig.pid)}
        (front,) = [pid for pid, cmd in cmdlines.items() if b"influx_front" in cmd]
        os.kill(front, signal.SIGKILL)
        code = rig.wait(30)
    finally:
        rig.stop()
    output = rig.output()
    assert code == 3, output
    said = output[output.index("influx-rig: influx-front-"):]
    assert "exited (code -9); the last" in said.splitlines()[0], said
    assert len(said.splitlines()) >= 2 and said.splitlines()[1].startswith("  "), said
    assert "see the logs above" not in output
