"""Thresher's own pool (api/work.py) and the fair compression slots: tenants served in turn, a
deadline that holds from arrival whatever the pool is doing, work that never starts once its
caller has given up (issue 26, findings 7 and 9)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from thresher.api.compression_service import WorkerPool
from thresher.api.work import Busy, FairQueue, WorkPool


def test_the_fair_queue_serves_tenants_in_turn_and_bounds_each_line():
    line: FairQueue[str] = FairQueue(per_tenant=3)
    for i in range(3):
        assert line.push("a", f"a{i}")
    assert not line.push("a", "a3")  # a's line is full ...
    assert line.push("b", "b0")  # ... b's is not
    assert line.push("c", "c0")
    assert [line.pop() for _ in range(5)] == ["a0", "b0", "c0", "a1", "a2"]
    assert line.pop() is None and line.waiting() == 0
    assert line.push("a", "x") and line.remove("a", "x") and not line.remove("a", "x")
    assert FairQueue(per_tenant=0).push("a", "x") is False  # no waiting at all


def test_a_tenant_at_its_share_is_passed_over():
    line: FairQueue[str] = FairQueue(per_tenant=4)
    line.push("a", "a0")
    line.push("b", "b0")
    assert line.pop(lambda tenant: tenant != "a") == "b0"
    assert line.pop(lambda tenant: tenant != "a") is None and line.waiting() == 1
    assert line.pop() == "a0"


def run(coro):
    return asyncio.run(coro)


def test_work_not_started_by_the_deadline_never_runs():
    pool = WorkPool(threads=1, queue=4)
    ran: list[str] = []
    release = threading.Event()

    async def main() -> None:
        hold = asyncio.create_task(
            pool.run("a", lambda _: release.wait(10), deadline=time.monotonic() + 30)
        )
        await asyncio.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(Busy) as caught:
            await pool.run("b", lambda _: ran.append("b"), deadline=start + 0.3)
        assert 0.25 < time.monotonic() - start < 0.6
        assert caught.value.reason == "deadline" and not caught.value.started
        assert caught.value.waited == pytest.approx(0.3, abs=0.1)
        release.set()
        await hold

    run(main())
    time.sleep(0.1)
    assert ran == [] and pool.waiting == 0


def test_the_caller_answers_at_its_deadline_even_if_the_work_runs_on():
    pool = WorkPool(threads=2, queue=4)
    done = threading.Event()

    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(Busy) as caught:
            await pool.run("a", lambda _: done.wait(2), deadline=start + 0.2)
        assert time.monotonic() - start < 0.5
        assert caught.value.started and caught.value.reason == "deadline"

    run(main())
    done.set()


def test_another_tenant_is_served_before_the_rest_of_a_burst():
    pool = WorkPool(threads=2, queue=16)
    order: list[str] = []
    gate = threading.Event()

    def job(name: str):
        def work(_waited: float) -> str:
            order.append(name)  # the order work starts in
            gate.wait(10)
            return name

        return work

    async def main() -> None:
        deadline = time.monotonic() + 30
        burst = [asyncio.create_task(pool.run("a", job(f"a{i}"), deadline=deadline))
                 for i in range(6)]  # fmt: skip
        await asyncio.sleep(0.1)
        # a holds one worker of two (its share); b's request takes the other at once.
        assert pool.running == 1
        other = asyncio.create_task(pool.run("b", job("b"), deadline=deadline))
        await asyncio.sleep(0.1)
        assert pool.running == 2
        gate.set()
        await asyncio.gather(*burst, other)

    run(main())
    assert order[:2] == ["a0", "b"]  # before a's other five, which waited for a0's worker


def test_a_client_that_leaves_stops_the_wait_at_once():
    pool = WorkPool(threads=1, queue=4)
    gone = threading.Event()
    release = threading.Event()

    async def main() -> None:
        hold = asyncio.create_task(
            pool.run("a", lambda _: release.wait(10), deadline=time.monotonic() + 30)
        )
        await asyncio.sleep(0.05)
        threading.Timer(0.1, gone.set).start()
        start = time.monotonic()
        with pytest.raises(Busy) as caught:
            await pool.run(
                "b", lambda _: None, deadline=start + 30, cancelled=gone.is_set
            )
        assert caught.value.reason == "gone" and time.monotonic() - start < 0.5
        release.set()
        await hold

    run(main())


def test_a_full_line_and_a_closed_pool_answer_at_once():
    pool = WorkPool(threads=1, queue=1)
    release = threading.Event()

    async def main() -> None:
        deadline = time.monotonic() + 30
        hold = asyncio.create_task(pool.run("a", lambda _: release.wait(10), deadline=deadline))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(pool.run("a", lambda _: "late", deadline=deadline))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy) as full:
            await pool.run("a", lambda _: None, deadline=deadline)
        assert full.value.reason == "full"
        pool.close()
        with pytest.raises(Busy) as closed:
            await waiting
        assert closed.value.reason == "closed"
        release.set()
        await hold

    run(main())


def test_the_work_is_handed_the_time_it_waited():
    pool = WorkPool(threads=1, queue=4)
    release = threading.Event()

    async def main() -> float:
        deadline = time.monotonic() + 30
        hold = asyncio.create_task(pool.run("a", lambda _: release.wait(10), deadline=deadline))
        await asyncio.sleep(0.05)
        threading.Timer(0.3, release.set).start()
        waited = await pool.run("b", lambda queued: queued, deadline=deadline)
        await hold
        return waited

    assert run(main()) == pytest.approx(0.3, abs=0.15)


def test_compression_slots_go_to_tenants_in_turn():
    pool = WorkerPool(workers=1, queue=8)
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pool.slot(lambda: None, "a"):
            holding.set()
            release.wait(10)

    def take(tenant: str, name: str) -> None:
        with pool.slot(lambda: None, tenant):
            order.append(name)

    first = threading.Thread(target=hold)
    first.start()
    holding.wait(10)
    waiters = []
    for tenant, name in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")]:
        waiters.append(threading.Thread(target=take, args=(tenant, name)))
        waiters[-1].start()
        while pool.waiting < len(waiters):
            time.sleep(0.005)
    release.set()
    for t in [first, *waiters]:
        t.join(10)
    assert order.index("b1") == 1  # after one of a's, not after all three


def test_a_slot_wait_reports_its_time():
    pool = WorkerPool(workers=1, queue=2)
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with pool.slot(lambda: None, "a"):
            holding.set()
            release.wait(10)

    threading.Thread(target=hold).start()
    holding.wait(10)
    threading.Timer(0.2, release.set).start()
    with pool.slot(lambda: None, "b") as waited:
        assert waited == pytest.approx(0.2, abs=0.1)
    with pool.slot(lambda: None, "b") as waited:
        assert waited < 0.05
