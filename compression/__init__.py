"""LLMLingua-family prompt compression driven by a small causal LM's token scores.

>>> compressor = get_compressor("longllmlingua", scorer=provider.scorer(), counter=counter)
>>> result = compressor.compress(contexts, question="Who did it?", rate=0.33)

Methods by name (:data:`METHODS`): ``llmlingua``, ``longllmlingua``, ``selective-context``.
Nothing here imports torch; the scorer brings the model.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from compression.base import DEFAULT_MIN_TOKENS, BaseCompressor, Compressor
from compression.llmlingua import LLMLingua
from compression.longllmlingua import LongLLMLingua
from compression.prompt import DEFAULT_POLICY, RolePolicy
from compression.recover import recover
from compression.result import CompressionResult
from compression.selective_context import SelectiveContext
from compression.units import ProtectOptions
from core.errors import InputError

MethodName = Literal["llmlingua", "longllmlingua", "selective-context"]
METHODS: dict[MethodName, type[BaseCompressor]] = {
    "llmlingua": LLMLingua,
    "longllmlingua": LongLLMLingua,
    "selective-context": SelectiveContext,
}
DEFAULT_METHOD: MethodName = "longllmlingua"


def method_names() -> tuple[str, ...]:
    return get_args(MethodName)


def get_compressor(name: str, *, scorer: Any, counter: Any, **options: Any) -> Compressor:
    """Build the compressor called ``name`` over a loaded scorer and the target's counter.

    Args:
        name: One of :data:`METHODS`.
        scorer: A :class:`core.scoring.TokenScorer` (``ModelProvider.scorer()``).
        counter: The target model's :class:`core.tokens.TokenCounter`.
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
    "CompressionResult",
    "Compressor",
    "LLMLingua",
    "LongLLMLingua",
    "MethodName",
    "ProtectOptions",
    "RolePolicy",
    "SelectiveContext",
    "get_compressor",
    "method_names",
    "recover",
]
