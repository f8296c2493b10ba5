"""Content by type: JSON compressed by structure (still JSON, asked records kept, elisions
reversible), code kept, prose split out."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.compression.elision import handles_in
from thresher.compression.jsonpack import COLUMNS, ROWS, dumps, pack, packable, unpack
from thresher.compression.jsonselect import is_elision_marker, is_error, outliers
from thresher.compression.structured import compress_json, split_segments
from thresher.compression.terms import Terms

WORDS = ["sales", "grew", "in", "the", "north"]
CUT = re.compile(r"… \d+ chars? elided \[thr:[0-9a-f]{8}\] …$")


def tool_output(n: int = 300, seed: int = 0) -> dict:
    """A search tool's answer: many similar rows, one failure and one slow outlier."""
    rng = random.Random(seed)
    rows = [
        {
            "id": i,
            "title": f"Result number {i} about the quarterly report",
            "url": f"https://example.com/docs/{i}",
            "status": "ok",
            "latency_ms": rng.randint(20, 40),
            "snippet": " ".join(rng.choice(WORDS) for _ in range(12)),
        }
        for i in range(n)
    ]
    rows[140] = {**rows[140], "status": "error", "error": "upstream timed out"}
    rows[200] = {**rows[200], "latency_ms": 9000}
    return {"query": "quarterly report", "total": n, "results": rows, "next_page": None}


def contains(value, record) -> bool:
    """Whether ``record`` is somewhere inside ``value``, whole."""
    stack = [value]
    while stack:
        node = stack.pop()
        if node == record:
            return True
        if isinstance(node, dict):
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return False


def restore(text: str, elided) -> object:
    """The original value from a compressed text and its elided spans: every marker is
    replaced by what it stands for."""
    spans = {e.handle: e for e in elided}

    def walk(node):
        if isinstance(node, list):
            out = []
            for item in node:
                if is_elision_marker(item):
                    out += json.loads(spans[handles_in(item)[0]].content)
                else:
                    out.append(walk(item))
            return out
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if is_elision_marker(k):
                    out.update(json.loads(spans[handles_in(k)[0]].content))
                else:
                    out[k] = walk(v)
            return out
        cut = CUT.search(node) if isinstance(node, str) else None
        if cut is not None:
            return node[: cut.start()] + spans[handles_in(cut.group())[0]].content
        return node

    return walk(unpack(json.loads(text)))


def test_five_thousand_tokens_of_tool_json_shrink_3x_and_still_parse(counter):
    original = tool_output()
    text = json.dumps(original, indent=2)
    tokens = counter.count(text)
    assert tokens > 5000
    out = compress_json(text, tokens // 3, counter.count)
    assert counter.count(out.text) * 3 <= tokens
    value = unpack(json.loads(out.text))
    assert set(value) == {"query", "total", "results", "next_page"}  # keys and shape kept
    rows = value["results"]
    kept = [r for r in rows if isinstance(r, dict)]
    assert kept[0]["id"] == 0 and kept[-1]["id"] == 299  # first and last items
    assert {140, 200} <= {r["id"] for r in kept}  # the failure and the outlier
    elided = [r for r in rows if isinstance(r, str)]
    assert elided and all(is_elision_marker(r) for r in elided)
    assert len(kept) + sum(int(r.split()[1]) for r in elided) == 300  # the counts add up
    assert restore(out.text, out.elided) == original  # every elided span comes back


def test_lossless_first_when_it_fits(counter):
    original = tool_output()
    original["results"] = original["results"][130:170]  # one row with an extra "error" key
    text = json.dumps(original, indent=2)
    lossless = dumps(pack(original))
    tokens = counter.count(text)
    share = max(counter.count(lossless) / tokens, len(lossless) / len(text))
    out = compress_json(text, math.ceil(share * tokens), counter.count)
    assert out.text == lossless and not out.elided
    table = json.loads(out.text)["results"]
    assert table[COLUMNS][:2] == ["id", "title"] and len(table[ROWS]) == 40
    assert isinstance(table[ROWS][10], dict) and table[ROWS][10]["error"]  # the odd one out
    assert unpack(json.loads(out.text)) == original


def test_what_is_not_json_or_fits_comes_back_unchanged(counter):
    for text in ["plain words", "{not json", "[1, 2", "42", "[" * 3000 + "]" * 3000]:
        assert compress_json(text, 1, counter.count).text == text
    assert compress_json('{"a": 1}', 100, counter.count).text == '{"a": 1}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["a", "b", "id", "$columns", "$rows"]), children, max_size=4
        )
    ),
    max_leaves=30,
)


@given(json_values)
def test_packing_is_lossless(value):
    if packable(value):
        assert unpack(json.loads(dumps(pack(value)))) == value


@given(st.lists(st.fixed_dictionaries({"id": st.integers(), "v": json_values}), max_size=8))
def test_uniform_records_become_one_table(rows):
    packed = pack(rows)
    if len(rows) >= 2:
        assert sorted(packed[COLUMNS]) == ["id", "v"] and len(packed[ROWS]) == len(rows)
    if packable(rows):
        assert unpack(json.loads(dumps(packed))) == rows


def test_the_asked_record_in_the_middle_survives(counter):
    rows = [
        {"id": 4000 + i, "name": f"Person {i}", "email": f"p{i}@example.com"} for i in range(120)
    ]
    text = json.dumps(rows)
    tokens = counter.count(text)
    out = compress_json(text, round(0.33 * tokens), counter.count, "What is the email of 4063?")
    assert contains(unpack(json.loads(out.text)), rows[63])
    assert len(out.text) <= 0.35 * len(text)


