"""Thresher's own bounded pool for request work (the pipeline's stages, ``/v1/compress``).

Why not asyncio's default executor: it is shared with everything else in the process (so a
request could wait behind unrelated work, its wait counted nowhere), it serves whoever came
first (so one tenant's burst delays every other tenant), and its threads are joined at exit
(so a process asked to stop waits for work nobody is waiting for).

Here:

- ``threads`` daemon threads, started as work arrives; a process exits without waiting for them.
- A fair queue (:class:`FairQueue`): one line per tenant, served round robin, at most ``queue``
  waiting per tenant; a tenant whose line is full is told so at once (:class:`Busy`), and
  another tenant's line is unaffected. One tenant holds at most ``threads - 1`` workers, so a
  worker is always left for another tenant's request (work may hold its worker while it waits
  for a compression slot).
- The waiting side is a coroutine that gives up at the request's deadline, counted from its
  arrival, or as soon as its client leaves. Work not started by then never starts; work that
  started is told to stop by the caller's own stop check (the same deadline and client), and
  its result is dropped.
- The function run is handed the seconds it waited, so the caller can report queue time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from thresher.core.errors import ThresherError

T = TypeVar("T")
R = TypeVar("R")
# How often a waiting coroutine looks whether its client is still there.
POLL_SECONDS = 0.05
BusyReason = Literal["full", "deadline", "gone", "closed"]


class Busy(ThresherError):
    """Work that did not run, or whose result came too late.

    Attributes:
        reason: ``full`` (the tenant's line is full), ``deadline`` (it passed first), ``gone``
            (the client left first) or ``closed`` (the service is stopping).
        waited: Seconds spent waiting for a worker.
        started: Whether the work had started (its result, if any, is dropped).
    """

    def __init__(
        self, message: str, *, reason: BusyReason, waited: float = 0.0, started: bool = False
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.waited = waited
        self.started = started


class FairQueue(Generic[T]):
    """Items by tenant, handed out round robin across tenants and in order within one, at most
    ``per_tenant`` waiting per tenant. Not thread-safe: the owner holds its own lock."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._lines: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # tenants with items waiting, next served first

    def push(self, tenant: str, item: T) -> bool:
        """Add ``item`` at the end of ``tenant``'s line; False when the line is full."""
        line = self._lines.get(tenant)
        if line is None:
            if self.per_tenant <= 0:
                return False
            line = self._lines[tenant] = deque()
            self._turns.append(tenant)
        elif len(line) >= self.per_tenant:
            return False
        line.append(item)
        return True

    def pop(self, eligible: Callable[[str], bool] | None = None) -> T | None:
        """The first item of the first tenant in turn (that tenant goes to the back), passing
        over tenants ``eligible`` refuses; None when no item may go."""
        for _ in range(len(self._turns)):
            tenant = self._turns.popleft()
            if eligible is not None and not eligible(tenant):
                self._turns.append(tenant)
                continue
            line = self._lines[tenant]
            item = line.popleft()
            if line:
                self._turns.append(tenant)
            else:
                del self._lines[tenant]
            return item
        return None

    def remove(self, tenant: str, item: T) -> bool:
        """Take ``item`` out of ``tenant``'s line; False when it is not waiting there."""
        line = self._lines.get(tenant)
        if line is None or not any(x is item for x in line):
            return False
        line.remove(item)
        if not line:
            del self._lines[tenant]
            self._turns.remove(tenant)
        return True

    def waiting(self) -> int:
        """Items waiting, all tenants together."""
        return sum(len(line) for line in self._lines.values())


@dataclass(eq=False)
class _Task:
    tenant: str
    fn: Callable[[float], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None


class WorkPool:
    """``threads`` workers fed by a :class:`FairQueue` of ``queue`` requests per tenant.

    Args:
        threads: Work running at once.
        queue: Requests of one tenant waiting for a worker at most.
        name: The threads' name (seen in stack dumps).
    """

    def __init__(self, threads: int = 8, queue: int = 64, name: str = "thresher-work") -> None:
        self.threads = threads
        self.name = name
        self.running = 0
        # Workers one tenant may hold: all but one, so another tenant always finds one.
        self.per_tenant = max(1, threads - 1)
        self._queue: FairQueue[_Task] = FairQueue(queue)
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._held: dict[str, int] = {}
        self._idle = 0
        self._closed = False

    @property
    def waiting(self) -> int:
        with self._cond:
            return self._queue.waiting()

    async def run(
        self,
        tenant: str,
        fn: Callable[[float], R],
        *,
        deadline: float,
        cancelled: Callable[[], bool] | None = None,
    ) -> R:
        """``fn(seconds waited)`` on a worker, for ``tenant``; its result or its exception.

        Args:
            tenant: Whose line the work waits in.
            fn: The work; it should itself stop at ``deadline`` or when ``cancelled``.
            deadline: ``time.monotonic()`` past which the caller stops waiting.
            cancelled: True once the client has gone (looked at every 50 ms).

        Raises:
            Busy: The line was full, the service is stopping, or the deadline passed or the
                client left before ``fn`` returned.
        """
        loop = asyncio.get_running_loop()
        task = _Task(tenant, fn, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise Busy("the service is shutting down", reason="closed")
            if not self._queue.push(tenant, task):
                raise Busy(
                    f"{self._queue.per_tenant} requests of this tenant are already waiting for "
                    "a worker",
                    reason="full",
                )
            if self._idle == 0 and len(self._workers) < self.threads:
                worker = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._workers.append(worker)
                worker.start()
            self._cond.notify()
        try:
            return await self._wait(task, deadline, cancelled)
        finally:
            if not task.future.done():
                with self._cond:
                    self._queue.remove(tenant, task)  # not started: it never will be
                task.future.cancel()  # a late result or error is dropped, not left unread

    async def _wait(
        self, task: _Task, deadline: float, cancelled: Callable[[], bool] | None
    ) -> Any:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _expired(task, "deadline")
            step = left if cancelled is None else min(left, POLL_SECONDS)
            done, _ = await asyncio.wait({task.future}, timeout=step)
            if done:
                return task.future.result()
            if cancelled is not None and cancelled():
                raise _expired(task, "gone")

    def _may_take(self, tenant: str) -> bool:
        return self._held.get(tenant, 0) < self.per_tenant

    def _work(self) -> None:
        while True:
            with self._cond:
                while (task := None if self._closed else self._queue.pop(self._may_take)) is None:
                    if self._closed:
                        return
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                task.started_at = time.monotonic()
                self._held[task.tenant] = self._held.get(task.tenant, 0) + 1
                self.running += 1
            try:
                result = task.fn(task.started_at - task.queued_at)
            except Exception as exc:  # noqa: BLE001 - the waiting coroutine gets it
                _settle(task, None, exc)
            else:
                _settle(task, result, None)
            finally:
                with self._cond:
                    self.running -= 1
                    self._held[task.tenant] -= 1
                    if not self._held[task.tenant]:
                        del self._held[task.tenant]
                    self._cond.notify_all()  # a tenant under its share again may go on

    def close(self) -> None:
        """Stop taking work; whoever waits in line is answered :class:`Busy` now. Running
        work is not waited for (its threads are daemons, its requests are answered)."""
        with self._cond:
            self._closed = True
            while (task := self._queue.pop()) is not None:
                _settle(task, None, Busy("the service is shutting down", reason="closed"))
            self._cond.notify_all()


def _expired(task: _Task, reason: BusyReason) -> Busy:
    now = time.monotonic()
    started = task.started_at is not None
    waited = (task.started_at if task.started_at is not None else now) - task.queued_at
    why = "deadline passed" if reason == "deadline" else "client disconnected"
    where = "before the work finished" if started else "while waiting for a worker"
    return Busy(
        f"{why} {where} (waited {waited * 1000:.0f} ms)",
        reason=reason,
        waited=waited,
        started=started,
    )


def _settle(task: _Task, result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if task.future.done():
            return  # the caller stopped waiting
        if exc is not None:
            task.future.set_exception(exc)
        else:
            task.future.set_result(result)

    try:
        task.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the event loop is closed: nobody is waiting
