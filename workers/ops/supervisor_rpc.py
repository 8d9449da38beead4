"""Talking to supervisord over its XML-RPC socket: apply a config diff, list and revive workers.

The apply step is what `supervisorctl update` does, limited to the programs we manage:

    reloadConfig() -> added, changed, removed (group names; each program is its own group)
    removed, changed: stopProcessGroup (all at once, then wait) -> removeProcessGroup
    changed, added:   addProcessGroup (autostart=true starts it)

supervisord answers faults with numeric codes (`supervisor.xmlrpc.Faults`); callers get them as
`xmlrpc.client.Fault` and retry on their next pass.
"""
from __future__ import annotations

import socket
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

from supervisor.xmlrpc import Faults, SupervisorTransport

from workers.errors import EXIT_CONFIG

# What a failed RPC can raise: a fault from supervisord, or no supervisord at all.
RPC_ERRORS = (xmlrpc.client.Fault, OSError, socket.error, xmlrpc.client.ProtocolError)
FAULT_NAMES = {v: k for k, v in vars(Faults).items() if isinstance(v, int)}
# States in which a process is neither running nor about to be.
DOWN_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})
CONFIG_ERROR_MARK = "event=config_error"
STARTED_MARK = "event=starting"  # the worker logs it once its config checks have passed
LOG_TAIL_BYTES = 8192


def connect(url: str) -> Any:
    """A proxy for supervisord's RPC interface at `url` (unix:///path/to/socket or http://)."""
    transport = SupervisorTransport(None, None, url)
    # The host part is ignored for unix sockets, but the proxy needs one.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def describe(exc: BaseException) -> str:
    """One line for a failed RPC: the fault's name, or the socket error."""
    if isinstance(exc, xmlrpc.client.Fault):
        name = FAULT_NAMES.get(exc.faultCode, str(exc.faultCode))
        return f"{name}: {exc.faultString}"
    return f"{type(exc).__name__}: {exc}"


def unreachable(url: str, exc: BaseException) -> str:
    """One line for "no supervisord at `url`", with what to do: a newcomer who has not started
    the service meets this first, and a raw FileNotFoundError tells them nothing."""
    where = url.removeprefix("unix://")
    start = "start it with scripts/run (or scripts/run --daemon)"
    if isinstance(exc, FileNotFoundError):
        return f"not running: no socket at {where}; {start}"
    if isinstance(exc, ConnectionRefusedError):
        return f"not running: nothing answers at {where} (a stopped supervisord's socket); {start}"
    if isinstance(exc, PermissionError):
        return (f"not reachable: no permission to open {where}; run this as the user who "
                f"started supervisord")
    return f"not reachable at {url}: {describe(exc)}"


