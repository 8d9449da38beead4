"""A test server is ready only when *its own* socket answers, not whoever holds the port.

CI once failed with "connection refused" mid-test: a front picked a free port, another test's
server took it first and answered the readiness probe, then stopped. These specs pin the
ownership check that every start (influxd, front, simulator) now makes.
"""
from __future__ import annotations

import socket
from pathlib import Path

from tests.support.procs import ManagedProcess, python_argv, wait_until

LISTENER = """
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(30)
"""


def test_a_child_that_binds_the_port_is_its_listener(tmp_path: Path) -> None:
    child = ManagedProcess("listener", python_argv("-c", LISTENER),
                           tmp_path / "listener.log").start()
    try:
        wait_until(lambda: child.output().strip().isdigit(), 10.0, what="the child's port")
        port = int(child.output())
        assert child.listens_on(port)
    finally:
        child.stop()
    assert not child.listens_on(port), "a stopped child holds nothing"


def test_a_port_held_by_someone_else_is_not_the_childs(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        child = ManagedProcess("sleeper", python_argv("-c", "import time; time.sleep(30)"),
                               tmp_path / "sleeper.log").start()
        try:
            assert child.alive()
            assert not child.listens_on(port)
        finally:
            child.stop()
