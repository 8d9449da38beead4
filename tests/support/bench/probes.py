"""Load and receive loops that run as their own process, so the benchmark's own work never
shares their GIL. Each prints one JSON object on stdout and exits within its time limit.

    python -m tests.support.bench.probes recv-async --url WS_URL --warmup S --seconds S
    python -m tests.support.bench.probes recv-backlog --url WS_URL [--worker-reader]
        (connects, prints {"ready": true}, reads a count from stdin, drains that many messages)
    python -m tests.support.bench.probes drain --port P --seconds S
    python -m tests.support.bench.probes ingest --url URL --db DB [--token T] --seconds S
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from tests.support.procs import REPO_ROOT

CHECK_EVERY = 256  # messages between two clock reads: cheap against a ~10 us message
OP_CLOSE = 0x8  # websocket.ABNF.OPCODE_CLOSE, without importing the library at start


def recv_backlog(url: str, worker_reader: bool) -> Dict[str, Any]:
    """Drain a queued backlog the way the worker's reader thread calls the library.

    The same calls as workers/exchange/connection.py (`enable_multithread`, no socket timeout,
    `recv_data`), without or with the worker's 64 KiB reader. Nothing is read until the count
    arrives on stdin, so the backlog queues at the simulator meanwhile.
    """
    import websocket

    ws = websocket.create_connection(url, skip_utf8_validation=True, enable_multithread=True)
    ws.settimeout(None)
    if worker_reader:
        from workers.exchange.connection import BufferedReader

        assert ws.sock is not None
        BufferedReader(ws.sock).plug_into(ws)
    print(json.dumps({"ready": True}), flush=True)
    count = int(sys.stdin.readline())
    recv_data = ws.recv_data
    marks = []  # (messages, seconds, cpu seconds) every CHECK_EVERY messages
    got = 0
    t0, c0 = time.monotonic(), time.process_time()
    while got < count:
        step = min(CHECK_EVERY, count - got)
        for _ in range(step):
            opcode, _ = recv_data()  # pings are answered inside and not returned
            if opcode == OP_CLOSE:
                raise RuntimeError(f"the server closed after {got} messages")
        got += step
        marks.append((got, time.monotonic() - t0, time.process_time() - c0))
    ws.close(timeout=1)
    return {"messages": got, "marks": marks}


async def _recv_async(url: str, warmup: float, seconds: float) -> Dict[str, Any]:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, compression=None) as ws:
        began = time.monotonic()
        while time.monotonic() - began < warmup:
            for _ in range(CHECK_EVERY):
                await ws.recv()
        count = 0
        t0, c0 = time.monotonic(), time.process_time()
        while True:
            for _ in range(CHECK_EVERY):
                await ws.recv()
            count += CHECK_EVERY
            now = time.monotonic()
            if now - t0 >= seconds:
                break
        cpu = time.process_time() - c0
    return {"messages": count, "seconds": now - t0, "rate": count / (now - t0),
            "cpu_cores": cpu / (now - t0)}


def drain(port: int, seconds: float) -> Dict[str, Any]:
    """Read a stream's bytes and throw them away: a client that never holds the server back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /stream?streams=btcusdt@trade HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the server closed during the handshake")
        head += chunk
    buf = bytearray(1 << 20)
    received = 0
    t0, c0 = time.monotonic(), time.process_time()
    while time.monotonic() - t0 < seconds:
        received += sock.recv_into(buf)
    elapsed = time.monotonic() - t0
    sock.close()
    return {"bytes": received, "seconds": elapsed,
            "cpu_cores": (time.process_time() - c0) / elapsed}


def build_bodies(count: int, lines: int) -> List[bytes]:
    """`count` bodies of `lines` points in the service's point model, all with distinct keys."""
    base_ns = (int(time.time()) - 3600) * 1_000_000_000
    bodies = []
    for b in range(count):
        rows = []
        for i in range(lines):
            tid = b * lines + i
            rows.append(f'price_ticks,symbol=BTCUSDT price=60000.{tid % 100:02d},price_str="'
                        f'60000.{tid % 100:02d}000000",qty=0.0{tid % 90 + 10},qty_str="0.0'
                        f'{tid % 90 + 10}000000",trade_id={tid}i,buyer_maker='
                        f'{"true" if tid % 2 else "false"} {base_ns + tid * 1000}')
        bodies.append("\n".join(rows).encode())
    return bodies


async def _ingest(url: str, token: Optional[str], seconds: float, inflight: int,
                  bodies: List[bytes]) -> Dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Token {token}"} if token else {}
    done = {"requests": 0, "points": 0, "errors": 0}
    lines = bodies[0].count(b"\n") + 1
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one(start: int) -> None:
            i = start
            while time.monotonic() < deadline:
                async with session.post(url, data=bodies[i % len(bodies)],
                                        headers=headers) as resp:
                    await resp.read()
                    if resp.status == 204:
                        done["requests"] += 1
                        done["points"] += lines
                    else:
                        done["errors"] += 1
                i += inflight
        t0 = time.monotonic()
        await asyncio.gather(*(one(k) for k in range(inflight)))
        elapsed = time.monotonic() - t0
    return {**done, "seconds": elapsed, "rate": done["points"] / elapsed}


def start_probe(args: Sequence[str], stdin: bool = False) -> "subprocess.Popen[str]":
    """Start a probe in its own process; collect it with `finish_probe`."""
    return subprocess.Popen([sys.executable, "-m", "tests.support.bench.probes", *args],
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT)


def finish_probe(proc: "subprocess.Popen[str]", timeout: float) -> Dict[str, Any]:
    """The probe's JSON answer; it is killed if it overruns `timeout` (RuntimeError then)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:  # a timeout or Ctrl-C: never leave it running
        proc.kill()
        proc.communicate()
        raise
    try:
        result: Dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return result
    except (ValueError, IndexError):
        raise RuntimeError(f"probe {proc.args[3] if isinstance(proc.args, list) else ''} "
                           f"failed (exit {proc.returncode}): {(stderr or stdout)[-1500:]}"
                           ) from None


def run_probe(args: Sequence[str], timeout: float) -> Dict[str, Any]:
    """Run a probe to its end and return its JSON answer."""
    return finish_probe(start_probe(args), timeout)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="probes")
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("recv-async")
    p.add_argument("--url", required=True)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p = sub.add_parser("recv-backlog")
    p.add_argument("--url", required=True)
    p.add_argument("--worker-reader", action="store_true")
    p = sub.add_parser("drain")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p = sub.add_parser("ingest")
    p.add_argument("--url", required=True, help="full write URL with query string")
    p.add_argument("--token", default=None)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--inflight", type=int, default=2)
    p.add_argument("--bodies", type=int, default=64)
    p.add_argument("--lines", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.probe == "recv-backlog":
        result = recv_backlog(args.url, args.worker_reader)
    elif args.probe == "recv-async":
        result = asyncio.run(_recv_async(args.url, args.warmup, args.seconds))
    elif args.probe == "drain":
        result = drain(args.port, args.seconds)
    else:
        bodies = build_bodies(args.bodies, args.lines)
        result = asyncio.run(_ingest(args.url, args.token, args.seconds, args.inflight, bodies))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
