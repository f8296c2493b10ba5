"""LangChain's retriever chain with Thresher's compressor, over an in-memory vector store of a
story's passages embedded by the real MiniLM; and the example selector over a Thresher pool.
Parity: the same options through Thresher's own proxy forward the same text."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="needs pip install 'thresher[langchain]'")
pytest.importorskip("langchain_classic", reason="needs pip install 'thresher[langchain]'")

from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from thresher.api.integrations.langchain import ThresherCompressor, ThresherExampleSelector  # noqa: E402


class MiniLM(Embeddings):
    """LangChain's embeddings interface over Thresher's session embedder (all-MiniLM-L6-v2)."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.encode([text])[0].tolist()


@pytest.fixture(scope="module")
def store(embedder, story):
    docs = [Document(page_content=c, metadata={"chunk": i}) for i, c in enumerate(story["chunks"])]
    return InMemoryVectorStore.from_documents(docs, MiniLM(embedder))


def test_the_retriever_chain_compresses_like_thresher_s_proxy(
    store, story, provider, service_settings, thresher_proxy
):
    options = {"method": "longllmlingua", "rate": 0.5}
    compressor = ThresherCompressor(**options, settings=service_settings, provider=provider)
    chain = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 4})
    )
    question = story["question"]
    compressed = chain.invoke(question)
    retrieved = store.as_retriever(search_kwargs={"k": 4}).invoke(question)

    assert [d.metadata["chunk"] for d in compressed] == [d.metadata["chunk"] for d in retrieved]
    report = compressed[0].metadata["thresher"]
    assert report["stages"][0] == {**report["stages"][0], "name": "compression", "status": "ran"}
    assert 0 < report["tokens_after"] < report["tokens_before"]
    # A passage under compress_min_message_tokens (a story's short last chunk) goes verbatim.
    assert (
        sum(a.page_content != b.page_content for b, a in zip(retrieved, compressed, strict=True))
        >= 3
    )
    for before, after in zip(retrieved, compressed, strict=True):
        assert after.page_content
        # Compression keeps words in their order and adds none.
        words = iter(before.page_content.split())
        assert all(any(w in b for b in words) for w in after.page_content.split()[:5])

    # The same request through Thresher's own proxy: the backend receives the same text.
    messages = [{"role": "user", "content": d.page_content} for d in retrieved]
    messages.append({"role": "user", "content": question})
    forwarded = thresher_proxy(messages, {"compression": options})
    assert [m["content"] for m in forwarded[:-1]] == [d.page_content for d in compressed]
    assert forwarded[-1]["content"] == question


def test_short_documents_pass_unchanged_and_no_arguments_work(store, story):
    compressor = ThresherCompressor()  # the embedded defaults, as `make run` serves
    docs = store.as_retriever(search_kwargs={"k": 1}).invoke(story["question"])
    out = compressor.compress_documents(docs, story["question"])
    assert [d.page_content for d in out] == [d.page_content for d in docs]
    stage = out[0].metadata["thresher"]["stages"][0]
    assert stage["status"] == "skipped" and "compress_min_tokens" in stage["detail"]
    assert compressor.compress_documents([], "anything") == []


def test_built_with_no_arguments_it_compresses_on_its_first_call(story):
    """The models load when the compressor is built (as the service's lifespan loads them), so
    a first call's deadline goes to compressing: the whole story, retrieved as 19 passages,
    comes back compressed, with nothing loaded during the call."""
    compressor = ThresherCompressor()
    provider = compressor._pipeline.services.provider
    loads = len(provider.events)
    docs = [Document(page_content=c, metadata={"chunk": i}) for i, c in enumerate(story["chunks"])]
    out = compressor.compress_documents(docs, story["question"])
    report = out[0].metadata["thresher"]
    stage = report["stages"][0]
    # None left to a deadline; the passages whose text before their last sentence (taken as a
    # question) is short go verbatim, the rest compressed.
    assert stage["status"] == "ran" and stage["detail"].startswith("compress;"), stage
    counts = dict(kv.split("=") for kv in stage["detail"].split("; ")[1:])
    assert counts["skipped"] == "0" and int(counts["compressed"]) >= 8, stage
    assert report["tokens_after"] < 0.8 * report["tokens_before"]
    assert len(provider.events) == loads


def test_a_bad_option_names_its_field():
    # pydantic (LangChain's models) wraps Thresher's InputError in its ValidationError.
    with pytest.raises(ValueError, match="thresher.compression.rate"):
        ThresherCompressor(rate=2.0)


def test_the_example_selector_picks_what_the_proxy_s_demonstrations_stage_picks(
    provider, embedder, service_settings, data_dir, thresher_proxy
):
    from thresher.prompting import PoolStore, read_demonstrations

    rows = read_demonstrations(data_dir / "api" / "intent_pool_small.jsonl", label_field="label")
    PoolStore(service_settings.data_dir, embedder).create("intents-lc", rows, replace=True)
    selector = ThresherExampleSelector(
        "intents-lc", k=3, settings=service_settings, provider=provider
    )
    query = "play some jazz from the seventies"
    examples = selector.select_examples({"input": query})
    assert len(examples) == 3 and all(set(e) == {"input", "output"} for e in examples)

    forwarded = thresher_proxy(
        [{"role": "user", "content": query}], {"demonstrations": {"pool": "intents-lc", "k": 3}}
    )
    demos = [m["content"] for m in forwarded[:-1] if m["role"] == "user"]
    assert len(demos) == 3
    for example, demo in zip(examples, demos, strict=True):
        assert example["input"] in demo
    answers = [m["content"] for m in forwarded[:-1] if m["role"] == "assistant"]
    assert [e["output"] for e in examples] == [a.strip() for a in answers]


def test_the_example_selector_grows_an_in_memory_pool(provider):
    selector = ThresherExampleSelector(
        examples=[
            {"input": "two plus two", "output": "4"},
            {"input": "the capital of France", "output": "Paris"},
        ],
        k=1,
        provider=provider,
    )
    assert selector.select_examples({"input": "three plus five"}) == [
        {"input": "two plus two", "output": "4"}
    ]
    selector.add_example({"input": "the colour of the sky", "output": "blue"})
    assert selector.select_examples({"input": "what colour is grass"})[0]["output"] == "blue"
    # In LangChain's few-shot prompt, as users wire an example selector.
    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

    prompt = FewShotPromptTemplate(
        example_selector=selector,
        example_prompt=PromptTemplate.from_template("Q: {input}\nA: {output}"),
        suffix="Q: {input}\nA:",
        input_variables=["input"],
    )
    assert prompt.format(input="seven plus one") == "Q: two plus two\nA: 4\n\nQ: seven plus one\nA:"
    from thresher.core.errors import ConfigError

    with pytest.raises(ConfigError, match="method 'nope'"):
        ThresherExampleSelector(method="nope")
