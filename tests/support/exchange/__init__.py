"""A local Binance spot exchange for tests: trade streams, REST history and fault injection.

One aiohttp server on 127.0.0.1 serves the WebSocket streams (`/ws/...`, `/stream?streams=...`),
the REST endpoints the collector uses (`/api/v3/...`), the public archive's daily and monthly
trade files of its own ledger (`/data/spot/...`) and a control API (`/_sim/...`) with which a
test injects faults and reads the ledger of every trade id generated.  The module docstring of
`control.py` lists the fault actions; `scripts/exchange-sim --help` lists the command line.

Modules, by role:
    config      option values and symbol specs
    generator   the seeded per-symbol trade sequence
    history     per-symbol columnar trade store (REST, resend) and the ledger spans
    market      the symbols, their rates and the generation tick
    frames      WebSocket frame bytes and trade encoding (once per framing)
    connection  one client connection: framing, subscriptions, pings, rate limit, writes
    protocol    URL parsing and the live control methods (SUBSCRIBE, ...)
    hub         all connections: fan-out, pings, timeouts, fault broadcasts
    limits      connection attempts per IP: 429 + Retry-After, 418 bans
    faults      fault state and malformed frames
    rest        /api/v3 endpoints, request weights, REST faults
    control     /_sim endpoints: faults, ledger, stats, run-time limits
    stats       counters of /_sim/stats, refusals by kind
    replay      playing a recorded JSONL capture instead of generating
    archive     the data.binance.vision files of the ledger (/data/spot/...) and their defects
    server      the aiohttp app and its background loops
    cli         argument parsing and `main()`
    client      test-side `ExchangeSim` (runs the CLI as a subprocess)
    fixtures    the `exchange_sim` pytest fixture
"""