@dataclass
class ApplyResult:
    added: List[str] = field(default_factory=list)
    changed: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)  # not ours: left alone
    errors: List[str] = field(default_factory=list)  # the next pass tries again

    @property
    def nothing(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def summary(self) -> str:
        if self.nothing:
            return "no change"
        parts = [f"{what}: {', '.join(names)}" for what, names in
                 (("added", self.added), ("changed (restarted)", self.changed),
                  ("removed", self.removed)) if names]
        return "; ".join(parts)


def apply_changes(rpc: Any, is_managed: Callable[[str], bool], stop_timeout_s: float,
                  sleep: Callable[[float], None] = time.sleep) -> ApplyResult:
    """Make supervisord run what its config files now say, for managed names only.

    Raises the RPC error of `reloadConfig` itself (nothing was done); errors on single groups
    are collected in `errors` and the rest still goes ahead.
    """
    added, changed, removed = rpc.supervisor.reloadConfig()[0]
    result = ApplyResult()
    result.ignored = sorted(n for n in (*added, *changed, *removed) if not is_managed(n))
    added = [n for n in added if is_managed(n)]
    changed = [n for n in changed if is_managed(n)]
    removed = [n for n in removed if is_managed(n)]

    # Stop everything first and in parallel (each worker flushes for up to ~8 s), then wait:
    # the old worker of a moved symbol has flushed before the new one starts.
    stopping = [*removed, *changed]
    for name in stopping:
        _try(result, f"stop {name}", rpc.supervisor.stopProcessGroup, name, False)
    if stopping:
        _wait_down(rpc, stopping, stop_timeout_s, sleep, result)
    gone = set()
    for name in stopping:
        if _try(result, f"remove {name}", rpc.supervisor.removeProcessGroup, name):
            gone.add(name)
    for name in changed:
        if name in gone and _try(result, f"add {name}", rpc.supervisor.addProcessGroup, name):
            result.changed.append(name)
    result.removed = [n for n in removed if n in gone]
    for name in added:
        if _try(result, f"add {name}", rpc.supervisor.addProcessGroup, name):
            result.added.append(name)
    return result


def _try(result: ApplyResult, what: str, call: Callable[..., Any], *args: Any) -> bool:
    try:
        call(*args)
        return True
    except RPC_ERRORS as exc:
        result.errors.append(f"{what}: {describe(exc)}")
        return False


def _wait_down(rpc: Any, groups: Iterable[str], timeout_s: float,
               sleep: Callable[[float], None], result: ApplyResult) -> None:
    wanted = set(groups)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            busy = [p["group"] for p in rpc.supervisor.getAllProcessInfo()
                    if p["group"] in wanted and p["statename"] not in DOWN_STATES]
        except RPC_ERRORS as exc:
            result.errors.append(f"waiting for stops: {describe(exc)}")
            return
        if not busy:
            return
        if time.monotonic() >= deadline:
            result.errors.append(f"still stopping after {timeout_s:.0f} s: {', '.join(busy)}")
            return
        sleep(0.2)


def config_error_in_log(tail: str) -> Optional[str]:
    """The worker's last config error, if its log ends with one (no successful start after it)."""
    at = tail.rfind(CONFIG_ERROR_MARK)
    if at < 0 or tail.rfind(STARTED_MARK) > at:
        return None
    line = tail[at:].splitlines()[0]
    _, _, error = line.partition("error=")
    return error.strip() or line.strip()


def log_tail(rpc: Any, name: str, length: int = LOG_TAIL_BYTES) -> str:
    """The last `length` bytes of a program's log ("" when it cannot be read)."""
    try:
        text, _offset, _overflow = rpc.supervisor.tailProcessStdoutLog(name, 0, length)
        return str(text)
    except RPC_ERRORS:
        return ""


def exit_config_error(info: Dict[str, Any], rpc: Any) -> Optional[str]:
    """Why a down process will not be revived: it exited with the config-error code.

    supervisord only records the exit code of a process that had reached RUNNING; one that
    failed within `startsecs` shows exitstatus 0 and "Exited too quickly", so its log decides.
    """
    if info["statename"] == "EXITED" and info.get("exitstatus") == EXIT_CONFIG:
        return config_error_in_log(log_tail(rpc, info["name"])) or \
            f"exited with code {EXIT_CONFIG} (configuration error)"
    if info["statename"] == "FATAL":
        return config_error_in_log(log_tail(rpc, info["name"]))
    return None


@dataclass
class Revival:
    revived: List[str] = field(default_factory=list)
    config_errors: Dict[str, str] = field(default_factory=dict)  # name -> the error
    errors: List[str] = field(default_factory=list)


def revive_fatal(rpc: Any, infos: List[Dict[str, Any]], is_managed: Callable[[str], bool],
                 cooldown_s: float) -> Revival:
    """Start managed FATAL workers again `cooldown_s` after they gave up; report config errors.

    supervisord leaves a process FATAL for good after `startretries` quick exits: that is right
    for a config error and wrong for a transient one (the network down at boot).
    """
    out = Revival()
    for info in infos:
        name = info["name"]
        if not is_managed(name) or info["statename"] not in ("FATAL", "EXITED"):
            continue
        error = exit_config_error(info, rpc)
        if error is not None:
            out.config_errors[name] = error
            continue
        if info["statename"] != "FATAL" or info["now"] - info["stop"] < cooldown_s:
            continue
        try:
            rpc.supervisor.startProcess(f"{info['group']}:{name}", False)
            out.revived.append(name)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.ALREADY_STARTED:  # someone was quicker: fine
                out.errors.append(f"start {name}: {describe(exc)}")
        except RPC_ERRORS as exc:
            out.errors.append(f"start {name}: {describe(exc)}")
    return out

