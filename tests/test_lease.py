"""The lease: one writer per name in a bucket, renewed before a write and not while idle
(issue 19: an idle database costs no request)."""

from __future__ import annotations

import time

import pytest

from bottomless_core.lease import WRITE_MARGIN, Lease, LeaseHeldError
from bottomless_core.store.s3 import S3Store


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Requests:
    def __init__(self) -> None:
        self.n = 0

    def sent(self, operation: str, payload: int) -> None:
        self.n += 1

    def answered(self, operation: str, received: int) -> None:
        pass


def test_an_idle_lease_costs_nothing_and_a_lapsed_one_is_lost(storage: S3Store) -> None:
    clock = Clock()
    counted = Requests()
    storage.count_requests(counted)
    a = Lease(storage, "idle.db", "host-a:/idle.db", clock=clock)
    a.acquire()
    before = counted.n
    clock.now += 60.0 - WRITE_MARGIN - 1  # still WRITE_MARGIN + 1 s to go: nothing sent
    a.ensure()
    assert counted.n == before
    clock.now += 2  # less than WRITE_MARGIN left: renewed before the write
    a.ensure()
    assert counted.n == before + 1
    clock.now += 3600  # idle for an hour: lapsed; another writer may take it
    b = Lease(storage, "idle.db", "host-b:/idle.db", clock=clock)
    b.acquire()
    with pytest.raises(LeaseHeldError, match="taken over by host-b"):
        a.ensure()  # the idle one finds out at its next write, and writes nothing
    assert not a.held and b.held
    b.release()
