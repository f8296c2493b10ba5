"""LlamaIndex's query engine with Thresher's postprocessor, over an in-memory vector index of a
story's passages (the real MiniLM embeds them, the real SmolLM2 answers). Parity: the same
options through Thresher's own proxy forward the same text."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="needs pip install 'thresher[llama-index]'")

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding  # noqa: E402
from llama_index.core.llms import (  # noqa: E402
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from thresher.api.integrations.llama_index import ThresherPostprocessor  # noqa: E402
from thresher.core.backends import LocalBackend  # noqa: E402


class MiniLM(BaseEmbedding):
    """LlamaIndex's embedding interface over Thresher's session embedder."""

    _embedder: Any = PrivateAttr()

    def __init__(self, embedder: Any) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2")
        self._embedder = embedder

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.encode([text])[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


class SmolLM(CustomLLM):
    """LlamaIndex's LLM interface over Thresher's local backend (SmolLM2, a few tokens); keeps
    the prompts it was given."""

    prompts: list[str] = []
    _backend: Any = PrivateAttr()

    def __init__(self, lm: Any) -> None:
        super().__init__(prompts=[])
        self._backend = LocalBackend(lm, max_new_tokens=8)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=8192, num_output=8, model_name="SmolLM2-135M-Instruct")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        answer = asyncio.run(self._backend.complete({"prompt": prompt, "max_tokens": 8}))
        return CompletionResponse(text=answer["choices"][0]["text"])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt)


@pytest.fixture(scope="module")
def index(embedder, story):
    nodes = [TextNode(text=c, id_=f"chunk-{i}") for i, c in enumerate(story["chunks"])]
    return VectorStoreIndex(nodes, embed_model=MiniLM(embedder))


def test_the_query_engine_answers_from_nodes_compressed_like_thresher_s_proxy(
    index, story, provider, local_lm, service_settings, thresher_proxy
):
    options = {"method": "llmlingua", "rate": 0.5}
    post = ThresherPostprocessor(**options, settings=service_settings, provider=provider)
    llm = SmolLM(local_lm)
    engine = index.as_query_engine(llm=llm, similarity_top_k=4, node_postprocessors=[post])
    question = story["question"]
    response = engine.query(question)
    retrieved = index.as_retriever(similarity_top_k=4).retrieve(question)

    nodes = response.source_nodes
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in retrieved]
    assert [n.score for n in nodes] == pytest.approx([n.score for n in retrieved])
    report = nodes[0].node.metadata["thresher"]
    assert report["stages"][0]["status"] == "ran"
    assert 0 < report["tokens_after"] < report["tokens_before"]
    # The LLM read the compressed passages, not the retrieved ones, nor the report.
    prompt = llm.prompts[-1]
    # A passage under compress_min_message_tokens (a story's short last chunk) goes verbatim.
    pairs = [
        (b.node.get_content(), a.node.get_content()) for b, a in zip(retrieved, nodes, strict=True)
    ]
    changed = [(b, a) for b, a in pairs if a != b]
    assert len(changed) >= 3 and all(a in prompt for _, a in pairs)
    for before, _ in changed:
        assert before not in prompt
    assert "tokens_before" not in prompt
    assert isinstance(response.response, str)

    # The same request through Thresher's own proxy: the backend receives the same text.
    messages = [{"role": "user", "content": n.node.get_content()} for n in retrieved]
    messages.append({"role": "user", "content": question})
    forwarded = thresher_proxy(messages, {"compression": options})
    assert [m["content"] for m in forwarded[:-1]] == [n.node.get_content() for n in nodes]


def test_no_arguments_and_no_nodes():
    post = ThresherPostprocessor()  # the embedded defaults, as `make run` serves
    assert post.postprocess_nodes([], query_str="anything") == []
    short = [NodeWithScore(node=TextNode(text="A short passage."), score=1.0)]
    out = post.postprocess_nodes(short, query_str="What is it?")
    assert out[0].node.get_content() == "A short passage."
    assert out[0].node.metadata["thresher"]["stages"][0]["status"] == "skipped"
    assert short[0].node.metadata == {}  # the retrieved node itself is left as it was


def test_built_with_no_arguments_it_compresses_on_its_first_call(story):
    post = ThresherPostprocessor()  # the models load here, not in the first call
    provider = post._pipeline.services.provider
    loads = len(provider.events)
    nodes = [NodeWithScore(node=TextNode(text=c), score=1.0) for c in story["chunks"]]
    out = post.postprocess_nodes(nodes, query_str=story["question"])
    report = out[0].node.metadata["thresher"]
    stage = report["stages"][0]
    # None left to a deadline; the passages whose text before their last sentence (taken as a
    # question) is short go verbatim, the rest compressed.
    assert stage["status"] == "ran" and stage["detail"].startswith("compress;"), stage
    counts = dict(kv.split("=") for kv in stage["detail"].split("; ")[1:])
    assert counts["skipped"] == "0" and int(counts["compressed"]) >= 8, stage
    assert report["tokens_after"] < 0.8 * report["tokens_before"]
    assert len(provider.events) == loads
