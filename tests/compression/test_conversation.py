"""Conversation-aware compression over the real SmolLM2 scorer: earlier messages keep their bytes
across turns, only new messages are compressed, questions and kept messages stay whole."""

from __future__ import annotations

import json

import pytest

from tests.compression.test_structured import tool_output
from thresher.compression import get_compressor
from thresher.compression.conversation import (
    ConversationCompressor,
    LRUMessageCache,
    Stopped,
    split_question,
)


@pytest.fixture(scope="module")
def chunks(data_dir):
    """About 130-token passages of the long-context stories, in order."""
    out = []
    for line in (data_dir / "api" / "longqa_small.jsonl").open():
        text = json.loads(line)["context"]
        out += [text[i : i + 600] for i in range(0, len(text) - 600, 600)]
    return out


def conversation(fast_scorer, counter, method="llmlingua", cache=None, **kw):
    compressor = get_compressor(method, scorer=fast_scorer, counter=counter, min_tokens=0)
    return ConversationCompressor(
        compressor,
        counter,
        cache=LRUMessageCache() if cache is None else cache,
        target="gpt-4o",
        **kw,
    )


def turns(chunks, n):
    """n turns of a chat: a user passage with a question, an assistant reply."""
    messages = [{"role": "system", "content": "You are a careful reader. " * 20}]
    for t in range(n):
        yield messages + [{"role": "user", "content": chunks[2 * t] + "\nWho is speaking here?"}]
        messages = messages + [
            {"role": "user", "content": chunks[2 * t] + "\nWho is speaking here?"},
            {"role": "assistant", "content": chunks[2 * t + 1]},
        ]


def test_ten_turns_keep_earlier_messages_byte_identical(fast_scorer, counter, chunks):
    conv = conversation(fast_scorer, counter, rate=0.5)
    previous: list[dict] = []
    for t, messages in enumerate(turns(chunks, 10)):
        result = conv.run(conv.plan(messages))
        sent = result.messages
        # Every message forwarded before goes out in the same bytes.
        assert [json.dumps(m) for m in sent[: len(previous)]] == [
            json.dumps(m) for m in previous[: len(sent)]
        ]
        # Only the messages new this turn were compressed: the last user turn, and from the
        # second turn on the assistant reply before it.
        new = messages[-2:] if t else messages[-1:]
        assert result.new_tokens == sum(counter.count(m["content"]) for m in new)
        assert result.count("compressed") == len(new)
        assert result.count("cached") == len(messages) - 1 - len(new)
        assert sent[0] == messages[0]  # the system prompt is never touched
        assert sent[-1]["content"].endswith("\nWho is speaking here?")  # nor the question
        previous = sent
    saved = sum(counter.count(m["content"]) for m in messages) - sum(
        counter.count(m["content"]) for m in sent
    )
    assert saved > 0.3 * sum(counter.count(m["content"]) for m in messages[1:])


def test_each_message_keeps_its_own_rate_with_a_floor(fast_scorer, counter, chunks):
    conv = conversation(fast_scorer, counter, rate=0.1, floor_tokens=40)
    messages = [
        {"role": "user", "content": chunks[0]},
        {"role": "user", "content": chunks[1] + chunks[2] + chunks[3]},
    ]
    out = conv.run(conv.plan(messages)).messages
    for before, after in zip(messages, out, strict=True):
        n, m = counter.count(before["content"]), counter.count(after["content"])
        assert m < n and m >= min(40, n) * 0.8  # neither left whole nor cut to a stub


