"""Where forwarded message forms are remembered: the :class:`MessageCache` seam (two methods,
JSON values) and its bounded in-process default. Keys are made by their user
(:meth:`thresher.compression.conversation.ConversationCompressor.key`: tenant, method, rate,
question, message...); a store only keeps what it is given."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MessageCache(Protocol):
    """Forwarded message contents by key. In process by default (:class:`LRUMessageCache`);
    a shared store (Redis, memcached) fits the same two methods when several workers or
    replicas serve one conversation. Values are JSON: a string or a list of content parts."""

    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any) -> None: ...


class LRUMessageCache:
    """A bounded, thread-safe in-process :class:`MessageCache` (least recently used out).

    Args:
        max_entries: Entries kept at most.
        max_chars: Characters of stored contents kept at most.
    """

    def __init__(self, max_entries: int = 20_000, max_chars: int = 64_000_000) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: str, value: Any) -> None:
        size = len(value) if isinstance(value, str) else len(json.dumps(value))
        if size > self.max_chars // 8:
            return  # one huge message must not push out the rest
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._chars -= old[1]
            self._items[key] = (value, size)
            self._chars += size
            while len(self._items) > self.max_entries or self._chars > self.max_chars:
                _, (_, dropped) = self._items.popitem(last=False)
                self._chars -= dropped

    def __len__(self) -> int:
        return len(self._items)
