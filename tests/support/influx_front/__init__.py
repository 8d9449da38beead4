"""A loopback front that makes InfluxDB 1.6.7 answer like the InfluxDB our users run.

Test support, not product. Debian's influxd 1.6.7 has no `/api/v2/write`, so the official
`influxdb-client` cannot write to it. This front accepts

    POST /api/v2/write?org=..&bucket=db[/rp]&precision=ns|us|ms|s   (Authorization: Token ..)

and forwards the body to influxd's `/write?db=..&rp=..&precision=n|u|ms|s`, translating the
answers. It also serves `GET /health`, `GET|HEAD /ping` and proxies InfluxQL `/query`.

It speaks the dialect of one flavor (`--flavor`, `InfluxFront.start(flavor=...)`):

    lenient      the default, the front as it always was: 1.x write semantics behind 2.x-style
                 errors and token auth, no limits of its own
    1.8          InfluxDB OSS 1.8          2.7          InfluxDB OSS 2.7
    3core        InfluxDB 3 Core           serverless   InfluxDB Cloud Serverless

dialects.py holds the table of what each does (partial or whole-batch refusals, statuses and
bodies, size limits, the write quota, retention, auth forms, DBRP mappings, the 3 Core query
span, InfluxQL that 3.x lacks), each row citing `../shared/reference/influxdb-servers.md`, and
what is documented but not emulated (Cloud TSM's "204 then dropped later", 3.x duplicates).
Limits default to the flavor's and can be set or turned off: `--write-quota 5MB/5m`,
`--max-body`, `--max-inflated`, `--retention`, `--query-span` (quota.py, influxql.py).

Faults are armed at start (`--fault`) or at run time on the control API (faults.py lists them):

    POST /_front/fault  {"action": ACTION, "count": N, "seconds": S, ...}
    GET  /_front/stats  (FrontStats: statuses, refusals by kind, lines, quota use)
    POST /_front/reset  (clears faults, stats and the quota window)

and DBRP mappings (2.7, serverless) as the real API makes them: `POST /api/v2/dbrps`, with
the bucket's id from `GET /api/v2/buckets?name=` (the front's bucket id is the bucket's name).

Modules: server.py (the aiohttp server), cli.py (command line), control.py (InfluxFront, the
test-side handle), dialects.py, writes.py, lineproto.py, influxql.py, quota.py, dbrp.py,
faults.py.

Run: python -m tests.support.influx_front --influx-url http://127.0.0.1:8086 --port 9999
"""
from tests.support.influx_front.cli import build_parser, main
from tests.support.influx_front.control import InfluxFront
from tests.support.influx_front.dialects import DIALECTS, FLAVORS, LENIENT, error_body
from tests.support.influx_front.faults import (
    ACTIONS,
    REQUEST_FAULTS,
    STATUS_FAULTS,
    Fault,
    FrontStats,
    parse_fault,
    parse_fault_arg,
)
from tests.support.influx_front.lineproto import data_lines, measurement_of
from tests.support.influx_front.server import PRECISIONS, FrontServer

__all__ = ["ACTIONS", "DIALECTS", "FLAVORS", "LENIENT", "PRECISIONS", "REQUEST_FAULTS",
           "STATUS_FAULTS", "Fault", "FrontServer", "FrontStats", "InfluxFront", "build_parser",
           "data_lines", "error_body", "main", "measurement_of", "parse_fault",
           "parse_fault_arg"]
