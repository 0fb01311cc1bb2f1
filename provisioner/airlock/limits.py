"""What keeps one person from stalling the airlock for everyone (review S10, F20): how much
each person may hold at once, how often they may file, and whether the workers still run.

Everything here is used from the service's event loop only (one thread), so the counters
need no lock; the clock is a parameter so the rules are tested without waiting.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class PersonLimit:
    """At most `limit` of one thing (uploads, running actions) per person at once."""

    limit: int
    held: Counter[str] = field(default_factory=Counter)

    def take(self, person: str) -> bool:
        if self.held[person] >= self.limit:
            return False
        self.held[person] += 1
        return True

    def give(self, person: str) -> None:
        self.held[person] -= 1
        if self.held[person] <= 0:
            del self.held[person]

    @property
    def total(self) -> int:
        return sum(self.held.values())


@dataclass
class FilingWindow:
    """At most `limit` filings per person in any `window` seconds (a sliding window)."""

    limit: int
    window: float = 3600.0
    clock: Clock = time.monotonic
    times: dict[str, deque[float]] = field(default_factory=dict)

    def reserve(self, person: str) -> float:
        """0 and the filing is counted; else the seconds until this person may file again."""
        now = self.clock()
        times = self.times.setdefault(person, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return times[0] + self.window - now
        times.append(now)
        return 0.0

    def refund(self, person: str) -> None:
        """The filing reserved last was not made (refused): it does not count."""
        times = self.times.get(person)
        if times:
            times.pop()


@dataclass
class Canary:
    """A no-op task kept in a pool's queue: while one waits longer than the bound, no worker
    of that pool has been free for that long (every worker busy, or stuck)."""

    name: str
    pool: ThreadPoolExecutor
    clock: Clock = time.monotonic
    sent: float | None = None  # when the task still waiting was handed to the pool

    def tick(self) -> None:
        """Hand the pool a new task once the last one has run."""
        if self.sent is None:
            self.sent = self.clock()
            self.pool.submit(_noop).add_done_callback(self._ran)

    def _ran(self, _: Future[None]) -> None:
        self.sent = None  # a worker thread: one assignment, read by the loop

    def waited(self) -> float:
        sent = self.sent
        return 0.0 if sent is None else self.clock() - sent


def _noop() -> None:
    return None


def stalled(
    canaries: list[Canary],
    upload_progress: list[float],
    upload_workers: int,
    *,
    bound: float,
    upload_idle: float,
    now: float,
) -> list[str]:
    """Why the service cannot serve (empty: it can). `upload_progress`: when each running
    upload last moved a byte. A full upload pool is a stall only when none of its uploads
    has moved for longer than any client may stay silent (`upload_idle`) plus `bound`: then
    even the idle cut did not free them."""
    reasons = [
        f"the {c.name} workers have not run a task for {c.waited():.0f} s (bound {bound:.0f} s)"
        for c in canaries
        if c.waited() > bound
    ]
    if len(upload_progress) >= upload_workers and upload_progress:
        quiet = now - max(upload_progress)
        if quiet > bound + upload_idle:
            reasons.append(
                f"all {upload_workers} upload workers are busy and none has moved a byte for "
                f"{quiet:.0f} s (bound {bound + upload_idle:.0f} s)"
            )
    return reasons
