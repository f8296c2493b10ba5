"""Retrievers and orderers by name, through typed maps."""

from __future__ import annotations

from typing import Any, Literal, get_args

from thresher.core.errors import InputError
from thresher.prompting.diverse import DPPRetriever, VoteKRetriever
from thresher.prompting.ordering import (
    EntropyOrderer,
    Orderer,
    RandomOrderer,
    ReverseOrderer,
    SimilarityOrderer,
)
from thresher.prompting.retrievers import (
    BaseRetriever,
    BM25Retriever,
    KNNRetriever,
    LabelBalancedRetriever,
    MMRRetriever,
    RandomRetriever,
)

RetrieverName = Literal["random", "bm25", "knn", "mmr", "votek", "dpp", "label_balanced"]
OrderName = Literal["similarity", "reverse", "random", "entropy"]

RETRIEVERS: dict[RetrieverName, type[BaseRetriever]] = {
    "random": RandomRetriever,
    "bm25": BM25Retriever,
    "knn": KNNRetriever,
    "mmr": MMRRetriever,
    "votek": VoteKRetriever,
    "dpp": DPPRetriever,
    "label_balanced": LabelBalancedRetriever,
}
ORDERERS: dict[OrderName, type[Any]] = {
    "similarity": SimilarityOrderer,
    "reverse": ReverseOrderer,
    "random": RandomOrderer,
    "entropy": EntropyOrderer,
}
RETRIEVER_NAMES: tuple[str, ...] = get_args(RetrieverName)
ORDER_NAMES: tuple[str, ...] = get_args(OrderName)


def _build(kind: str, table: dict[Any, type[Any]], name: str, field: str, options: dict) -> Any:
    cls = table.get(name)
    if cls is None:
        raise InputError(f"Unknown {kind} {name!r}; use one of {sorted(table)}.", field=field)
    try:
        return cls(**options)
    except TypeError as exc:  # an option this strategy does not take
        raise InputError(f"Bad option for {kind} {name!r}: {exc}.", field=field) from None


def get_retriever(name: str, **options: Any) -> BaseRetriever:
    """A new, unfitted retriever by name (``random``, ``bm25``, ``knn``, ``mmr``, ``votek``,
    ``dpp``, ``label_balanced``); ``options`` go to its constructor."""
    return _build("retriever", RETRIEVERS, name, "method", options)  # type: ignore[no-any-return]


def get_orderer(name: str, **options: Any) -> Orderer:
    """An orderer by name (``similarity``, ``reverse``, ``random``, ``entropy``); ``entropy``
    needs ``scorer=``."""
    return _build("orderer", ORDERERS, name, "order", options)  # type: ignore[no-any-return]
