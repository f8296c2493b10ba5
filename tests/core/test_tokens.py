"""CachedCounter: the proxy's counter that remembers recent message texts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from thresher.core.tokens import CachedCounter, uncached


class Tally:
    """The real counter, with a tally of the texts it was asked to count."""

    def __init__(self, counter):
        self.counter = counter
        self.name = counter.name
        self.asked: list[str] = []

    def encode(self, text):
        return self.counter.encode(text)

    def decode(self, ids):
        return self.counter.decode(ids)

    def count(self, text):
        self.asked.append(text)
        return self.counter.count(text)


def test_counts_match_and_repeats_are_not_recounted(counter):
    tally = Tally(counter)
    cached = CachedCounter(tally)
    system = "You are a careful assistant. Answer in one sentence."
    turns = [system, "What is the capital of France?", system, "And of Peru?", system]
    assert [cached.count(t) for t in turns] == [counter.count(t) for t in turns]
    assert tally.asked == [system, "What is the capital of France?", "And of Peru?"]
    assert cached.name == counter.name == "cl100k_base"
    assert cached.decode(cached.encode("héllo wörld")) == "héllo wörld"
    assert uncached(cached) is tally and uncached(counter) is counter


def test_memory_is_bounded_and_least_recent_texts_go_first(counter):
    tally = Tally(counter)
    cached = CachedCounter(tally, max_chars=800)  # texts of up to 100 characters are kept
    texts = [f"message number {i} " * 4 for i in range(40)]  # 72-76 characters each
    for t in texts[:10]:
        cached.count(t)
    cached.count(texts[0])  # used again: now the most recent
    for t in texts[10:14]:
        cached.count(t)
    kept = list(cached._memo)
    assert sum(map(len, kept)) == cached._chars <= 800
    assert texts[0] in kept and texts[1] not in kept
    tally.asked.clear()
    cached.count(texts[0])
    assert tally.asked == []

    long = "a long document " * 20  # 320 characters: over an eighth of the bound
    assert cached.count(long) == counter.count(long)
    assert long not in cached._memo
    cached.count(long)
    assert tally.asked == [long, long]


def test_threads_share_one_cache_safely(counter):
    cached = CachedCounter(counter, max_chars=2_000)
    texts = [f"thread text {i % 60} " * (1 + i % 5) for i in range(3_000)]
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(cached.count, texts))
    assert counts == [counter.count(t) for t in texts]
    assert sum(map(len, cached._memo)) == cached._chars <= 2_000
