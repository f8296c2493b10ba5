"""Every compressor against the same contract (a conformance test over METHODS)."""

import pytest

from thresher.compression import (
    METHODS,
    CompressionResult,
    Compressor,
    ProtectOptions,
    get_compressor,
)
from thresher.core.errors import InputError

NAMES = list(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_rate_is_met_and_result_is_consistent(name, compressors, counter, stories):
    story = stories[2]
    compressor = compressors[name]
    assert isinstance(compressor, Compressor)
    result = compressor.compress(story["context"], question=story["question"], rate=0.33)
    assert isinstance(result, CompressionResult)
    target = round(result.origin_tokens * 0.33)
    assert abs(result.compressed_tokens - target) <= 0.1 * target, result.compressed_tokens
    assert result.compressed_tokens == counter.count(result.text)
    assert result.origin_tokens == counter.count(story["context"] + "\n\n" + story["question"])
    assert result.ratio == pytest.approx(result.origin_tokens / result.compressed_tokens)
    assert result.original == story["context"] + "\n\n" + story["question"]
    assert len(result.tokens) == len(result.kept_mask) and 0 < sum(result.kept_mask)
    assert result.text.endswith(story["question"])  # kept verbatim
    assert "line-through" in result._repr_html_()
    assert result.method == name


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_rate_is_met_on_a_20000_token_prompt(name, compressors, counter, stories):
    # The upper bound: the KV stream outgrows max_context and restarts on the way.
    story = "\n\n".join(s["context"] for s in stories)
    copies = -(-20_000 // counter.count(story))
    text = "\n\n".join(f"Part {i + 1}.\n\n{story}" for i in range(copies))
    result = compressors[name].compress(text, rate=0.33)
    assert result.origin_tokens >= 20_000
    target = round(result.origin_tokens * 0.33)
    assert abs(result.compressed_tokens - target) <= 0.1 * target, result.compressed_tokens
    assert result.compressed_tokens == counter.count(result.text)


@pytest.mark.parametrize("name", NAMES)
def test_target_tokens_and_contexts_with_instruction(name, compressors, counter, stories):
    contexts = [s["context"] for s in stories[:2]]
    result = compressors[name].compress(
        contexts, instruction="Read the stories.", question="Who did it?", target_tokens=250
    )
    assert abs(result.compressed_tokens - 250) <= 25
    assert result.text.startswith("Read the stories.") and result.text.endswith("Who did it?")


@pytest.mark.parametrize("name", NAMES)
def test_short_prompts_and_large_targets_come_back_unchanged(name, compressors):
    short = compressors[name].compress("A short note about nothing much.", rate=0.3)
    assert short.ratio == 1.0 and short.text == "A short note about nothing much."
    assert "below min_tokens" in short.note
    long_text = "The river ran past the old mill every spring. " * 40
    same = compressors[name].compress(long_text, target_tokens=10_000)
    assert same.text == long_text and same.ratio == 1.0 and "target" in same.note


@pytest.mark.parametrize("name", NAMES)
def test_messages_keep_roles_order_and_protected_turns(name, compressors, stories):
    messages = [
        {"role": "system", "content": "You are a careful detective assistant."},
        {"role": "user", "content": stories[1]["context"]},
        {"role": "assistant", "content": stories[0]["context"]},
        {"role": "user", "content": stories[1]["question"]},
    ]
    result = compressors[name].compress(messages=messages, rate=0.5)
    out = result.messages
    assert [m["role"] for m in out] == [m["role"] for m in messages]
    assert out[0]["content"] == messages[0]["content"]  # system kept
    assert out[3]["content"] == messages[3]["content"]  # last user turn kept
    assert len(out[1]["content"]) < len(messages[1]["content"])
    assert all(m["content"] for m in out)
    assert result.compressed_tokens < result.origin_tokens


def test_messages_policy_per_role(compressors, stories):
    messages = [
        {"role": "user", "content": stories[1]["context"]},
        {"role": "assistant", "content": stories[0]["context"]},
        {"role": "user", "content": "Who did it?"},
    ]
    result = compressors["llmlingua"].compress(
        messages=messages, rate=0.6, policy={"assistant": "keep"}
    )
    assert result.messages[1]["content"] == messages[1]["content"]
    assert result.messages[0]["content"] != messages[0]["content"]


def test_longllmlingua_ranks_relevant_contexts_first_and_recovers(compressors):
    noise = [
        f"The weather report for district {i} mentions light winds and some clouds over "
        "the hills, with farmers expecting an ordinary week of work in the fields." * 2
        for i in range(5)
    ]
    key = (
        "The stolen painting was hidden by the gardener inside the greenhouse behind the "
        "orange trees, where nobody thought to look during the search of the estate."
    )
    contexts = noise[:2] + [key * 2] + noise[2:]
    result = compressors["longllmlingua"].compress(
        contexts, question="Where was the stolen painting hidden?", rate=0.35
    )
    assert "painting" in result.text and "greenhouse" in result.text
    kept = [t for t, k in zip(result.tokens, result.kept_mask, strict=True) if k]
    assert "".join(kept).strip()
    # Recovery: a compressed quote in an answer comes back in the original wording.
    pieces = [t for t, k in zip(result.tokens, result.kept_mask, strict=True) if k and t.strip()]
    quote = "".join(pieces[3:9])
    recovered = result.recover("It says" + quote + ".")
    assert len(recovered) >= len("It says" + quote + ".")
    assert all(p.strip() in recovered for p in pieces[3:9])


def test_protected_spans_survive(compressors, stories):
    text = (
        stories[0]["context"]
        + "\n\nSee https://example.org/case/42 and the log:\n```\nERROR 17 at 10:42\n```\n"
        + 'Evidence: {"suspect": "Tabor", "time": "10:42"}. Codeword OSPREY.'
    )
    protect = ProtectOptions(force_tokens=("OSPREY",))
    for name in NAMES:
        compressor = get_compressor(
            name,
            scorer=compressors[name].scorer,
            counter=compressors[name].counter,
            protect=protect,
        )
        result = compressor.compress(text, rate=0.4)
        for span in (
            "https://example.org/case/42",
            "```\nERROR 17 at 10:42\n```",
            '{"suspect": "Tabor", "time": "10:42"}',
            "OSPREY",
        ):
            assert span in result.text, (name, span)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"context": ""}, "context"),
        ({"context": []}, "context"),
        ({"context": ["fine", "   "]}, "context[1]"),
        ({"context": "text", "rate": 0}, "rate"),
        ({"context": "text", "rate": 1.2}, "rate"),
        ({"context": "text", "target_tokens": -1}, "target_tokens"),
        ({"context": "bad \ud800 text"}, "context"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": []}, "messages"),
        ({}, "context"),
    ],
)
def test_bad_input_names_the_field(kwargs, field, compressors):
    with pytest.raises(InputError) as info:
        compressors["llmlingua"].compress(**kwargs)
    assert info.value.field == field


def test_unknown_method(compressors):
    c = compressors["llmlingua"]
    with pytest.raises(InputError, match="Unknown compression method 'gzip'"):
        get_compressor("gzip", scorer=c.scorer, counter=c.counter)
