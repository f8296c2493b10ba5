import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.core.errors import InputError
from thresher.prompting import assemble, get_retriever, get_template


@pytest.fixture(scope="module")
def demos(intent_pool, intent_queries, query_vectors):
    knn = get_retriever("knn").fit(intent_pool)
    return knn.retrieve(intent_queries[3], 8, vector=query_vectors[3]).demonstrations


def test_classification_prompt_and_messages(demos, counter):
    out = assemble("rain in Rome?", demos[:2], counter=counter, instruction="Predict the intent.")
    assert out.prompt.startswith("Predict the intent.\n\nInput: ")
    assert out.prompt.endswith("Input: rain in Rome?\nLabel:")
    assert f"Label: {demos[0].label}" in out.prompt
    roles = [m["role"] for m in out.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert out.messages[2]["content"] == demos[0].label
    assert out.demo_messages == out.messages[1:-1]
    assert out.tokens == max(
        counter.count(out.prompt), sum(counter.count(m["content"]) for m in out.messages)
    )


def test_generation_template_shows_outputs(counter, intent_pool):
    from thresher.prompting import demonstration
    from thresher.prompting.result import Demonstration

    d = Demonstration(demonstration("g", "2+2?", output="4"), 1.0, 0.9)
    out = assemble("3+3?", [d], counter=counter, template="generation")
    assert out.prompt == "Input: 2+2?\nOutput: 4\n\nInput: 3+3?\nOutput:"
    with pytest.raises(InputError) as info:
        get_template("poetry")
    assert info.value.field == "template"


def test_budget_drops_the_least_similar_first_and_keeps_order(demos, counter):
    full = assemble("rain in Rome?", demos, counter=counter)
    out = assemble("rain in Rome?", demos, counter=counter, budget_tokens=full.tokens - 1)
    assert len(out.demonstrations) == len(demos) - 1
    weakest = min(demos, key=lambda d: d.similarity).id
    assert out.dropped == [weakest]
    assert [d.id for d in out.demonstrations] == [d.id for d in demos if d.id != weakest]


def test_budget_too_small_for_one_demonstration_names_the_field(demos, counter):
    with pytest.raises(InputError) as info:
        assemble("rain in Rome?", demos, counter=counter, budget_tokens=12)
    assert info.value.field == "budget_tokens" and "at least" in str(info.value)
    with pytest.raises(InputError) as info:
        assemble("", demos, counter=counter)
    assert info.value.field == "query"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    budget=st.integers(min_value=1, max_value=400),
    n=st.integers(min_value=1, max_value=8),
    instruction=st.sampled_from([None, "Predict the intent of the utterance."]),
)
def test_assembly_never_exceeds_the_budget(demos, counter, budget, n, instruction):
    try:
        out = assemble(
            "Find the movie schedule at the nearest cinema",
            demos[:n],
            counter=counter,
            budget_tokens=budget,
            instruction=instruction,
        )
    except InputError as exc:
        assert exc.field == "budget_tokens"
        return
    assert 1 <= len(out.demonstrations) <= n
    assert out.tokens <= budget
    assert counter.count(out.prompt) <= budget
    assert sum(counter.count(m["content"]) for m in out.messages) <= budget