def test_named_records_are_never_elided_however_small_the_budget(counter):
    rows = [{"id": f"ORD-{1000 + i}", "total": i * 3} for i in range(200)]
    text = json.dumps(rows)
    out = compress_json(text, 5, counter.count, "Compare ORD-1017, ORD-1101 and ORD-1188.")
    value = unpack(json.loads(out.text))
    assert all(contains(value, rows[i]) for i in (17, 101, 188))


def test_a_value_many_items_share_does_not_name_them(counter):
    rows = [{"id": i, "year": 2024, "city": "Porto" if i % 2 else "Lyon"} for i in range(100)]
    text = json.dumps(rows)
    out = compress_json(
        text, counter.count(text) // 4, counter.count, "What happened in 2024 in Lyon?"
    )
    assert len(out.text) < 0.35 * len(text)  # 2024 and Lyon describe, they do not identify


def test_nested_collections_keep_the_asked_record_whole(counter):
    runs = [
        {"run": 7700 + i, "steps": [{"name": f"s{j}", "ms": 100 + j} for j in range(8)]}
        for i in range(40)
    ]
    text = json.dumps({"runs": runs})
    out = compress_json(text, counter.count(text) // 3, counter.count, "What did run 7712 do?")
    value = unpack(json.loads(out.text))
    assert contains(value, runs[12])
    assert len(out.text) <= 0.35 * len(text)


def test_long_strings_are_cut_with_a_handle_when_items_cannot_make_room(counter):
    value = {"title": "Report", "body": "The tide rose over the harbour wall. " * 300}
    text = json.dumps(value)
    out = compress_json(text, counter.count(text) // 5, counter.count, "What rose?")
    body = json.loads(out.text)["body"]
    assert body.startswith("The tide rose") and "chars elided [thr:" in body
    assert restore(out.text, out.elided) == value


def test_handles_are_stable_and_name_what_they_stand_for(counter):
    text = json.dumps(tool_output())
    a = compress_json(text, 1500, counter.count, "Which result failed?")
    b = compress_json(text, 1500, counter.count, "Which result failed?")
    assert a.text == b.text and [e.handle for e in a.elided] == handles_in(a.text)
    assert all(e.where.startswith("$.results[") and e.kind == "items" for e in a.elided)


def test_question_terms():
    terms = Terms.of('Which plan is Ada Novak on, and what about "spring sale" and ORD-0057?')
    assert ("ada novak", "ada", "novak") in terms.named
    assert ("spring sale",) in terms.named and ("ord 57", "57") in terms.named
    assert "plan" in terms.weak and "which" not in terms.weak
    assert Terms.of("Show me everything.").named == ()  # an opening word names nothing


def test_errors_and_outliers_are_found():
    assert is_error({"status": "failed"}) and is_error({"error": "boom"})
    assert is_error({"status": 503}) and is_error("Traceback: KeyError")
    assert not is_error({"status": "ok", "error": None}) and not is_error("all good")
    values = [10, 11, 12, 10, 11, 500, 12, 11]
    assert outliers(values) == [5]
    assert outliers([{"v": 1}] * 40 + [{"v": 99}]) == [40]


def test_fenced_code_and_json_fences_are_their_own_segments():
    text = 'Run this:\n```python\nprint(1)\n```\nand read\n```json\n{"a": [1, 2]}\n```\nDone.'
    segments = split_segments(text)
    assert "".join(s.text for s in segments) == text
    assert [s.kind for s in segments] == ["prose", "code", "prose", "code", "json", "code", "prose"]
    assert split_segments('  {"a": 1}\n')[0].kind == "json"


def test_long_json_inside_prose_is_its_own_segment():
    payload = json.dumps(tool_output()["results"][:4])
    text = f"The search tool answered: {payload} and that was all."
    kinds = [(s.kind, s.text[:10]) for s in split_segments(text)]
    assert [k for k, _ in kinds] == ["prose", "json", "prose"]
    assert [s.kind for s in split_segments('a short {"k": 1} aside')] == ["prose"]


@given(st.text(alphabet=st.sampled_from(list('ab \n`{}[]":,1')), max_size=200))
def test_segments_always_join_back_to_the_text(text):
    assert "".join(s.text for s in split_segments(text)) == text


@pytest.mark.parametrize("rate", [0.2, 0.33, 0.5])
def test_every_tool_case_keeps_its_asked_records(counter, data_dir, rate):
    """The committed tool-output cases (bench/content_cases.py): every asked record present,
    valid JSON, at most the rate's share of characters and tokens (plus 2 points)."""
    for line in (data_dir / "content" / "tool_cases.jsonl").open():
        case = json.loads(line)
        text = case["content"]
        tokens = counter.count(text)
        out = compress_json(text, round(rate * tokens), counter.count, case["question"])
        value = unpack(json.loads(out.text))
        assert all(contains(value, r) for r in case["asked"]), case["name"]
        assert len(out.text) <= (rate + 0.02) * len(text), case["name"]
        assert counter.count(out.text) <= (rate + 0.02) * tokens, case["name"]
        assert restore(out.text, out.elided) == json.loads(text), case["name"]


wide_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.text("abc xyz.", max_size=30),
    lambda children: (
        st.lists(children, max_size=12)
        | st.dictionaries(st.sampled_from(["id", "name", "v", "items", "k"]), children, max_size=5)
    ),
    max_leaves=120,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(wide_values, st.sampled_from(["", "What is 42?", 'Where is "abc"?', "Which xyz failed?"]),
       st.floats(0.05, 1.0))  # fmt: skip
def test_any_json_compresses_to_json_that_restores(counter, value, question, rate):
    text = json.dumps(value, indent=1)
    tokens = counter.count(text)
    out = compress_json(text, max(1, round(rate * tokens)), counter.count, question)
    assert counter.count(out.text) <= tokens
    assert restore(out.text, out.elided) == value
