"""`scripts/bench`: throughput, latency, memory and scale of the capture service on this box.

Every figure comes from real processes on 127.0.0.1: the exchange simulator, Debian's influxd
behind the v2-write front, the worker (`python -m workers`), and supervisord. Modules:

    cli.py        options, section order, time budget, clean stop on Ctrl-C
    rig.py        the shared servers, fresh databases, process bookkeeping, run profiles
    procstat.py   CPU, RSS/PSS/USS and load figures from /proc
    probes.py     standalone load/receive loops run as their own processes
    original_app.py  the original design, re-created for comparison (not product code)
    ceilings.py, ramp.py, original.py, latency.py, memory.py, scale.py, storm.py,
    recovery.py, hotpath.py, quota.py   one section each
    backlog.py    like for like: each reader drains the same queued backlog (ceilings)
    targets.py    the goal / measured / verdict rows (and the README's table)
    report.py     section results and the markdown they render to
    machine.py    CPU model, cores and versions
"""
