"""On-disk cache of sentence embeddings for the benchmarks, so reruns skip the slow part.

Vectors are keyed by the embedder's name and a hash of the texts, and written in shards, each
atomically (:mod:`thresher.core.files`), so an interrupted run resumes at the first missing
shard. Bulk embedding runs under bfloat16 autocast when the CPU has it (cosine >= 0.9999 to
float32 on MiniLM, about 2x faster); queries timed by the benchmarks are embedded live, in float32.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from thresher.core.files import atomic_path

CACHE = Path(__file__).resolve().parent / ".cache"
SHARD = 4096


def _key(name: str, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(name.encode("utf-8"))
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cached_encode(
    embedder,
    texts: Sequence[str],
    *,
    label: str,
    cache: Path = CACHE,
    bf16: bool = True,
    batch_size: int = 128,
) -> np.ndarray:
    """Unit float32 embeddings of ``texts``, read from ``cache`` when already computed.

    Args:
        embedder: a :class:`thresher.core.embedding.Embedder`.
        texts: what to embed.
        label: a readable prefix for the cache files (the task or pool name).
        cache: the cache folder (gitignored).
        bf16: embed under bfloat16 autocast (float32 otherwise).
        batch_size: texts per forward pass.
    """
    import torch

    texts = list(texts)
    key = _key(embedder.name + ("/bf16" if bf16 else ""), texts)
    final = cache / f"{label}-{key}.npy"
    if final.exists():
        return np.load(final)
    cache.mkdir(parents=True, exist_ok=True)
    shards = []
    starts = range(0, len(texts), SHARD)
    for start in tqdm(starts, desc=f"embed {label} ({len(texts)} texts)", disable=len(starts) < 2):
        path = cache / f"{label}-{key}-{start // SHARD}.npy"
        if not path.exists():
            chunk = texts[start : start + SHARD]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                vectors = embedder.encode(chunk, batch_size=batch_size)
            vectors = vectors.astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            _save(path, vectors)
        shards.append(path)
    out = np.concatenate([np.load(p) for p in shards]) if shards else np.zeros((0, embedder.dim))
    out = np.ascontiguousarray(out, dtype=np.float32)
    _save(final, out)
    for p in shards:
        p.unlink(missing_ok=True)
    return out


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def shared_data(required: bool = True) -> Path:
    """``../shared/data`` beside the checkout (CI's layout) or beside the worktrees folder; when
    neither exists, exit naming both, or (``required=False``, for argument defaults) the first."""
    root = Path(__file__).resolve().parents[1]
    env = os.environ.get("THRESHER_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [root.parent / "shared" / "data", root.parents[1] / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path
    if not required:
        return candidates[0]
    raise SystemExit(f"No shared data in {[str(c) for c in candidates]}; set THRESHER_SHARED_DATA.")
