import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.core.errors import InputError
from thresher.prompting import (
    RETRIEVER_NAMES,
    Pool,
    RetrievalResult,
    Retriever,
    demonstration,
    get_retriever,
)
from thresher.prompting.diverse import LabelConfidence, votek_select, votek_two_stage

SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def fitted(intent_pool):
    return {name: get_retriever(name).fit(intent_pool) for name in RETRIEVER_NAMES}


@pytest.mark.parametrize("name", RETRIEVER_NAMES)
def test_every_retriever_conforms(name, fitted, intent_pool, intent_queries, query_vectors):
    retriever = fitted[name]
    assert isinstance(retriever, Retriever) and retriever.name == name
    result = retriever.retrieve(intent_queries[0], 5, vector=query_vectors[0])
    assert isinstance(result, RetrievalResult) and result.method == name
    assert len(result.ids) == 5 == len(set(result.ids))
    assert all(i in intent_pool.row_of_ for i in result.ids)
    for d in result.demonstrations:
        assert np.isfinite(d.score) and -1.0 - 1e-5 <= d.similarity <= 1.0 + 1e-5
        assert d.label is not None
    again = retriever.retrieve(intent_queries[0], 5, vector=query_vectors[0])
    assert again.ids == result.ids  # deterministic, random included (seeded per query)
    assert result.ids[0] in result._repr_html_()
    # Without a vector, the retriever embeds the query itself and agrees.
    assert retriever.retrieve(intent_queries[0], 5).ids == result.ids


@pytest.mark.parametrize("name", RETRIEVER_NAMES)
@pytest.mark.parametrize("k, field", [(0, "k"), (-1, "k"), (10_000, "k")])
def test_bad_k_names_the_field(name, fitted, k, field):
    with pytest.raises(InputError) as info:
        fitted[name].retrieve("play jazz", k)
    assert info.value.field == field


@pytest.mark.parametrize("name", RETRIEVER_NAMES)
def test_empty_query_names_the_field(name, fitted):
    with pytest.raises(InputError) as info:
        fitted[name].retrieve("  ", 3)
    assert info.value.field == "query"


@SETTINGS
@given(
    name=st.sampled_from(RETRIEVER_NAMES),
    q=st.integers(min_value=0, max_value=11),
    k=st.integers(min_value=1, max_value=120),
)
def test_a_retriever_returns_at_most_k_unique_ids_from_the_pool(
    fitted, intent_pool, intent_queries, query_vectors, name, q, k
):
    result = fitted[name].retrieve(intent_queries[q], k, vector=query_vectors[q])
    assert len(result.ids) <= k
    assert len(set(result.ids)) == len(result.ids)
    assert set(result.ids) <= set(intent_pool.row_of_)


def test_knn_ranks_by_similarity_and_finds_an_exact_copy(fitted, intent_pool):
    text = intent_pool.records_[7].text
    result = fitted["knn"].retrieve(text, 6)
    assert result.ids[0] == intent_pool.records_[7].id
    sims = [d.similarity for d in result.demonstrations]
    assert sims == sorted(sims, reverse=True)


def test_bm25_prefers_shared_words(fitted, intent_pool):
    record = intent_pool.records_[3]
    assert fitted["bm25"].retrieve(record.text, 3).ids[0] == record.id


def test_mmr_trades_relevance_for_diversity(intent_pool, intent_queries, query_vectors):
    knn = (
        get_retriever("knn")
        .fit(intent_pool)
        .retrieve(intent_queries[1], 6, vector=query_vectors[1])
    )
    pure = get_retriever("mmr", lambda_=1.0).fit(intent_pool)
    assert pure.retrieve(intent_queries[1], 6, vector=query_vectors[1]).ids == knn.ids
    diverse = get_retriever("mmr", lambda_=0.3).fit(intent_pool)
    mixed = diverse.retrieve(intent_queries[1], 6, vector=query_vectors[1])

    def redundancy(ids):
        e = intent_pool.embeddings_[[intent_pool.row_of_[i] for i in ids]]
        s = e @ e.T
        return (s.sum() - np.trace(s)) / (len(ids) * (len(ids) - 1))

    assert redundancy(mixed.ids) < redundancy(knn.ids)


def test_dpp_is_more_diverse_than_knn(intent_pool, intent_queries, query_vectors):
    knn = (
        get_retriever("knn")
        .fit(intent_pool)
        .retrieve(intent_queries[2], 6, vector=query_vectors[2])
    )
    dpp = get_retriever("dpp", alpha=1.0).fit(intent_pool)
    picked = dpp.retrieve(intent_queries[2], 6, vector=query_vectors[2])
    e_k = intent_pool.embeddings_[[intent_pool.row_of_[i] for i in knn.ids]]
    e_d = intent_pool.embeddings_[[intent_pool.row_of_[i] for i in picked.ids]]
    # The DPP objective: the volume (log det of the Gram matrix) its picks span.
    assert np.linalg.slogdet(e_d @ e_d.T)[1] > np.linalg.slogdet(e_k @ e_k.T)[1]


