"""LangChain adapters: :class:`ThresherCompressor`, a document compressor for
``ContextualCompressionRetriever`` (where ``LLMLinguaCompressor`` goes), and
:class:`ThresherExampleSelector`, few-shot examples from a Thresher pool.

    retriever = ContextualCompressionRetriever(
        base_compressor=ThresherCompressor(rate=0.5), base_retriever=store.as_retriever()
    )

Needs ``pip install 'thresher[langchain]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from thresher.api.integrations.embedded import (
    REPORT_KEY,
    EmbeddedPipeline,
    missing_extra,
    passage_options,
)
from thresher.compression import DEFAULT_METHOD

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.example_selectors import BaseExampleSelector
except ImportError as exc:  # pragma: no cover - the extra is installed in the test venv
    raise missing_extra("langchain-core", "langchain", exc) from exc

from pydantic import ConfigDict, Field, PrivateAttr


class ThresherCompressor(BaseDocumentCompressor):
    """Question-aware compression of retrieved documents, by Thresher's compression stage.

    The documents and the query go through the pipeline as the chat request Thresher's proxy
    would get (each document a user message, the query last), so the same options compress them
    the same way as ``thresher serve`` does. Each document keeps its metadata, plus a
    ``thresher`` entry with the call's token counts; a document is never dropped.

    Args:
        method: A compression method (``thresher.compression.METHODS``; default ``llmlingua2``,
            which ranks the documents' sentences by the query).
        rate: Fraction of tokens to keep; or ``target_tokens`` for the whole set of documents.
        protect: Strings kept verbatim.
        max_latency_ms: Skip compression when its predicted time exceeds this.
        budget_tokens: The prompt's token budget (compression cuts to it when over).
        settings: Service settings (default: the ``THRESHER_*`` environment).
        provider: A loaded ``ModelProvider`` to share (default: built from the settings).
        tokenizer: Token counter of the target model (default: ``settings.tokenizer``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    method: str = DEFAULT_METHOD
    rate: float | None = None
    target_tokens: int | None = None
    protect: list[str] = Field(default_factory=list)
    max_latency_ms: float | None = None
    budget_tokens: int | None = None
    settings: Any = Field(default=None, exclude=True)
    provider: Any = Field(default=None, exclude=True)
    tokenizer: str | None = None
    _pipeline: EmbeddedPipeline = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        options = passage_options(
            self.method, self.rate, self.target_tokens, self.protect, self.max_latency_ms,
            self.budget_tokens,
        )  # fmt: skip
        # The models load here, not in the first call (unless settings.preload_models is off).
        self._pipeline = EmbeddedPipeline(
            options,
            settings=self.settings,
            provider=self.provider,
            tokenizer=self.tokenizer,
            preload=True,
        )

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Compress ``documents`` for ``query``; they come back in their order."""
        if not documents:
            return []
        texts, report = self._pipeline.compress_passages([d.page_content for d in documents], query)
        summary = report.as_dict()
        return [
            Document(
                page_content=text,
                metadata={**d.metadata, REPORT_KEY: summary},
                id=d.id,
            )
            for d, text in zip(documents, texts, strict=True)
        ]


class ThresherExampleSelector(BaseExampleSelector):
    """Few-shot examples retrieved from a Thresher pool by ``prompting`` (k-NN, MMR, BM25, ...).

    The pool is a saved one, by name (the pools ``thresher.demonstrations.pool`` names, under the
    settings' ``data_dir``), a fitted :class:`thresher.prompting.Pool`, or built here from
    ``examples``.

    Args:
        pool: A pool name, a ``Pool``, or None to build one from ``examples``.
        examples: Examples (dicts with ``input_key`` and ``output_key``) for a new pool.
        k: Examples per selection.
        method: A retriever name (``thresher.prompting.RETRIEVER_NAMES``).
        order: An orderer name (``thresher.prompting.ORDER_NAMES``); the last example is nearest.
        input_key: The example key (and input variable) holding the input text.
        output_key: The example key of the answer (a pool record's output, or its label).
        settings: Service settings (default: the ``THRESHER_*`` environment).
        provider: A loaded ``ModelProvider`` to share.
    """

    def __init__(
        self,
        pool: Any = None,
        *,
        examples: Sequence[dict[str, str]] | None = None,
        k: int = 4,
        method: str = "knn",
        order: str = "similarity",
        input_key: str = "input",
        output_key: str = "output",
        settings: Any = None,
        provider: Any = None,
    ) -> None:
        from thresher.core.errors import ConfigError
        from thresher.prompting import ORDER_NAMES, RETRIEVER_NAMES

        if method not in RETRIEVER_NAMES:
            raise ConfigError(
                f"method {method!r} is unknown; use one of {sorted(RETRIEVER_NAMES)}.",
                field="method",
            )
        if order not in ORDER_NAMES:
            raise ConfigError(
                f"order {order!r} is unknown; use one of {sorted(ORDER_NAMES)}.", field="order"
            )
        self.pool, self.k, self.method, self.order = pool, k, method, order
        self.input_key, self.output_key = input_key, output_key
        self._embedded = EmbeddedPipeline(settings=settings, provider=provider)
        self._pool: Any = pool if not isinstance(pool, str) else None
        self._fitted: tuple[int, Any] | None = None
        self._lock = threading.Lock()
        if examples:
            for example in examples:
                self.add_example(example)

    def _record(self, example: dict[str, str]) -> Any:
        from thresher.core.errors import InputError
        from thresher.prompting import demonstration

        if self.input_key not in example:
            raise InputError(
                f"example has no {self.input_key!r} key (keys: {sorted(example)}); give the "
                "input text there or set input_key.",
                field=self.input_key,
            )
        n = len(self._pool) if self._pool is not None else 0
        return demonstration(
            str(example.get("id", f"example-{n}")),
            str(example[self.input_key]),
            output=None if example.get(self.output_key) is None else str(example[self.output_key]),
        )

    def add_example(self, example: dict[str, str]) -> Any:
        """Add one example to the pool (a named pool is saved again)."""
        with self._lock:
            if isinstance(self.pool, str):
                return self._store().add(self.pool, [self._record(example)])
            if self._pool is None:
                from thresher.prompting import Pool

                embedder = self._embedded.services.provider.embedder(
                    self._embedded.settings.embedder_model
                )
                self._pool = Pool(embedder).fit([self._record(example)])
                return self._pool
            return self._pool.add([self._record(example)])

    def select_examples(self, input_variables: dict[str, str]) -> list[dict[str, Any]]:
        """The ``k`` examples nearest the input, in prompt order."""
        from thresher.prompting import demonstrate

        query = input_variables.get(self.input_key)
        if query is None:
            query = " ".join(str(v) for v in input_variables.values())
        pool, retriever = self._retriever()
        provider = self._embedded.services.provider
        found = demonstrate(
            pool,
            str(query),
            min(self.k, len(pool)),
            method=self.method,
            order=self.order,
            retriever=retriever,
            scorer=lambda: provider.scorer(self._embedded.settings.scorer_model),
        )
        return [
            {self.input_key: d.text, self.output_key: d.output if d.output is not None else d.label}
            for d in found.demonstrations
        ]

    def _store(self) -> Any:
        return self._embedded.services.pools()

    def _retriever(self) -> tuple[Any, Any]:
        with self._lock:
            if isinstance(self.pool, str):
                store = self._store()
                return store.get(self.pool), store.retriever(self.pool, self.method)
            if self._pool is None:
                from thresher.core.errors import InputError

                raise InputError(
                    "the example selector's pool is empty; pass examples or add_example first.",
                    field="examples",
                )
            version = self._pool.version_
            if self._fitted is None or self._fitted[0] != version:
                from thresher.prompting import get_retriever

                self._fitted = (version, get_retriever(self.method).fit(self._pool))
            return self._pool, self._fitted[1]
