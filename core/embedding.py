"""Sentence embeddings from a sentence-transformers model, normalised for cosine search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from thresher.core.errors import InputError


class Embedder:
    """Wraps a loaded SentenceTransformer; built by :class:`thresher.core.models.ModelProvider`."""

    def __init__(self, model: Any, *, name: str, device: str, batch_size: int = 64) -> None:
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}.", field="batch_size")
        self.model = model
        self.name = name
        self.device = device
        self.batch_size = batch_size
        dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        self.dim: int = int(dim())

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed texts into a float32 array of shape (len(texts), dim); L2-normalised by default."""
        bs = self.batch_size if batch_size is None else batch_size
        if bs <= 0:
            raise InputError(f"batch_size must be positive, got {bs}.", field="batch_size")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=bs,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if normalize:  # again in float32: a half-precision model normalises in its own dtype
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
