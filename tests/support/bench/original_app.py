"""The original design, re-created for comparison only (not product code).

As the service began, and as the public scripts it came from do it: one asyncio `websockets`
client on the combined-stream URL, `json.loads` per message, an `influxdb_client.Point` per
trade (tag `symbol`, fields `price` and `price_str`, time = trade time T at millisecond
precision), and one blocking SYNCHRONOUS write per trade on the event loop. Trades of the same
millisecond share a key and overwrite each other; a slow write holds up the reading. When the
connection ends, for whatever reason (the exchange dropped a client that fell behind, the
library's keepalive gave up, a write raised), the scripts' usual loop: log it, sleep a moment
(RECONNECT_S, 1 s unless ORIGINAL_RECONNECT_S says otherwise), connect again. No backfill:
whatever was traded meanwhile, and whatever the exchange had queued for the dropped
connection, is never seen.

    python -m tests.support.bench.original_app URL   (INFLUXDB_URL/TOKEN/ORG/BUCKET from env)

The only additions are counters (successful writes, connections, why each one ended), printed
as JSON on SIGTERM (then the process exits at once, without a closing handshake that would wait
behind the backlog), so the benchmark can tell overwritten points from trades never written and
count the reconnects.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from typing import Any, Dict

import websockets
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

RECONNECT_S = float(os.environ.get("ORIGINAL_RECONNECT_S", "1"))


def new_counts() -> Dict[str, Any]:
    return {"written": 0, "connections": 0, "ended": Counter()}


def report(counts: Dict[str, Any]) -> str:
    """The JSON line printed on SIGTERM; reconnects = connections after the first."""
    return json.dumps({"written": counts["written"], "connections": counts["connections"],
                       "reconnects": max(0, counts["connections"] - 1),
                       "ended": dict(counts["ended"])})


async def stream(url: str, write_api: object, bucket: str, org: str,
                 counts: Dict[str, Any]) -> None:
    async with websockets.connect(url) as ws:
        counts["connections"] += 1
        async for message in ws:
            data = json.loads(message)["data"]
            point = (Point("price_ticks")
                     .tag("symbol", data["s"])
                     .field("price", float(data["p"]))
                     .field("price_str", data["p"])
                     .time(data["T"], WritePrecision.MS))
            write_api.write(bucket=bucket, org=org, record=point)  # type: ignore[attr-defined]
            counts["written"] += 1


async def run_forever(url: str, write_api: object, bucket: str, org: str,
                      counts: Dict[str, Any], reconnect_s: float = RECONNECT_S) -> None:
    """The scripts' reconnect loop: any end of the stream -> short sleep -> connect again."""
    while True:
        try:
            await stream(url, write_api, bucket, org, counts)
            cause = "closed"  # the server closed cleanly: the iteration just ended
        except Exception as exc:  # the scripts catch everything and carry on
            cause = type(exc).__name__
        counts["ended"][cause] += 1
        print(f"stream ended ({cause}); reconnecting in {reconnect_s:g} s", file=sys.stderr,
              flush=True)
        await asyncio.sleep(reconnect_s)


async def main(url: str) -> int:
    client = InfluxDBClient(url=os.environ["INFLUXDB_URL"], token=os.environ["INFLUXDB_TOKEN"],
                            org=os.environ["INFLUXDB_ORG"])
    write_api = client.write_api(write_options=SYNCHRONOUS)
    counts = new_counts()

    def report_and_exit(signum: int, frame: object) -> None:
        # A plain signal handler runs between two bytecodes even while a write blocks the
        # event loop, so the count is exact up to the write in progress.
        sys.stdout.write(report(counts) + "\n")
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, report_and_exit)
    await run_forever(url, write_api, os.environ["INFLUXDB_BUCKET"], os.environ["INFLUXDB_ORG"],
                      counts)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
