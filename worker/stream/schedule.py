"""When the worker loop does what: how long one consume() may block, when to look for stuck
fetches and decodes, when to commit. No clock is read here: the caller passes `now`, as with the
micro-batcher, so every decision is deterministic and tested without a broker or threads.
"""

from __future__ import annotations

# How long one consume() may block: long when idle (callbacks are still served), short while
# images are being decoded or results await acknowledgement (their completion does not wake it).
IDLE_POLL_S = 0.1
BUSY_POLL_S = 0.002
WATCHDOG_INTERVAL_S = 0.5  # how often overdue fetches and decodes are looked for


def poll_wait(now: float, batch_due: float | None, *, ready: bool, busy: bool) -> float:
    """How long the next consume() may block. `batch_due`: when the next batch is due (None:
    nothing waits); `ready`: decoded images wait to be collected; `busy`: images are being
    decoded or results await acknowledgement."""
    if ready or (batch_due is not None and batch_due <= now):
        return 0.0
    wait = IDLE_POLL_S if batch_due is None else min(IDLE_POLL_S, batch_due - now)
    return min(wait, BUSY_POLL_S) if busy else wait


class Watchdog:
    """Looks for work that outlasted `timeout_s` every `interval_s`: the pool's thread for it is
    given up on (stream/pool.py). Once as many threads are stuck as the pool has, nothing can
    move any more, and the worker says it is not live, to be restarted."""

    def __init__(
        self, timeout_s: float, threads: int, interval_s: float = WATCHDOG_INTERVAL_S
    ) -> None:
        self.timeout_s = timeout_s
        self.threads = threads
        self.interval_s = interval_s
        self._next = float("-inf")

    def due(self, now: float) -> float | None:
        """If a look is due at `now`: work started before the returned time is overdue (and the
        next look is due `interval_s` later). None between looks."""
        if now < self._next:
            return None
        self._next = now + self.interval_s
        return now - self.timeout_s

    def live(self, stuck: int) -> bool:
        """Whether a thread is left to make progress with `stuck` threads stuck."""
        return stuck < self.threads


class Commits:
    """Stored offsets are committed at most every `interval_s` (0: as soon as any is stored)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stored = False  # an offset was stored since the last commit
        self._last = float("-inf")

    def stored(self) -> None:
        self._stored = True

    def due(self, now: float) -> bool:
        return self._stored and now - self._last >= self.interval_s

    def sent(self, now: float) -> None:
        """A commit of everything stored went out at `now`."""
        self._stored, self._last = False, now
