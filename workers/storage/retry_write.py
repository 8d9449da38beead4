"""One body written through a sink with the worker's retries, for the tools that write outside
a Writer (load-files, a verify's day checks): retryable failures again with the batch backoff,
and what is not retryable at once as LoadFailed.
"""
from __future__ import annotations

from typing import Callable

from workers.common.backoff import SYSTEM_CLOCK, Clock
from workers.errors import ContentRefused, LoadFailed, PermanentWriteError, RetryableWriteError
from workers.settings import WriteSettings
from workers.storage.sink import Sink
from workers.storage.writer import batch_backoff

Notice = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def write_with_retries(sink: Sink, body: str, write: WriteSettings,
                       clock: Clock = SYSTEM_CLOCK, notice: Notice = quiet) -> None:
    """One batch as the worker's writer sends it: retryable failures again with backoff until
    WRITE_RETRY_BUDGET_S is spent (then LoadFailed); a token or bucket refusal is LoadFailed at
    once; a content refusal (ContentRefused) goes to the caller. The first failure is told to
    `notice` at once (what failed, how long it keeps trying), and so is a recovery after it:
    a user must not stare at a silent terminal for the whole budget."""
    backoff = batch_backoff(write, clock)
    failures = 0
    while True:
        try:
            sink.write(body)
            if failures:
                notice(f"InfluxDB took the batch after {failures} failed attempt"
                       f"{'s' if failures > 1 else ''}: loading goes on")
            return
        except ContentRefused:
            raise
        except PermanentWriteError as exc:
            raise LoadFailed(str(exc)) from None
        except RetryableWriteError as exc:
            failures += 1
            if failures == 1:
                notice(f"{exc}; retrying until WRITE_RETRY_BUDGET_S={write.retry_budget_s:g} s "
                       "have passed (Ctrl-C stops)")
            delay = backoff.next_delay(exc.retry_after or 0.0)
            if not backoff.fits(delay):
                raise LoadFailed(f"{exc} (still failing after WRITE_RETRY_BUDGET_S="
                                 f"{write.retry_budget_s:g})") from None
            clock.sleep(delay)