def test_kept_messages_parts_and_roles(fast_scorer, counter, chunks):
    conv = conversation(fast_scorer, counter, rate=0.5)
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    messages = [
        {"role": "developer", "content": chunks[0]},
        {"role": "user", "content": chunks[1]},
        {"role": "user", "content": [{"type": "text", "text": chunks[2] + "\nWhy?"}, image]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
    ]
    result = conv.run(conv.plan(messages, keep={1}))
    out = result.messages
    assert out[0] == messages[0] and out[1] == messages[1] and out[3] == messages[3]
    parts = out[2]["content"]
    assert parts[1] == image and parts[0]["type"] == "text"
    assert counter.count(parts[0]["text"]) < counter.count(chunks[2])
    assert parts[0]["text"].endswith("\nWhy?")
    assert result.outcomes == {2: "compressed"}


def test_tool_json_is_compressed_by_structure(fast_scorer, counter):
    conv = conversation(fast_scorer, counter, rate=0.3)
    text = json.dumps(tool_output(), indent=2)
    out = conv.run(conv.plan([{"role": "tool", "content": text, "tool_call_id": "1"}])).messages
    assert counter.count(out[0]["content"]) * 3 <= counter.count(text)
    assert json.loads(out[0]["content"])["total"] == 300
    assert out[0]["tool_call_id"] == "1"


def test_code_blocks_stay_verbatim(fast_scorer, counter, chunks):
    conv = conversation(fast_scorer, counter, rate=0.3)
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    text = f"{chunks[0]}\n{code}\n{chunks[1]}"
    out = conv.run(conv.plan([{"role": "assistant", "content": text}])).messages[0]["content"]
    assert code in out and counter.count(out) < counter.count(text)


def test_many_short_messages_are_one_batch(fast_scorer, counter, chunks):
    calls = []
    real = fast_scorer.logprobs_ids

    class Counting:
        def __getattr__(self, name):
            return getattr(fast_scorer, name)

        def logprobs_ids(self, ids, **kw):
            calls.append(len(ids))
            return real(ids, **kw)

    compressor = get_compressor("llmlingua", scorer=Counting(), counter=counter, min_tokens=0)
    conv = ConversationCompressor(compressor, counter, cache=LRUMessageCache(), target="x")
    messages = [{"role": "user", "content": chunks[i][:400]} for i in range(12)]
    result = conv.run(conv.plan(messages))
    assert result.count("compressed") == 12
    assert len(calls) <= 2 and sum(calls) == 12  # 12 messages, one or two model calls


def test_a_stop_leaves_the_rest_verbatim_and_unremembered(fast_scorer, counter, chunks):
    cache = LRUMessageCache()
    conv = conversation(fast_scorer, counter, cache=cache)
    messages = [{"role": "user", "content": c} for c in chunks[:3]]
    result = conv.run(conv.plan(messages), should_stop=lambda: "deadline passed")
    assert result.stopped == "deadline passed" and result.messages == messages
    assert result.count("skipped") == 3 and len(cache) == 0

    class Gone:
        def __getattr__(self, name):
            return getattr(fast_scorer, name)

        def logprobs_ids(self, ids, **kw):
            raise Stopped("client disconnected")

    compressor = get_compressor("llmlingua", scorer=Gone(), counter=counter, min_tokens=0)
    conv = ConversationCompressor(compressor, counter, cache=cache, target="x")
    result = conv.run(conv.plan([{"role": "user", "content": chunks[0]}]))
    assert result.stopped == "client disconnected" and len(cache) == 0


def test_the_size_cap_bounds_new_work(fast_scorer, counter, chunks):
    conv = conversation(fast_scorer, counter, batch_tokens=64)
    messages = [{"role": "user", "content": c} for c in chunks[:6]]
    result = conv.run(conv.plan(messages), max_new_tokens=300)
    assert 0 < result.count("compressed") < 6 and "size cap" in result.stopped
    assert result.new_tokens <= 300


def test_the_question_is_the_last_line_or_sentence():
    assert split_question("story\n\nWho did it?") == ("story\n\n", "Who did it?")
    long = "A. " * 200 + "Then he left. Who did it?"
    body, question = split_question(long)
    assert question == " Who did it?" and body + question == long
    one = "The code is 3614. It opens the stable. Which door does it open?"
    assert split_question(one) == (
        "The code is 3614. It opens the stable.",
        " Which door does it open?",
    )


def test_the_cache_is_bounded():
    cache = LRUMessageCache(max_entries=3)
    for i in range(10):
        cache.put(str(i), f"text {i}")
    assert len(cache) == 3 and cache.get("9") == "text 9" and cache.get("0") is None
    small = LRUMessageCache(max_chars=80)
    small.put("big", "x" * 50)  # over an eighth of the room: not kept
    assert small.get("big") is None


@pytest.mark.parametrize("method", ["llmlingua", "longllmlingua", "selective-context"])
def test_every_method_never_adds_tokens(fast_scorer, counter, chunks, method):
    conv = conversation(fast_scorer, counter, method=method, batch_tokens=0)
    messages = [{"role": "user", "content": chunks[5]}, {"role": "assistant", "content": "ok"}]
    out = conv.run(conv.plan(messages)).messages
    assert all(
        counter.count(a["content"]) <= counter.count(b["content"])
        for a, b in zip(out, messages, strict=True)
    )


def test_a_token_target_reuses_earlier_forms_at_any_rate(fast_scorer, counter, chunks):
    cache = LRUMessageCache()
    first = [{"role": "user", "content": chunks[0]}]
    sent = conversation(fast_scorer, counter, cache=cache, rate=0.5).run(
        conversation(fast_scorer, counter, cache=cache, rate=0.5).plan(first)
    )
    # The next turn's target fits only at a lower rate: the first message keeps its bytes.
    later = conversation(fast_scorer, counter, cache=cache, rate=0.3)
    second = [*first, {"role": "user", "content": chunks[1]}]
    result = later.run(later.plan(second, sticky=True))
    assert result.outcomes == {0: "cached", 1: "compressed"}
    assert result.messages[0] == sent.messages[0]
    # Without sticky (the target did not hold), the first message is compressed at 0.3 too.
    again = later.run(later.plan(second))
    assert again.outcomes == {0: "compressed", 1: "cached"}
    assert counter.count(again.messages[0]["content"]) < counter.count(sent.messages[0]["content"])


def test_a_passage_is_ranked_by_the_question_that_follows_it(compressors, counter, stories):
    """A document message, then the question as its own message: the document's sentences are
    ranked by that question, so the one that answers it is forwarded whole."""
    from tests.compression.test_llmlingua2 import NEEDLE, planted

    document = planted(stories[2]["context"])
    c = ConversationCompressor(
        compressors["llmlingua2"], counter, cache=LRUMessageCache(), target="gpt-4o", rate=0.33
    )
    messages = [
        {"role": "user", "content": document},
        {"role": "user", "content": "What is the code for the stable?"},
    ]
    result = c.run(c.plan(messages))
    sent = result.messages[0]["content"]
    assert NEEDLE in sent and counter.count(sent) < 0.45 * counter.count(document)
    assert result.messages[1] == messages[1]
    # A later turn forwards the same bytes, whatever it asks now.
    later = [
        *messages,
        {"role": "assistant", "content": "3614."},
        {"role": "user", "content": "Why?"},
    ]
    again = c.run(c.plan(later))
    assert again.messages[0]["content"] == sent and again.outcomes[0] == "cached"
