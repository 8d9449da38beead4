"""No thread dies alone: an unexpected exception in any thread of a real
worker is logged with its traceback, the worker flushes what it can and exits 1, and a restart
from the same home (the checkpoint and the spool) stores every trade exactly once.

Each case injects the failure with WORKER_INJECT_FAULT=<thread> (workers/capture/worker.py
inject_fault) into a worker that resumes from a checkpoint, while BTCUSDT trades at 150/s:

1. a first run without the injection streams for a moment and stops cleanly, so the
   checkpoint has a base (a fresh worker starts at the first trade it sees, so without a base
   the trades before the restart would be nobody's);
2. the run with the injection, and whatever makes that thread run: `reader` fires on the first
   frame, `keeper` on the first tick, `main` on the first loop, `writer` on the first batch,
   `checkpoint` on the first checkpoint save (ENOSPC, on the writer thread), `backfill` when the
   gap left by the restart (plus a withheld span) is filled, `prober` when a stall probe runs
   (STREAM_STALL_AFTER_S=2 and a pause of the trades);
   it must exit 1 within CRASH_EXIT_BOUND_S, having logged thread_crashed with the thread's
   name and a traceback, then event=stopped exit=1 (the flush ran);
3. a run without the injection from the same home: every trade the simulator generated (the
   ones during the crash and the downtime included) is stored once, with its exact strings.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.procs import wait_until

PAUSED = '{"action": "pause"}'
ONE = "symbols: [BTCUSDT]\n"
CRASH_EXIT_BOUND_S = 30.0  # 15 s forced exit + the 5 s crash pause + slack for a busy box
INJECT = "WORKER_INJECT_FAULT"

# The name the crashed thread has in the log (threading.Thread names in workers/*.py).
THREAD_NAME = {
    "reader": r"ws-btcusdt-\S+",  # one per connection: ws-<worker>-<label>c<n>
    "keeper": r"keeper-btcusdt-\S+",
    "writer": r"writer-btcusdt",
    "checkpoint": r"writer-btcusdt",  # the checkpoint is saved by the writer thread
    "backfill": r"backfill-btcusdt",
    "prober": r"probe-btcusdt",
    "main": r"main",
}


def _trigger(thread: str, cap: Capture) -> None:
    """Make the injected thread run (the worker has just been started with the injection)."""
    if thread == "backfill":
        # The restart already leaves a gap; a withheld span makes sure there is one to fill.
        time.sleep(1.0)
        cap.sim.fault("withhold", symbol="BTCUSDT", count=100)
    elif thread == "prober":
        # Trades for a moment, then silence: after STREAM_STALL_AFTER_S the keeper asks the
        # prober for a stall probe, which runs on the prober thread (workers/capture/prober.py).
        time.sleep(1.5)
        cap.sim.fault("pause")
        time.sleep(3.0)
        cap.sim.fault("resume")


@pytest.mark.slow
@pytest.mark.parametrize("thread", ["reader", "keeper", "writer", "checkpoint", "backfill",
                                    "prober", "main"])
def test_an_exception_in_any_thread_ends_the_worker_with_exit_1_and_loses_nothing(
        thread, tmp_path, exchange_sim, influx_front, influx_db):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=150", "--fault", PAUSED)
    worker = new_worker(tmp_path / "btcusdt", "btcusdt", ONE, sim, influx_front, influx_db,
                        STREAM_STALL_AFTER_S="2" if thread == "prober" else "60")
    cap = Capture(sim, influx_db, influx_front, worker)

    # 1. A base for the checkpoint.
    cap.start_worker()
    sim.fault("resume")
    wait_until(lambda: (worker.data_dir / "btcusdt" / "checkpoint.json").exists(), 15,
               what="a first checkpoint")
    time.sleep(1.0)
    assert worker.stop() == 0, worker.output()[-3000:]
    first_run = len(worker.output())

    # 2. The run with the injected failure.
    worker.env[INJECT] = thread
    started = time.monotonic()
    worker.start()
    _trigger(thread, cap)
    assert worker.proc is not None
    code = worker.proc.wait(CRASH_EXIT_BOUND_S - (time.monotonic() - started))
    took = time.monotonic() - started
    out = worker.output()[first_run:]
    assert code == 1, f"exit code {code} after {took:.1f}s (expected 1)\n{out[-4000:]}"
    assert f"event=inject_fault thread={thread}" in out
    crashed = re.search(rf"event=thread_crashed thread=({THREAD_NAME[thread]}) ", out)
    assert crashed, f"no thread_crashed line for {thread}\n{out[-4000:]}"
    assert "Traceback (most recent call last)" in out[crashed.start():], out[-4000:]
    injected = "No space left on device (injected)" if thread == "checkpoint" else \
        f"injected fault in {thread}"
    assert injected in out[crashed.start():]
    assert f"event=stopping cause='thread {crashed.group(1)} crashed'" in out, out[-4000:]
    assert "event=forced_exit" not in out, "the flush after the crash hung"
    # Every shutdown step runs even when one fails (the checkpoint save fails again when the
    # flush spools a batch: event=stop_step_failed), so the worker always reaches event=stopped.
    stopped = re.search(r"event=stopped took_s=(\S+) checkpoint=(\S+) exit=1", out)
    assert stopped, f"no event=stopped ... exit=1: the flush did not finish\n{out[-4000:]}"
    ending = f"stopped after {stopped.group(1)}s, checkpoint {stopped.group(2)}"
    # Shown with -rP or -s: what the worker did, for the note.
    print(f"{thread}: exit {code} after {took:.1f}s (the 5 s crash pause included); crashed "
          f"thread {crashed.group(1)}; {ending}; "
          f"spooled at exit: {'yes' if 'why=shutdown' in out else 'nothing'}")

    # 3. Restart without the injection: the checkpoint (and the spool) cover the rest.
    del worker.env[INJECT]
    sim.fault("resume")
    cap.start_worker()
    time.sleep(3.0)  # streaming again, and the gap of the downtime past its grace period
    cap.assert_exactly_once(["BTCUSDT"], timeout=45)
    cap.assert_values_exact("BTCUSDT")
    assert "event=inject_fault" not in worker.output()[first_run + len(out):]
