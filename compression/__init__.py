"""LLMLingua-family prompt compression driven by a small causal LM's token scores.

>>> compressor = load_compressor("llmlingua2", provider, counter=counter)
>>> result = compressor.compress(contexts, question="Who did it?", rate=0.33)
>>> mine = get_compressor("longllmlingua", scorer=provider.scorer(), counter=counter)

Methods by name (:data:`METHODS`): ``llmlingua``, ``longllmlingua``, ``selective-context`` over
a causal LM's :class:`thresher.core.scoring.TokenScorer`, and ``llmlingua2`` over a
:class:`thresher.core.token_classifier.TokenClassifier` (label 1 = keep). Each class declares
the model it needs (``model``, ``ranks_by``); :func:`load_compressor` is the one place that loads
those models, in the dtype compression runs in on this machine, for every way in (the proxy's
stage, ``/v1/compress``, ``thresher compress``, the adapters). :func:`get_compressor` builds one
over models the caller already holds. Nothing here imports torch; the models bring it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from thresher.compression.base import DEFAULT_MIN_TOKENS, BaseCompressor, Compressor, ModelKind
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
DEFAULT_METHOD: MethodName = "llmlingua2"


def method_names() -> tuple[str, ...]:
    return get_args(MethodName)


def get_compressor(name: str, *, scorer: Any, counter: Any, **options: Any) -> Compressor:
    """Build the compressor called ``name`` over a loaded scorer and the target's counter.

    Args:
        name: One of :data:`METHODS`.
        scorer: A :class:`thresher.core.scoring.TokenScorer` (``ModelProvider.scorer()``), or for
            ``llmlingua2`` a :class:`thresher.core.token_classifier.TokenClassifier`
            (``ModelProvider.token_classifier()``; pass ``embedder=`` for question ranking).
        counter: The target model's :class:`thresher.core.tokens.TokenCounter`.
        **options: Keyword options of the method's class (``min_tokens``, ``protect``, ...).
    """
    return method_class(name)(scorer, counter, **options)


def method_class(name: str) -> type[BaseCompressor]:
    """The class of method ``name``; InputError naming the known ones otherwise."""
    cls = METHODS.get(name)  # type: ignore[call-overload]
    if cls is None:
        raise InputError(
            f"Unknown compression method {name!r}; use one of {list(METHODS)}.", field="method"
        )
    return cls


def load_compressor(
    name: str,
    provider: Any,
    *,
    counter: Any,
    scorer_model: str | None = None,
    embedder_model: str | None = None,
    classifier: str | None = None,
    dtype: str | None = None,
    wrap: Callable[[Any, ModelKind], Any] | None = None,
    **options: Any,
) -> Compressor:
    """Method ``name`` over the models its class declares, loaded (once) by ``provider``.

    Args:
        name: One of :data:`METHODS`.
        provider: A :class:`thresher.core.models.ModelProvider`.
        counter: The target model's :class:`thresher.core.tokens.TokenCounter`.
        scorer_model: The scoring LM of ``scoring-lm`` methods (default: the provider's).
        embedder_model: The ranking embedder of methods that rank by one.
        classifier: A token-classification folder for ``token-classifier`` methods (default:
            Thresher's embedded classifier); an InputError on ``field="model"`` for others.
        dtype: The models' dtype (default: ``provider.compression_dtype()``, chosen for this
            machine).
        wrap: Applied to the scoring model (with its kind) before the compressor gets it, e.g.
            to check a deadline before every forward pass.
        **options: Keyword options of the method's class.
    """
    from thresher.core.catalog import DEFAULT_CLASSIFIER
    from thresher.core.settings import DEFAULT_EMBEDDER, DEFAULT_SCORER

    cls = method_class(name)
    dtype = dtype or provider.compression_dtype()
    if cls.model == "token-classifier":
        scorer = provider.token_classifier(classifier or DEFAULT_CLASSIFIER, dtype=dtype)
    elif classifier is not None:
        takers = " and ".join(n for n, c in METHODS.items() if c.model == "token-classifier")
        raise InputError(
            f"model names a token-classification folder and applies to {takers} only; method "
            f"{name!r} uses the deployment's scoring LM; drop model.",
            field="model",
        )
    else:
        scorer = provider.compression_scorer(scorer_model or DEFAULT_SCORER, dtype=dtype)
    if cls.ranks_by == "embedder":
        options["embedder"] = provider.embedder(embedder_model or DEFAULT_EMBEDDER, dtype=dtype)
    if wrap is not None:
        scorer = wrap(scorer, cls.model)
    return cls(scorer, counter, **options)


__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_MIN_TOKENS",
    "DEFAULT_POLICY",
    "METHODS",
    "ModelKind",
    "BaseCompressor",
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
    "load_compressor",
    "method_class",
    "method_names",
    "recover",
]
