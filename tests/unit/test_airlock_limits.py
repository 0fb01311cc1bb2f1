"""The airlock's serving limits (review S10, F20) as pure rules, and the upload stream's
bounds, without a server (the service end to end: tests/integration/test_airlock_service.py).

Behaviours under test:
- a person holds at most `limit` of a thing at once; giving one back frees it, for them only;
- filings: at most `limit` per person in any hour, the wait until the next is told, a refused
  filing is refunded;
- a canary in a pool whose every worker is held reports how long it waited; once a worker is
  free it runs and the pool is no longer stalled;
- the stall verdict: a canary past the bound, or a full upload pool with no byte moved for
  longer than the idle bound plus the stall bound; a full pool that moves is not a stall;
- the upload stream never waits longer than its idle bound for the next bytes, and an error
  from the event loop reaches the reader even behind a full queue.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from provisioner.airlock.limits import Canary, FilingWindow, PersonLimit, stalled
from provisioner.airlock.service import UPLOAD_QUEUE_CHUNKS, StreamSource
from provisioner.errors import InvalidInputError, TemporaryError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_person_holds_at_most_the_limit_and_others_are_not_affected() -> None:
    limit = PersonLimit(2)
    assert limit.take("fred") and limit.take("fred")
    assert not limit.take("fred")
    assert limit.take("lea")  # another person: their own count
    assert limit.total == 3
    limit.give("fred")
    assert limit.take("fred")
    for _ in range(2):
        limit.give("fred")
    limit.give("lea")
    assert limit.total == 0 and not limit.held


def test_filings_are_bounded_per_person_per_hour_and_a_refusal_is_refunded() -> None:
    clock = Clock()
    window = FilingWindow(3, window=3600, clock=clock)
    for _ in range(3):
        assert window.reserve("fred") == 0
        clock.now += 10
    assert window.reserve("fred") == pytest.approx(3600 - 30)
    assert window.reserve("lea") == 0  # another person
    clock.now += 3600 - 30  # the first filing leaves the window
    assert window.reserve("fred") == 0
    assert window.reserve("fred") > 0
    window.refund("lea")  # lea's filing was refused: it does not count
    for _ in range(3):
        assert window.reserve("lea") == 0
    assert window.reserve("lea") > 0


def test_a_canary_reports_a_pool_whose_workers_are_all_held() -> None:
    clock = Clock()
    pool = ThreadPoolExecutor(2)
    release = threading.Event()
    try:
        held = [pool.submit(release.wait) for _ in range(2)]
        canary = Canary("action", pool, clock=clock)
        canary.tick()
        clock.now += 11
        canary.tick()  # still waiting: no second canary
        assert canary.waited() == pytest.approx(11)
        reasons = stalled([canary], [], 4, bound=10, upload_idle=30, now=clock.now)
        assert reasons == ["the action workers have not run a task for 11 s (bound 10 s)"]
        release.set()
        for future in held:
            future.result(timeout=10)
        deadline = time.monotonic() + 10
        while canary.sent is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert canary.waited() == 0
        assert stalled([canary], [], 4, bound=10, upload_idle=30, now=clock.now) == []
    finally:
        release.set()
        pool.shutdown()


def test_a_full_upload_pool_is_a_stall_only_when_nothing_moves() -> None:
    now = 1000.0
    moving = [now - 1, now - 50]
    assert stalled([], moving, 2, bound=10, upload_idle=30, now=now) == []
    silent = [now - 41, now - 50]
    [reason] = stalled([], silent, 2, bound=10, upload_idle=30, now=now)
    assert "all 2 upload workers are busy and none has moved a byte for 41 s" in reason
    # not full: a free worker still takes uploads
    assert stalled([], silent, 3, bound=10, upload_idle=30, now=now) == []


def test_the_upload_stream_waits_for_bytes_no_longer_than_its_idle_bound() -> None:
    source = StreamSource("out/table.csv", 25, idle_seconds=0.2)
    source.chunks.put(b"abc")
    with pytest.raises(TemporaryError, match=r"no bytes arrived for 0\.2 s"):
        list(source.read_parts(10))
    assert source.silent


def test_an_error_from_the_event_loop_reaches_the_reader_behind_a_full_queue() -> None:
    source = StreamSource("out/table.csv", 10 << 20, idle_seconds=5)
    for _ in range(UPLOAD_QUEUE_CHUNKS):
        source.chunks.put_nowait(b"x")
    source.fail(InvalidInputError("the upload was interrupted"))  # never blocks
    with pytest.raises(InvalidInputError, match="interrupted"):
        list(source.read_parts(4))
    assert not source.silent
