"""The original design, re-created for comparison only (not product code).

As the service began: one asyncio `websockets` client on the combined-stream URL, `json.loads`
per message, an `influxdb_client.Point` per trade (tag `symbol`, fields `price` and
`price_str`, time = trade time T at millisecond precision), and one blocking SYNCHRONOUS write
per trade on the event loop. Trades of the same millisecond share a key and overwrite each
other; a slow write holds up the reading.

    python -m tests.support.bench.original_app URL   (INFLUXDB_URL/TOKEN/ORG/BUCKET from env)

The only addition is a counter of successful writes, printed as JSON on SIGTERM (then the
process exits at once, without a closing handshake that would wait behind the backlog), so the
benchmark can tell overwritten points from trades never written.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import websockets
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS


async def stream(url: str, write_api: object, bucket: str, org: str, written: list) -> None:
    async with websockets.connect(url) as ws:
        async for message in ws:
            data = json.loads(message)["data"]
            point = (Point("price_ticks")
                     .tag("symbol", data["s"])
                     .field("price", float(data["p"]))
                     .field("price_str", data["p"])
                     .time(data["T"], WritePrecision.MS))
            write_api.write(bucket=bucket, org=org, record=point)  # type: ignore[attr-defined]
            written[0] += 1


async def main(url: str) -> int:
    client = InfluxDBClient(url=os.environ["INFLUXDB_URL"], token=os.environ["INFLUXDB_TOKEN"],
                            org=os.environ["INFLUXDB_ORG"])
    write_api = client.write_api(write_options=SYNCHRONOUS)
    written = [0]

    def report_and_exit(signum: int, frame: object) -> None:
        # A plain signal handler runs between two bytecodes even while a write blocks the
        # event loop, so the count is exact up to the write in progress.
        sys.stdout.write(json.dumps({"written": written[0]}) + "\n")
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, report_and_exit)
    await stream(url, write_api, os.environ["INFLUXDB_BUCKET"], os.environ["INFLUXDB_ORG"],
                 written)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
