"""The benchmark's re-created original design reconnects as the public scripts do: when the
stream ends (here the server drops the connection, as an exchange drops a slow client), it
sleeps briefly and connects again, without backfill, counting writes and connections."""
from __future__ import annotations

import asyncio
import json
from typing import Any, List

import websockets

from tests.support.bench import original_app


class RecordingWrites:
    """Stands in for influxdb-client's SYNCHRONOUS write_api."""

    def __init__(self) -> None:
        self.records: List[Any] = []

    def write(self, bucket: str, org: str, record: Any) -> None:
        self.records.append(record)


def trade(trade_id: int) -> str:
    return json.dumps({"stream": "btcusdt@trade",
                       "data": {"e": "trade", "s": "BTCUSDT", "t": trade_id, "p": "100.5",
                                "q": "1", "T": 1_700_000_000_000 + trade_id}})


async def drop_after_two_trades_then_serve_one() -> tuple:
    connections: List[int] = []
    served = asyncio.Event()

    async def handler(ws: Any) -> None:
        connections.append(1)
        if len(connections) == 1:
            await ws.send(trade(1))
            await ws.send(trade(2))
            ws.transport.abort()  # dropped: no close frame, like a slow_client abort
            return
        await ws.send(trade(3))
        served.set()
        await ws.wait_closed()

    counts = original_app.new_counts()
    writes = RecordingWrites()
    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(original_app.run_forever(
            f"ws://127.0.0.1:{port}/stream?streams=btcusdt@trade", writes, "b", "o", counts,
            reconnect_s=0.05))
        await asyncio.wait_for(served.wait(), 10)
        for _ in range(100):
            if counts["written"] == 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return counts, writes, connections


def test_a_dropped_stream_is_reconnected_after_a_short_sleep_and_counted():
    counts, writes, connections = asyncio.run(drop_after_two_trades_then_serve_one())

    assert len(connections) == 2
    assert counts["written"] == 3 and len(writes.records) == 3
    assert counts["connections"] == 2
    assert sum(counts["ended"].values()) == 1  # the drop; the second stream was cancelled
    report = json.loads(original_app.report(counts))
    assert report["reconnects"] == 1 and report["written"] == 3


def test_points_carry_the_trade_time_in_milliseconds():
    _, writes, _ = asyncio.run(drop_after_two_trades_then_serve_one())

    line = writes.records[0].to_line_protocol()
    assert line.startswith("price_ticks,symbol=BTCUSDT ")
    assert line.endswith(" 1700000000001")  # ms: trades of one millisecond share a key
