"""LLMLingua-family prompt compression driven by a small causal LM's token scores.

>>> compressor = get_compressor("longllmlingua", scorer=provider.scorer(), counter=counter)
>>> result = compressor.compress(contexts, question="Who did it?", rate=0.33)
>>> fast = get_compressor("llmlingua2", scorer=provider.token_classifier(), counter=counter,
...                       embedder=provider.embedder())

Methods by name (:data:`METHODS`): ``llmlingua``, ``longllmlingua``, ``selective-context`` over
a causal LM's :class:`thresher.core.scoring.TokenScorer`, and ``llmlingua2`` over a
:class:`thresher.core.classifier.TokenClassifier` (label 1 = keep). Nothing here imports torch; the
scorer brings the model.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from thresher.compression.base import DEFAULT_MIN_TOKENS, BaseCompressor, Compressor
from thresher.compression.llmlingua import LLMLingua
from thresher.compression.llmlingua2 import LLMLingua2
from thresher.compression.longllmlingua import LongLLMLingua
from thresher.compression.prompt import DEFAULT_POLICY, RolePolicy
from thresher.compression.recover import recover
from thresher.compression.result import CompressionResult
from thresher.compression.selective_context import SelectiveContext
from thresher.compression.units import ProtectOptions
from thresher.core.errors import InputError

MethodName = Literal["llmlingua", "longllmlingua", "selective-context", "llmlingua2"]
METHODS: dict[MethodName, type[BaseCompressor]] = {
    "llmlingua": LLMLingua,
    "longllmlingua": LongLLMLingua,
    "selective-context": SelectiveContext,
    "llmlingua2": LLMLingua2,
}
# Methods whose ``scorer`` is a token classifier (ModelProvider.token_classifier), not a causal LM.
CLASSIFIER_METHODS: frozenset[str] = frozenset({"llmlingua2"})
DEFAULT_METHOD: MethodName = "llmlingua2"


def method_names() -> tuple[str, ...]:
    return get_args(MethodName)


def get_compressor(name: str, *, scorer: Any, counter: Any, **options: Any) -> Compressor:
    """Build the compressor called ``name`` over a loaded scorer and the target's counter.

    Args:
        name: One of :data:`METHODS`.
        scorer: A :class:`thresher.core.scoring.TokenScorer` (``ModelProvider.scorer()``), or for
            ``llmlingua2`` a :class:`thresher.core.classifier.TokenClassifier`
            (``ModelProvider.token_classifier()``; pass ``embedder=`` for question ranking).
        counter: The target model's :class:`thresher.core.tokens.TokenCounter`.
        **options: Keyword options of the method's class (``min_tokens``, ``protect``, ...).
    """
    cls = METHODS.get(name)  # type: ignore[call-overload]
    if cls is None:
        raise InputError(
            f"Unknown compression method {name!r}; use one of {list(METHODS)}.", field="method"
        )
    return cls(scorer, counter, **options)


__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_MIN_TOKENS",
    "DEFAULT_POLICY",
    "METHODS",
    "BaseCompressor",
    "CLASSIFIER_METHODS",
    "CompressionResult",
    "Compressor",
    "LLMLingua",
    "LLMLingua2",
    "LongLLMLingua",
    "MethodName",
    "ProtectOptions",
    "RolePolicy",
    "SelectiveContext",
    "get_compressor",
    "method_names",
    "recover",
]
