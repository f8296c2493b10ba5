"""What the proxy's compression stage shares across requests: the message cache, a small pool of
compression workers with a bounded queue, and what it has learned about costs.

No request waits on another past its own deadline: a request takes one of ``workers`` slots or
waits in line, at most ``queue`` requests of one tenant, tenants served in turn (so one tenant's
burst does not hold another's request); when its tenant's line is full it is forwarded
uncompressed at once (``x-thresher-compression: skipped``). Work inside a slot stops within one
forward pass of the scoring LM when the deadline passes or the client disconnects: every model
call of the request goes through a :class:`StoppableModel`. ``/v1/compress`` takes the same
slots.

A message cache that fails (a SQLite file another process holds locked past a short busy
timeout) costs a request one short wait: :class:`RequestCache` then goes on without it for the
rest of that request.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thresher.api.pays import OutputModel, PaysGate
from thresher.api.work import Busy, FairQueue
from thresher.compression.conversation import Stopped
from thresher.compression.message_cache import LRUMessageCache, MessageCache
from thresher.core.errors import ConfigError

log = logging.getLogger(__name__)
StopCheck = Callable[[], "str | None"]
CLIENT_GONE = "client disconnected"
DEADLINE_PASSED = "deadline passed"


@dataclass
class LatencyModel:
    """Seconds per prompt token of each compression method, learned from the runs so far
    (an exponential moving average), so a stage can be skipped when it would not pay."""

    alpha: float = 0.3
    per_token: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def predict_ms(self, method: str, tokens: int) -> float | None:
        rate = self.per_token.get(method)
        return None if rate is None else rate * tokens * 1000

    def observe(self, method: str, tokens: int, seconds: float) -> None:
        if tokens <= 0:
            return
        with self._lock:
            old = self.per_token.get(method)
            new = seconds / tokens
            self.per_token[method] = new if old is None else old + self.alpha * (new - old)


class WorkerPool:
    """``workers`` compressions at a time; waiting, at most ``queue`` requests per tenant,
    tenants served in turn (:class:`thresher.api.work.FairQueue`).

    The work runs in the caller's thread (a worker of :class:`thresher.api.work.WorkPool`); the
    pool only bounds how many run and how long one may wait.
    """

    def __init__(self, workers: int = 1, queue: int = 8) -> None:
        self.workers = workers
        self.queue = queue
        self._lock = threading.Lock()
        self._free = workers
        self._line: FairQueue[threading.Event] = FairQueue(queue)
        self.running = 0

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._line.waiting()

    @contextmanager
    def slot(self, stop: StopCheck, tenant: str = "anonymous") -> Iterator[float]:
        """Hold a worker slot, yielding the seconds waited for it; :class:`Busy` when
        ``tenant``'s line is full or ``stop`` gives a reason first."""
        start = time.monotonic()
        turn = threading.Event()
        with self._lock:
            if self._free > 0 and not self._line.waiting():
                self._free -= 1
                turn.set()
            elif not self._line.push(tenant, turn):
                raise Busy(
                    f"compression queue full ({self.queue} of this tenant waiting)", reason="full"
                )
        while not turn.wait(0.05):
            reason = stop()
            if reason is None:
                continue
            with self._lock:
                given = not self._line.remove(tenant, turn)  # handed a slot meanwhile
            if given:
                self._release()
            raise Busy(
                f"{reason} while queued",
                reason="gone" if reason == CLIENT_GONE else "deadline",
                waited=time.monotonic() - start,
            )
        with self._lock:
            self.running += 1
        try:
            yield time.monotonic() - start
        finally:
            with self._lock:
                self.running -= 1
            self._release()

    def _release(self) -> None:
        """Hand the slot to whoever's turn it is, or free it."""
        with self._lock:
            turn = self._line.pop()
            if turn is None:
                self._free += 1
            else:
                turn.set()


