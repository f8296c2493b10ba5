"""Retrieve, order and assemble in one call: what the CLI, the REST API and the proxy share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thresher.core.errors import InputError
from thresher.core.scoring import TokenScorer
from thresher.core.tokens import TokenCounter
from thresher.prompting.assembly import AssembledPrompt, Template, TemplateName, assemble
from thresher.prompting.pool import Pool
from thresher.prompting.result import RetrievalResult
from thresher.prompting.retrievers import Retriever
from thresher.prompting.strategies import ORDERERS, get_orderer, get_retriever


@dataclass(slots=True)
class Demonstrations:
    """Ordered demonstrations for a query and, when assembled, the prompt they make."""

    result: RetrievalResult
    assembled: AssembledPrompt | None = None

    @property
    def demonstrations(self) -> list[Any]:
        if self.assembled is not None:
            return self.assembled.demonstrations
        return self.result.demonstrations

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "method": self.result.method,
            "order": self.result.order,
            "demonstrations": [d.to_dict() for d in self.demonstrations],
        }
        if self.assembled is not None:
            body["prompt"] = self.assembled.prompt
            body["messages"] = self.assembled.messages
            body["tokens"] = self.assembled.tokens
            body["dropped"] = self.assembled.dropped
        return body

    def _repr_html_(self) -> str:
        html = self.result.reordered(list(self.demonstrations), self.result.order or "")
        return html._repr_html_()


def demonstrate(
    pool: Pool,
    query: str,
    k: int,
    *,
    method: str = "knn",
    order: str = "similarity",
    budget_tokens: int | None = None,
    counter: TokenCounter | None = None,
    scorer: TokenScorer | Callable[[], TokenScorer] | None = None,
    template: TemplateName | Template | None = None,
    instruction: str | None = None,
    retriever: Retriever | None = None,
    seed: int = 0,
) -> Demonstrations:
    """Retrieve ``k`` demonstrations with ``method``, order them, and fit them to a budget.

    Args:
        pool: the fitted pool.
        query: the input that needs demonstrations.
        k: how many to retrieve (before the budget drops any).
        method: a retriever name (see :func:`thresher.prompting.get_retriever`).
        order: an orderer name (see :func:`thresher.prompting.get_orderer`).
        budget_tokens: if given, assemble a prompt of at most this many tokens.
        counter: the target model's token counter (needed with ``budget_tokens``).
        scorer: a TokenScorer, or a function returning one, for orderers that probe an LM.
        template: assemble with this template even without a budget; by default
            ``classification`` for labelled pools and ``generation`` otherwise.
        instruction: a task line before the demonstrations.
        retriever: an already fitted retriever to reuse instead of ``method``.
        seed: seed of the random retriever and orderers.
    """
    if budget_tokens is not None and counter is None:
        raise InputError(
            "budget_tokens needs a token counter for the target model.", field="counter"
        )
    fitted = retriever or get_retriever(method, seed=seed).fit(pool)
    result = fitted.retrieve(query, k)
    options: dict[str, Any] = {"seed": seed}
    if getattr(ORDERERS.get(order), "needs_scorer", False):  # type: ignore[call-overload]
        if scorer is None:
            raise InputError(f"order {order!r} needs a scoring LM; none was given.", field="order")
        options["scorer"] = (
            scorer() if callable(scorer) and not isinstance(scorer, TokenScorer) else scorer
        )
        options["labels"] = pool.labels_ or None
    result = get_orderer(order, **options).order(result)
    if budget_tokens is None and template is None:
        return Demonstrations(result)
    tpl = template or ("classification" if pool.labels_ else "generation")
    if counter is None:
        raise InputError("Assembling a prompt needs a token counter.", field="counter")
    assembled = assemble(
        query,
        result,
        counter=counter,
        budget_tokens=budget_tokens,
        template=tpl,
        instruction=instruction,
    )
    return Demonstrations(result, assembled)