def test_votek_selects_a_representative_subset_once(intent_pool):
    votek = get_retriever("votek", budget=20).fit(intent_pool)
    assert len(set(votek.selected_.tolist())) == 20
    ids = {intent_pool.records_[r].id for r in votek.selected_}
    for q in ["rain in Boston tomorrow", "add this song to my playlist"]:
        assert set(votek.retrieve(q, 4).ids) <= ids
    # The selection covers the label space better than its size alone would suggest.
    labels = {intent_pool.records_[r].metadata["label"] for r in votek.selected_}
    assert len(labels) >= 5
    assert len(votek.retrieve("play music", 30).ids) == 30  # asking for more extends it


def test_label_balanced_spreads_over_labels(fitted, intent_pool, intent_queries, query_vectors):
    result = fitted["label_balanced"].retrieve(intent_queries[0], 7, vector=query_vectors[0])
    assert len({d.label for d in result.demonstrations}) == 7
    random_base = get_retriever("label_balanced", base="random").fit(intent_pool)
    assert len(random_base.retrieve(intent_queries[0], 7).ids) == 7


def test_retrievers_refit_after_the_pool_changes(embedder, intent_records):
    from thresher.prompting import Pool, demonstration

    pool = Pool(embedder).fit(intent_records[:30])
    bm25 = get_retriever("bm25").fit(pool)
    pool.add([demonstration("zz", "zanzibar xylophone quintet", label="play_music")])
    assert bm25.retrieve("zanzibar xylophone", 1).ids == ["zz"]


def test_unknown_method_and_option_name_the_field():
    with pytest.raises(InputError) as info:
        get_retriever("telepathy")
    assert info.value.field == "method" and "knn" in str(info.value)
    with pytest.raises(InputError) as info:
        get_retriever("knn", temperature=3)
    assert info.value.field == "method"


def test_votek_without_a_scorer_is_the_graph_stage(intent_pool):
    votek = get_retriever("votek", budget=12).fit(intent_pool)
    graph_only = votek_select(intent_pool.embeddings_, intent_pool, 12, k_graph=15, rho=10.0)
    assert votek.selected_.tolist() == graph_only.tolist()


def test_votek_second_stage_takes_one_pick_per_confidence_bucket(intent_pool):
    # A deterministic confidence (how close a text's embedding is to one direction) makes the
    # buckets checkable; the LM's confidence goes through the same code.
    direction = intent_pool.embeddings_[0]
    row_of_text = {r.content: i for i, r in enumerate(intent_pool.records_)}

    def confidence(text, demos, labels):
        assert demos and labels
        return float(intent_pool.embeddings_[row_of_text[text]] @ direction)

    budget = 20
    picks = votek_two_stage(intent_pool, budget, confidence, k_graph=15, rho=10.0, shots=2)
    assert len(set(picks.tolist())) == budget
    first = votek_select(intent_pool.embeddings_, intent_pool, 2, k_graph=15, rho=10.0)
    assert picks[:2].tolist() == first.tolist()  # a tenth of the budget comes from the votes
    rest = np.setdiff1d(np.arange(len(intent_pool)), first)
    conf = intent_pool.embeddings_[rest] @ direction
    ranked = rest[np.argsort(conf, kind="stable")]
    kept = ranked[: round(0.9 * len(ranked))]
    buckets = np.array_split(kept, budget - 2)
    where = [next(i for i, b in enumerate(buckets) if p in b) for p in picks[2:]]
    assert sorted(where) == list(range(budget - 2))  # one per bucket, none from the top tenth


def test_votek_confidence_stage_with_the_real_lm(embedder, scorer, intent_records):
    two = [r for r in intent_records if r.metadata["label"] in ("play_music", "get_weather")]
    pool = Pool(embedder).fit(two[:12])
    votek = get_retriever("votek", budget=3, scorer=scorer, sample=2, shots=1).fit(pool)
    assert len(set(votek.selected_.tolist())) == 3
    confidence = LabelConfidence(scorer)
    demos = votek.retrieve("play some jazz", 2).demonstrations
    sure = confidence("play some jazz by Miles Davis", demos, ["play_music", "get_weather"])
    assert np.isfinite(sure) and sure < 0


def test_votek_confidence_stage_needs_labels(embedder, scorer, intent_records):
    pool = Pool(embedder).fit([demonstration(r.id, r.text) for r in intent_records[:10]])
    with pytest.raises(InputError) as err:
        get_retriever("votek", budget=3, scorer=scorer).fit(pool)
    assert err.value.field == "scorer"