class StoppableModel:
    """A torch model whose every call first asks ``stop``; a reason raises :class:`Stopped`."""

    def __init__(self, model: Any, stop: StopCheck) -> None:
        self._model = model
        self._stop = stop

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reason = self._stop()
        if reason is not None:
            raise Stopped(reason)
        return self._model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def stoppable_model(wrapper: Any, stop: StopCheck) -> Any:
    """A copy of a model wrapper (a :class:`thresher.core.token_classifier.TokenClassifier`)
    whose every forward pass first checks ``stop``."""
    import copy

    out = copy.copy(wrapper)
    out.model = StoppableModel(wrapper.model, stop)
    return out


def stoppable_scorer(scorer: Any, stop: StopCheck, *, tokens_per_call: int = 256) -> Any:
    """A copy of a :class:`thresher.core.scoring.TokenScorer` that checks ``stop`` before each
    forward pass and feeds at most about ``tokens_per_call`` tokens per pass, so that a stop lands
    within about one pass (256 tokens of the 135M scorer: a quarter to half a second on one
    busy core)."""
    out = stoppable_model(scorer, stop)
    # A long text goes through in 128-token steps; short rows (messages) share a pass.
    out.window = max(1, min(scorer.window, 128, tokens_per_call))
    out.batch_size = max(1, min(scorer.batch_size, tokens_per_call // out.window))
    return out


class PrefillModel:
    """Milliseconds per prompt token of each route's backend, learned from its answers.

    Where the backend reports timings (llama.cpp's ``timings.prompt_ms`` / ``prompt_n``) they
    are used directly (a moving average). Otherwise ``usage`` and the wall time are fitted as
    ``ms = a + b * uncached_prompt_tokens + c * completion_tokens`` by least squares with
    forgetting, and ``b`` is the prefill cost; cached prompt tokens
    (``usage.prompt_tokens_details.cached_tokens``) cost no prefill.
    """

    def __init__(self, alpha: float = 0.3, forget: float = 0.98, min_samples: int = 4) -> None:
        self.alpha = alpha
        self.forget = forget
        self.min_samples = min_samples
        self._direct: dict[str, float] = {}
        self._decode: dict[str, float] = {}
        self._fit: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        self._lock = threading.Lock()

    def observe(self, route: str, answer: dict[str, Any], elapsed_s: float) -> None:
        timings = answer.get("timings")
        if isinstance(timings, dict):
            self._observe_decode(route, timings)
            n, ms = timings.get("prompt_n"), timings.get("prompt_ms")
            if isinstance(n, int | float) and isinstance(ms, int | float) and n > 0 and ms > 0:
                with self._lock:
                    old = self._direct.get(route)
                    new = float(ms) / float(n)
                    self._direct[route] = new if old is None else old + self.alpha * (new - old)
                return
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return
        prompt, done = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(done, int):
            return
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        uncached = prompt - (cached if isinstance(cached, int) else 0)
        x = np.array([1.0, float(max(uncached, 0)), float(done)])
        with self._lock:
            xtx, xty, n = self._fit.get(route, (np.zeros((3, 3)), np.zeros(3), 0))
            self._fit[route] = (
                self.forget * xtx + np.outer(x, x),
                self.forget * xty + x * elapsed_s * 1000,
                n + 1,
            )

    def _observe_decode(self, route: str, timings: dict[str, Any]) -> None:
        n, ms = timings.get("predicted_n"), timings.get("predicted_ms")
        if isinstance(n, int | float) and isinstance(ms, int | float) and n > 0 and ms > 0:
            with self._lock:
                old = self._decode.get(route)
                new = float(ms) / float(n)
                self._decode[route] = new if old is None else old + self.alpha * (new - old)

    def ms_per_output_token(self, route: str) -> float | None:
        """Milliseconds per generated token on ``route`` (the pays gate prices extra output
        with it): the backend's own decode timings, else the usage fit's output slope."""
        with self._lock:
            if route in self._decode:
                return self._decode[route]
        return self._slope(route, 2, min_spread=2.0)

    def ms_per_token(self, route: str) -> float | None:
        with self._lock:
            if route in self._direct:
                return self._direct[route]
        return self._slope(route, 1, min_spread=8.0)

    def _slope(self, route: str, column: int, min_spread: float) -> float | None:
        """Milliseconds per unit of the fit's ``column`` (1: uncached prompt tokens, 2: output
        tokens), or None until enough answers of different sizes were seen."""
        with self._lock:
            found = self._fit.get(route)
        if found is None or found[2] < self.min_samples:
            return None
        xtx, xty, _ = found
        # The slope needs sizes that differ: over near-constant sizes it is noise.
        weight, mean = xtx[0, 0], xtx[0, column] / xtx[0, 0]
        spread = max(xtx[column, column] / weight - mean * mean, 0.0) ** 0.5
        if spread < max(min_spread, 0.1 * mean):
            return None
        ridge = np.diag(1e-8 * np.diag(xtx) + 1e-12)  # relative to each column's scale
        try:
            coef = np.linalg.solve(xtx + ridge, xty)
        except np.linalg.LinAlgError:
            return None
        return max(float(coef[column]), 0.0)


class SQLiteMessageCache:
    """A :class:`MessageCache` in one SQLite file, shared by the worker processes of one
    machine (``thresher serve --workers N``): a conversation's turns may reach different
    workers, and each would otherwise compress a message again, batched with other messages
    (the float noise of a different batch can move a kept unit: different bytes).

    Args:
        path: The database file (created if missing; WAL, so readers do not wait).
        max_entries: Least recently used entries past this are deleted (checked every 512 puts).
        busy_ms: How long a statement waits for another process's lock before it fails (a
            request then goes on without the cache: :class:`RequestCache`).

    Raises:
        ConfigError: The file cannot be opened as this cache (naming the setting), at once.
    """

    def __init__(
        self, path: str | Path, max_entries: int = 200_000, busy_ms: float = 50.0
    ) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self.busy_ms = busy_ms
        self._local = threading.local()
        self._puts = 0
        try:
            # Set up once with a patient timeout (workers start together); a bad path or a file
            # that is not this database fails here, at startup.
            self._setup()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                "Setting compress_cache_path (THRESHER_COMPRESS_CACHE_PATH): the message cache "
                f"cannot be opened ({type(exc).__name__}: {exc}); point it at a new file or "
                "remove the broken one.",
                field="compress_cache_path",
            ) from None

    def _setup(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file
            db.execute(
                "CREATE TABLE IF NOT EXISTS messages "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, used REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS messages_used ON messages (used)")
        finally:
            db.close()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:  # one connection per thread, waiting at most busy_ms for a lock
            db = sqlite3.connect(self.path, timeout=self.busy_ms / 1000, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def get(self, key: str) -> Any | None:
        db = self._db()
        row = db.execute("SELECT value FROM messages WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        db.execute("UPDATE messages SET used = ? WHERE key = ?", (time.time(), key))
        return json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        db = self._db()
        db.execute(
            "INSERT OR REPLACE INTO messages (key, value, used) VALUES (?, ?, ?)",
            (key, json.dumps(value, ensure_ascii=False), time.time()),
        )
        self._puts += 1
        if self._puts % 512 == 0:
            db.execute(
                "DELETE FROM messages WHERE key IN (SELECT key FROM messages ORDER BY used DESC "
                "LIMIT -1 OFFSET ?)",
                (self.max_entries,),
            )

    def __len__(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM messages").fetchone()[0])


class RequestCache:
    """One request's view of a :class:`MessageCache`: the first failure of the store (a
    locked file, a lost connection) is logged once and the rest of the request goes on
    without it, so a broken store costs a request one short wait, not one per message."""

    def __init__(self, cache: MessageCache) -> None:
        self.cache = cache
        self.failed: str | None = None

    def get(self, key: str) -> Any | None:
        if self.failed is None:
            try:
                return self.cache.get(key)
            except Exception as exc:  # noqa: BLE001 - any store; this request goes on without
                self._fail(exc)
        return None

    def put(self, key: str, value: Any) -> None:
        if self.failed is None:
            try:
                self.cache.put(key, value)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.failed = f"{type(exc).__name__}: {exc}"[:200]
        log.warning("message cache unavailable for this request (%s)", self.failed)


@dataclass
class CompressionService:
    """The compression stage's shared parts (``AppState.compression``).

    Args:
        cache: Forwarded message forms (in process by default; any :class:`MessageCache`).
        originals: What structure compression elided, by tenant and handle (the same seam).
        pool: The workers and their queue.
        latency: Compression time per new token, per method.
        prefill: Backend prefill time per token, per route.
        gate: The pays gate and what it learned about output length.
        deadline_ms: A request's compression stops this long after the request arrived.
        max_new_tokens: At most this many not-yet-seen tokens are compressed per request.
    """

    cache: MessageCache = field(default_factory=LRUMessageCache)
    # Originals of elided spans by tenant and handle (compression/elision.py).
    originals: MessageCache = field(default_factory=LRUMessageCache)
    pool: WorkerPool = field(default_factory=WorkerPool)
    latency: LatencyModel = field(default_factory=LatencyModel)
    prefill: PrefillModel = field(default_factory=PrefillModel)
    # Whether compressing pays, output included (api/pays.py); the app sets its prices.
    gate: PaysGate = field(default_factory=lambda: PaysGate(OutputModel()))
    deadline_ms: float = 10_000.0
    max_new_tokens: int = 32_768
    min_message_tokens: int = 48
    # One in this many "does not pay" decisions compresses anyway, so that a cost estimate
    # inflated by one slow run (a cold model, a busy host) is measured again, not kept forever.
    explore_every: int = 16
    _skips: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def explore(self, route: str) -> bool:
        """Whether this "does not pay" decision on ``route`` should compress anyway."""
        with self._lock:
            n = self._skips[route] = self._skips.get(route, 0) + 1
        return self.explore_every > 0 and n % self.explore_every == 0

    @classmethod
    def from_settings(
        cls, settings: Any, latency: LatencyModel | None = None
    ) -> CompressionService:
        path = settings.compress_cache_path
        originals = settings.compress_originals_entries
        return cls(
            cache=SQLiteMessageCache(
                path, settings.compress_cache_entries, settings.compress_cache_busy_ms
            )
            if path is not None
            else LRUMessageCache(settings.compress_cache_entries),
            originals=SQLiteMessageCache(path.with_name(path.name + ".originals"), originals)
            if path is not None
            else LRUMessageCache(originals),
            pool=WorkerPool(settings.compress_workers, settings.compress_queue),
            latency=latency or LatencyModel(),
            deadline_ms=settings.compress_deadline_ms,
            max_new_tokens=settings.compress_max_new_tokens,
            min_message_tokens=settings.compress_min_message_tokens,
        )


def deadline_check(
    arrived: float, deadline_ms: float, cancelled: Callable[[], bool] | None
) -> StopCheck:
    """A stop check for a deadline ``deadline_ms`` after ``arrived`` (``time.monotonic()``)
    and a client-gone flag. The work stops a tenth early (at most 500 ms), which is left for
    putting the request together and forwarding it (long conversations take a noticeable part
    of a second)."""
    reserve = min(deadline_ms / 10, 500.0)
    deadline = arrived + (deadline_ms - reserve) / 1000

    def stop() -> str | None:
        if cancelled is not None and cancelled():
            return CLIENT_GONE
        if time.monotonic() >= deadline:
            return DEADLINE_PASSED
        return None

    return stop
