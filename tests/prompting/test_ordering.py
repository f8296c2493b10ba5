import numpy as np
import pytest

from thresher.core.errors import InputError
from thresher.prompting import ORDER_NAMES, Orderer, get_orderer, get_retriever


@pytest.fixture(scope="module")
def result(intent_pool, intent_queries, query_vectors):
    knn = get_retriever("label_balanced").fit(intent_pool)
    return knn.retrieve(intent_queries[0], 3, vector=query_vectors[0])


def make(name, scorer, labels):
    if name == "entropy":  # the one orderer that probes an LM; given probes keep it quick
        return get_orderer(name, scorer=scorer, labels=labels[:2], n_orders=2, probes=["a song"])
    return get_orderer(name)


@pytest.mark.parametrize("name", ORDER_NAMES)
def test_every_orderer_conforms(name, result, scorer, intent_pool):
    orderer = make(name, scorer, sorted({d.label for d in result.demonstrations}))
    assert isinstance(orderer, Orderer) and orderer.name == name
    ordered = orderer.order(result)
    assert ordered.order == name and ordered.query == result.query
    assert sorted(ordered.ids) == sorted(result.ids)
    assert orderer.order(result).ids == ordered.ids  # repeatable
    assert result.order is None  # the input is left as it was


def test_similarity_puts_the_most_similar_last_and_reverse_first(result):
    best = max(result.demonstrations, key=lambda d: d.similarity).id
    assert get_orderer("similarity").order(result).ids[-1] == best
    assert get_orderer("reverse").order(result).ids[0] == best


def test_entropy_picks_the_order_with_the_highest_global_entropy(result, scorer):
    labels = sorted({d.label for d in result.demonstrations})
    orderer = get_orderer(
        "entropy", scorer=scorer, labels=labels, n_orders=3, probes=["play Adele", "rain?"]
    )
    ordered = orderer.order(result)
    info = ordered.info["entropy"]
    assert info["probed"] == 3 and len(info["global_entropies"]) == 3
    assert info["global_entropy"] == max(info["global_entropies"])
    assert 0.0 <= info["global_entropy"] <= np.log(2) + 1e-9  # two probes: at most ln 2


@pytest.mark.slow
def test_entropy_writes_its_own_probe_set_with_the_lm(result, scorer, intent_pool):
    # Two labels and short probes: what is under test is that the LM writes the probes.
    orderer = get_orderer(
        "entropy",
        scorer=scorer,
        labels=intent_pool.labels_[:2],
        n_orders=2,
        n_probe=2,
        max_probe_tokens=12,
    )
    info = orderer.order(result).info["entropy"]
    assert len(info["probes"]) == 2 and all(p.strip() for p in info["probes"])


def test_entropy_without_a_scorer_and_unknown_order_name_the_field():
    with pytest.raises(InputError) as info:
        get_orderer("entropy")
    assert info.value.field == "order"
    with pytest.raises(InputError) as info:
        get_orderer("alphabetical")
    assert info.value.field == "order"
