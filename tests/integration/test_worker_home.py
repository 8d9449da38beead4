"""A worker's home at start: one process per worker, and directories it can write.

1. Two real `python -m workers btcusdt` on one DATA_DIR and RUN_DIR: the second refuses in one
   line naming the first one's pid and how to see it, exits 2 (supervisord does not restart
   it in a loop), and leaves the first one's checkpoint, spool, status file and lock exactly
   as they were (bytes and mtimes, compared while the first one is paused with SIGSTOP).
2. A DATA_DIR or RUN_DIR that cannot be written: one line naming the directory, the real cause
   and the fix, exit 2, no traceback. The tests run as root, where mode 0o555 does not stop a
   write: a read-only tmpfs mounted for the test gives the real EROFS (skipped where mount is
   not permitted), a full tiny tmpfs the real ENOSPC, and a file where a directory is expected
   the real ENOTDIR (works for any user).
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

from tests.support.exchange.fixtures import StartSim
from tests.support.procs import wait_until
from tests.support.workerproc import WorkerProcess

ONE = "symbols: [BTCUSDT]\n"
EXIT_BOUND_S = 30.0


def error_lines(proc: WorkerProcess) -> list:
    return [line for line in proc.output().splitlines() if " ERROR " in line]


def run_until_exit(proc: WorkerProcess) -> int:
    proc.start("--no-symbol-check")
    code = proc.proc.wait(EXIT_BOUND_S) if proc.proc else None
    assert code is not None, f"still running after {EXIT_BOUND_S:.0f} s:\n{proc.output()[-3000:]}"
    return code


def all_stopped(pid: int) -> bool:
    """Every thread of `pid` is in the stopped state (T), as /proc tells."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        states.append(stat[stat.rindex(")") + 2])
    return bool(states) and all(state in "Tt" for state in states)


def snapshot(*roots: Path) -> Dict[str, Tuple[bytes, int]]:
    """Every file under `roots`: (bytes, mtime in ns)."""
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return files


def test_a_second_process_for_one_worker_is_refused_and_touches_nothing(
        tmp_path: Path, exchange_sim: StartSim, refused_url: str) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=100")
    # InfluxDB unreachable, a short retry budget: the batches go to the spool, and the
    # checkpoint moves over them, so all three of the worker's files exist.
    env = {"BINANCE_WS_URL": sim.ws_url, "BINANCE_REST_URL": sim.rest_url,
           "INFLUXDB_URL": refused_url, "INFLUXDB_TOKEN": "t",
           "INFLUXDB_ORG": "o", "INFLUXDB_BUCKET": "ticks", "WRITE_RETRY_BUDGET_S": "1",
           "WRITE_RETRY_MAX_DELAY_S": "0.5", "INFLUXDB_TIMEOUT_S": "1"}
    first = WorkerProcess(tmp_path / "first", "btcusdt", ONE, env).start("--no-symbol-check")
    home = first.data_dir / "btcusdt"
    status = first.run_dir / "status" / "btcusdt.json"
    wait_until(lambda: (home / "checkpoint.json").exists() and
               any((home / "spool").glob("*.lp")) and status.exists(), 30,
               what=f"checkpoint, spool and status of the first worker:\n{first.output()[-2000:]}")
    second = WorkerProcess(tmp_path / "second", "btcusdt", ONE,
                           {**env, "DATA_DIR": str(first.data_dir),
                            "RUN_DIR": str(first.run_dir)})
    assert first.proc is not None
    pid = first.proc.pid
    first.proc.send_signal(signal.SIGSTOP)  # nothing of its own moves while we compare
    # The signal is delivered asynchronously: compare only once every thread has stopped (a
    # checkpoint write between the two snapshots made this spec fail once).
    wait_until(lambda: all_stopped(pid), 10, 0.01, what="the first worker stopped")
    try:
        before = snapshot(first.data_dir, first.run_dir)
        code = run_until_exit(second)
        after = snapshot(first.data_dir, first.run_dir)
    finally:
        first.proc.send_signal(signal.SIGCONT)
    assert code == 2, second.output()[-3000:]
    (error,) = error_lines(second)
    assert "Traceback" not in second.output()
    assert f"event=already_running pid={first.proc.pid} " in error, error
    assert f"already runs as pid {first.proc.pid} on {home}" in error, error
    assert "scripts/supervisorctl status btcusdt" in error and "scripts/status" in error, error
    assert after == before, "the refused process changed the running worker's files"
    assert "event=starting" not in second.output()
    assert first.proc.alive(), "the first worker must run on"
    assert first.stop() == 0, first.output()[-3000:]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A mount point for a tmpfs the test mounts; unmounted after it."""
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    subprocess.run(["umount", str(point)], capture_output=True)


def mount_tmpfs(point: Path, options: str) -> None:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root and "
                    "CAP_SYS_ADMIN")


def assert_one_line_config_error(proc: WorkerProcess, *expected: str) -> str:
    code = run_until_exit(proc)
    output = proc.output()
    assert code == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    (error,) = error_lines(proc)
    for text in expected:
        assert text in error, error
    return error


@pytest.mark.parametrize("setting", ["DATA_DIR", "RUN_DIR"])
def test_a_read_only_directory_at_start_is_one_line_and_exit_2(
        tmp_path: Path, tmpfs: Path, setting: str) -> None:
    mount_tmpfs(tmpfs, "ro,size=1m")
    proc = WorkerProcess(tmp_path / "w", "btcusdt", ONE, {setting: str(tmpfs / "dir")})
    sub = "btcusdt" if setting == "DATA_DIR" else "status"
    assert_one_line_config_error(
        proc, f"event=config_error error={setting}: cannot write in {tmpfs}/dir/{sub}: "
              "read-only file system; fix: remount the disk of", f"or set {setting} to")


def test_a_full_data_disk_at_start_is_one_line_and_exit_2(tmp_path: Path, tmpfs: Path) -> None:
    mount_tmpfs(tmpfs, "size=64k")
    filler = subprocess.run(["dd", "if=/dev/zero", f"of={tmpfs / 'fill'}", "bs=4k"],
                            capture_output=True)
    assert filler.returncode != 0  # dd stops at "No space left on device"
    proc = WorkerProcess(tmp_path / "w", "btcusdt", ONE, {"DATA_DIR": str(tmpfs / "data")})
    assert_one_line_config_error(proc, "DATA_DIR: cannot write in", ": disk full; fix: free "
                                       "disk space on the disk of")


@pytest.mark.parametrize("setting", ["DATA_DIR", "RUN_DIR"])
def test_a_file_where_the_directory_should_be_is_named(tmp_path: Path, setting: str) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file\n")
    proc = WorkerProcess(tmp_path / "w", "btcusdt", ONE, {setting: str(blocker)})
    assert_one_line_config_error(proc, f"{setting}: cannot write in {blocker}/",
                                 f"{blocker} is a file; fix: move the file {blocker} away, or "
                                 f"set {setting} to a directory")
    assert os.path.isfile(blocker)
