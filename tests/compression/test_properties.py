"""Invariants over generated prompts, with the real scorer (hypothesis)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.compression import METHODS, ProtectOptions
from thresher.compression.units import protected_spans

WORDS = (
    "the a river detective found seven old letters under bridge quietly while night market "
    "silver key window garden clock stopped when nobody remembered why train left early "
    "because storm coming north village baker said she heard footsteps"
).split()
CJK = ["我们在河边找到了钥匙。", "東京の駅で手紙を見つけた。"]
# A few examples each: every one runs the real LM, and deterministic examples keep CI stable.
SETTINGS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

sentence = st.lists(st.sampled_from(WORDS), min_size=4, max_size=14).map(
    lambda ws: " ".join(ws).capitalize() + "."
)
protected = st.one_of(
    st.integers(10, 99999).map(str),
    st.integers(1, 28).map(lambda d: f"2024-03-{d:02d}"),
    st.text("abcdefghij", min_size=3, max_size=8).map(lambda s: f"https://example.com/{s}"),
    st.dictionaries(st.sampled_from(WORDS), st.integers(0, 9), min_size=1, max_size=3).map(
        json.dumps
    ),
    st.sampled_from(["```\nprint('hi')\n```", "```sh\nls -la\n```"]),
    st.sampled_from(CJK),
)
# Sized to the property: just above min_tokens (200), so every example is compressed and a
# 10% miss is a handful of tokens; long inputs are the slow test's job.
pieces = st.lists(st.one_of(sentence, sentence, sentence, protected), min_size=28, max_size=40)
turn = st.lists(st.one_of(sentence, sentence, sentence, protected), min_size=8, max_size=14)


@SETTINGS
@given(pieces, st.floats(0.3, 0.8), st.sampled_from(sorted(METHODS)))
def test_compression_meets_rate_keeps_spans_and_never_grows(compressors, parts, rate, name):
    text = " ".join(parts)
    result = compressors[name].compress(text, rate=rate)
    assert result.compressed_tokens <= result.origin_tokens
    assert result.ratio > 1 or result.origin_tokens < compressors[name].min_tokens
    for a, b in protected_spans(text, ProtectOptions()):
        assert text[a:b] in result.text, text[a:b]
    if result.ratio > 1:
        target = round(result.origin_tokens * rate)
        floor = sum(
            compressors[name].counter.count(text[a:b])
            for a, b in protected_spans(text, ProtectOptions())
        )
        if floor < 0.8 * target:
            assert abs(result.compressed_tokens - target) <= 0.1 * target
    assert "".join(result.tokens) == text


@settings(SETTINGS, max_examples=4)
@given(
    st.lists(
        st.tuples(st.sampled_from(["user", "assistant", "tool"]), turn), min_size=2, max_size=3
    ),
    st.sampled_from(sorted(METHODS)),
)
def test_messages_keep_roles_and_order(compressors, turns, name):
    messages = [{"role": "system", "content": "Be brief."}]
    messages += [{"role": role, "content": " ".join(p)} for role, p in turns]
    messages.append({"role": "user", "content": "What was found?"})
    result = compressors[name].compress(messages=messages, rate=0.5)
    assert [m["role"] for m in result.messages] == [m["role"] for m in messages]
    assert result.messages[0]["content"] == "Be brief."
    assert result.messages[-1]["content"] == "What was found?"
    assert result.compressed_tokens <= result.origin_tokens
    for before, after in zip(messages, result.messages, strict=True):
        assert after["content"].strip()
        for a, b in protected_spans(before["content"], ProtectOptions()):
            assert before["content"][a:b] in after["content"]
