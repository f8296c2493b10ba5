"""Content by type: JSON compressed by structure (still JSON), code kept, prose split out."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from thresher.compression.structured import (
    compress_json,
    is_error,
    outliers,
    shrink,
    split_segments,
)

WORDS = ["sales", "grew", "in", "the", "north"]


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


def test_five_thousand_tokens_of_tool_json_shrink_3x_and_still_parse(counter):
    text = json.dumps(tool_output(), indent=2)
    tokens = counter.count(text)
    assert tokens > 5000
    out = compress_json(text, tokens // 3, counter.count)
    assert counter.count(out) * 3 <= tokens
    value = json.loads(out)
    assert set(value) == {"query", "total", "results", "next_page"}  # keys and shape kept
    rows = value["results"]
    kept = [r for r in rows if isinstance(r, dict)]
    assert kept[0]["id"] == 0 and kept[-1]["id"] == 299  # first and last items
    assert {140, 200} <= {r["id"] for r in kept}  # the failure and the outlier
    assert all(set(r) >= {"id", "title", "status"} for r in kept)
    elided = [r for r in rows if isinstance(r, str)]
    assert elided and all("more items" in r for r in elided)
    assert len(kept) + sum(int(r.split()[1]) for r in elided) == 300  # the counts add up


def test_what_is_not_json_comes_back_unchanged(counter):
    for text in ["plain words", "{not json", "[1, 2", "42"]:
        assert compress_json(text, 1, counter.count) == text


def test_shrink_keeps_scalars_and_cuts_long_strings():
    value = {"a": "x" * 1000, "b": [1, 2, 3], "c": {"d": True, "e": None}}
    out = shrink(value, 2, 50)
    assert out["a"].startswith("x" * 50) and "+950 chars" in out["a"]
    assert out["c"] == {"d": True, "e": None}
    assert out["b"][0] == 1 and out["b"][-1] == 3


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


def test_long_json_inside_prose_is_its_own_segment(counter):
    payload = json.dumps(tool_output()["results"][:4])
    text = f"The search tool answered: {payload} and that was all."
    kinds = [(s.kind, s.text[:10]) for s in split_segments(text)]
    assert [k for k, _ in kinds] == ["prose", "json", "prose"]
    assert [s.kind for s in split_segments('a short {"k": 1} aside')] == ["prose"]


@given(st.text(alphabet=st.sampled_from(list('ab \n`{}[]":,1')), max_size=200))
def test_segments_always_join_back_to_the_text(text):
    assert "".join(s.text for s in split_segments(text)) == text
