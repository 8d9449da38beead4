"""The box and the software versions a benchmark ran on (figures mean little without them)."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import List, Tuple

PACKAGES = ("websocket-client", "influxdb-client", "websockets", "orjson", "wsaccel", "aiohttp",
            "supervisor", "urllib3")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def influxd_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def code_under_test(repo: Path) -> str:
    """The commit the workers ran from, and whether workers/ differs from it (read-only git)."""
    try:
        log = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%h %cI"],
                             capture_output=True, text=True, timeout=10)
        if log.returncode != 0:
            return "unknown (not a git checkout)"
        head = log.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--",
                                "workers"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head or 'unknown'}" + (" + local changes in workers/" if dirty else
                                     ", workers/ as committed")


def describe(influxd: str, repo: Path) -> List[Tuple[str, str]]:
    """(item, value) rows for the report's machine table."""
    rows = [("code under test", code_under_test(repo)),
            ("CPU", cpu_model()),
            ("cores (logical)", str(os.cpu_count())),
            ("RAM", f"{memory_gib():.1f} GiB"),
            ("kernel", platform.release()),
            ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
            ("influxd", influxd_version(influxd))]
    rows += [(name, package_version(name)) for name in PACKAGES]
    return rows
