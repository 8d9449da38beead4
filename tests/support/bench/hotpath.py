"""Section 9: the worker's hot path stage by stage, in one process, without the network.

Where a trade's CPU goes once its bytes are here: websocket-client's frame reading (its own
reads, then through the worker's reader), orjson, the checks, sequencing with the line, and the
batch body. Every stage runs the worker's own code over the same 100,000 pre-built frames
(Binance's combined-stream trade events, 8-decimal strings, µs times as the worker asks for
them); CPU time per message, median of three runs. The socket is an in-memory stand-in, so
the figures leave out the system calls that section 1's like-for-like drains include.
"""
from __future__ import annotations

import statistics
import struct
import time
from typing import Any, Callable, Dict, List

import orjson
import websocket

from workers.capture.pipeline import Pipeline
from workers.exchange.connection import BufferedReader
from workers.exchange.protocol import MessageParser
from workers.storage.batch import Batch
from workers.storage.lineproto import LineRenderer
from workers.trade import Trade

from .report import Section
from .rig import Profile, Rig

FRAMES = 100_000
RUNS = 3
SYMBOL = "BTCUSDT"


def payloads(n: int) -> List[bytes]:
    """Times in µs, as the worker asks for them (timeUnit=MICROSECOND)."""
    base = int(time.time() * 1_000_000) - 60_000_000
    return [orjson.dumps({"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": base + i * 1000 + 417, "s": SYMBOL, "t": 5_000_000 + i,
        "p": f"{91_234 + i % 500 / 100:.8f}", "q": f"{0.0001 * (1 + i % 97):.8f}",
        "T": base + i // 3 * 1000 + 123, "m": bool(i % 2), "M": True}}) for i in range(n)]


def wire(messages: List[bytes]) -> bytes:
    """Unmasked server text frames, as the exchange sends them."""
    out = []
    for p in messages:
        n = len(p)
        out.append((bytes([0x81, n]) if n < 126 else b"\x81\x7e" + struct.pack("!H", n)) + p)
    return b"".join(out)


class MemorySocket:
    """A socket stand-in serving a byte string: recv() as a real socket would, no system call."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def recv(self, size: int) -> bytes:
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    def gettimeout(self) -> None:
        return None


def reader(data: bytes, worker_reader: bool) -> "websocket.WebSocket":
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
    sock = MemorySocket(data)
    ws.sock, ws.connected = sock, True  # type: ignore[assignment]
    if worker_reader:
        BufferedReader(sock).plug_into(ws)  # type: ignore[arg-type]
    else:
        ws.frame_buffer.recv = lambda size: websocket._socket.recv(sock, size)  # type: ignore
    return ws


def per_message(run: Callable[[], None], count: int) -> float:
    """Median CPU microseconds per message over RUNS runs."""
    times = []
    for _ in range(RUNS):
        began = time.process_time()
        run()
        times.append((time.process_time() - began) / count * 1e6)
    return statistics.median(times)


def measure(count: int = FRAMES) -> Dict[str, float]:
    messages = payloads(count)
    data = wire(messages)
    parser = MessageParser([SYMBOL])
    renderer = LineRenderer("price_ticks")
    trades: List[Trade] = [parser.parse(m) for m in messages]  # type: ignore[misc]
    batches: List[Batch] = []

    def frames(worker_reader: bool) -> Callable[[], None]:
        def run() -> None:
            recv = reader(data, worker_reader).recv_data_frame
            for _ in range(count):
                recv(True)
        return run

    def loads() -> None:
        f = orjson.loads
        for m in messages:
            f(m)

    def parse() -> None:
        f = parser.parse
        for m in messages:
            f(m)

    def line() -> None:
        f = renderer.line
        for t in trades:
            f(t)

    def accept() -> None:
        f = Pipeline(renderer, 5000, {}, lambda s, g: None, batches.append).accept
        for t in trades:
            f(t)

    def body() -> None:
        for b in batches:
            b.body().encode()

    def whole() -> None:  # what the reader thread does per frame, without the network
        recv = reader(data, True).recv_data_frame
        f = Pipeline(renderer, 5000, {}, lambda s, g: None, lambda b: None).accept
        p = parser.parse
        for _ in range(count):
            f(p(recv(True)[1].data))  # type: ignore[arg-type]

    out = {"frames_library": per_message(frames(False), count),
           "frames_worker_reader": per_message(frames(True), count),
           "orjson": per_message(loads, count), "parse": per_message(parse, count),
           "line": per_message(line, count), "accept": per_message(accept, count)}
    batches.clear()
    accept()
    out["body"] = per_message(body, count)
    out["reader_thread"] = per_message(whole, count)
    return out


def run(rig: Rig, profile: Profile, facts: Dict[str, Any]) -> Section:
    sec = Section("hotpath", "9. The hot path, stage by stage (one process, no network)")
    got = measure()
    sec.facts["hotpath"] = got
    table = sec.table("stage", "CPU per message", "code")
    rows = [
        ("websocket-client reads a frame (its own reads)", "frames_library",
         "`recv_data_frame` over `frame_buffer.recv`"),
        ("... through the worker's reader", "frames_worker_reader",
         "connection.BufferedReader as `recv_strict`"),
        ("orjson parses the event", "orjson", "`orjson.loads`"),
        ("parse + every check + the Trade", "parse", "protocol.MessageParser.parse"),
        ("the line alone", "line", "lineproto.LineRenderer.line"),
        ("sequencing + batching, the line included", "accept", "pipeline.Pipeline.accept"),
        ("the batch body, joined and encoded (per line)", "body", "`Batch.body().encode()`"),
        ("the reader thread's whole work per frame", "reader_thread",
         "read through the worker's reader, parse, accept"),
    ]
    for label, key, code in rows:
        table.add(label, f"{got[key]:.2f} us", code)
    sec.notes.append(
        f"{FRAMES:,} pre-built frames, CPU time (process_time) per message, median of {RUNS} "
        "runs, in the benchmark's own process. The rest of a worker's CPU per trade (section 1) "
        "is the system calls of its reads, the write requests (influxdb-client, urllib3, "
        "the socket), the checkpoint after each batch and the status file once a second.")
    return sec
