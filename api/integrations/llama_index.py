"""LlamaIndex adapter: :class:`ThresherPostprocessor`, a node postprocessor that compresses the
retrieved nodes for the query (where ``LongLLMLinguaPostprocessor`` goes).

    engine = index.as_query_engine(node_postprocessors=[ThresherPostprocessor(rate=0.5)])

Needs ``pip install 'thresher[llama-index]'``.
"""

from __future__ import annotations

from typing import Any

from thresher.api.integrations.embedded import (
    REPORT_KEY,
    EmbeddedPipeline,
    missing_extra,
    passage_options,
)
from thresher.compression import DEFAULT_METHOD

try:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - the extra is installed in the test venv
    raise missing_extra("llama-index-core", "llama-index", exc) from exc

from pydantic import Field, PrivateAttr


class ThresherPostprocessor(BaseNodePostprocessor):
    """Question-aware compression of retrieved nodes, by Thresher's compression stage.

    The nodes' text and the query go through the pipeline as the chat request Thresher's proxy
    would get (each node a user message, the query last). Each node comes back, in its order and
    with its score, as a copy whose text is compressed and whose metadata gains a ``thresher``
    entry with the call's token counts (excluded from what the LLM and the embedder see).

    Args:
        method: A compression method (``thresher.compression.METHODS``).
        rate: Fraction of tokens to keep; or ``target_tokens`` for all the nodes together.
        protect: Strings kept verbatim.
        max_latency_ms: Skip compression when its predicted time exceeds this.
        budget_tokens: The prompt's token budget (compression cuts to it when over).
        settings: Service settings (default: the ``THRESHER_*`` environment).
        provider: A loaded ``ModelProvider`` to share (default: built from the settings).
        tokenizer: Token counter of the target model (default: ``settings.tokenizer``).
    """

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

    @classmethod
    def class_name(cls) -> str:
        return "ThresherPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        query = query_bundle.query_str if query_bundle is not None else ""
        passages = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        texts, report = self._pipeline.compress_passages(passages, query)
        summary = report.as_dict()
        out = []
        for hit, text in zip(nodes, texts, strict=True):
            node = hit.node.model_copy(deep=True)
            node.set_content(text)
            node.metadata[REPORT_KEY] = summary
            node.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys, REPORT_KEY]
            node.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys, REPORT_KEY]
            out.append(NodeWithScore(node=node, score=hit.score))
        return out
