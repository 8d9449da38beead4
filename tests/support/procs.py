"""Start and stop the real servers the tests run against (one helper for all of them)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, Mapping, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
ON_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses every connection for as long as the block runs.

    Bound but never listening: Linux answers a connect with a reset, and no other test's
    server can take the port meanwhile (a port from `free_port()` can be taken, and then
    "InfluxDB unreachable" specs would meet a server).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def port_busy(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on `host`:`port` (a bind as aiohttp and influxd do it, with
    SO_REUSEADDR, fails): asked before a server starts, so a busy port is one clear line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def busy_port_line(prog: str, port: int, option: str = "--port") -> str:
    """The one line of a server whose port is taken: who might hold it and what to do."""
    return (f"{prog}: port {port} on 127.0.0.1 is busy (another {prog} still running? "
            f"`ss -ltnp 'sport = :{port}'` shows who holds it): stop that one, or pick another "
            f"port with {option} PORT")


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05,
               what: str = "condition") -> None:
    """Poll `check` until it returns true; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except AssertionError:
            raise  # a check that asserts has found a wrong result, not a server still starting
        except Exception:  # a server that is still starting may refuse or reset
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def listening_inodes(port: int) -> Optional[set[str]]:
    """Inodes of the sockets listening on TCP `port` (any address), read from /proc/net;
    None when this system has no /proc/net tables to read."""
    inodes: set[str] = set()
    read = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
            read = True
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; column 9 is the inode.
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes if read else None


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when a GET of `url` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except urllib.error.HTTPError:
        return False


class ManagedProcess:
    """A child process with its output in a log file, stopped for sure on `stop()`.

    The child gets its own session so that a stop reaches its whole process group.
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd or REPO_ROOT
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def listens_on(self, port: int) -> bool:
        """Whether this very process holds the listening socket of `port`.

        A readiness probe alone can be answered by another test's server that took the port
        between `free_port()` and our child's bind; that server later stops and our test
        meets "connection refused". Asking whose socket it is closes that race.
        """
        if not self.alive():
            return False
        inodes = listening_inodes(port)
        if inodes is None:  # no /proc/net here: cannot tell, so trust the probe as before
            return True
        wanted = {f"socket:[{inode}]" for inode in inodes}
        fd_dir = Path(f"/proc/{self.pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    if os.readlink(fd) in wanted:
                        return True
                except OSError:  # closed since the listing
                    continue
        except OSError:
            return False
        return False

    def send_signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> Optional[int]:
        """Exit code, or None when still running after `timeout` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> Optional[int]:
        """Signal the process group, wait, then SIGKILL what is left. Returns the exit code."""
        code: Optional[int] = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
                code = self.wait(timeout)
                if code is None:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    code = self.wait(5)
            else:
                code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def output(self) -> str:
        """Everything the process has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


SYSTEM_PYTHON = "/usr/bin/python3"  # what a newcomer's shell runs, with none of our packages


def plain_env(**extra: str) -> Dict[str, str]:
    """A login shell's environment: no venv on PATH or activated, no supervisor variables."""
    venv_bin = Path(sys.prefix) / "bin"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                           if p and Path(p).resolve() != venv_bin.resolve()
                           and ".venv" not in p)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
           and not k.startswith(("SUPERVISOR_", "INFLUXDB_", "BINANCE_"))}
    return {**env, "PATH": path or "/usr/bin:/bin", **extra}


def python_argv(*args: str) -> list[str]:
    """argv that runs this interpreter (the test venv) with `args`."""
    return [sys.executable, *args]
