"""Markdown, transcripts and code through every compression method: the structure that survives
(link targets, images, headings, table rows, speaker labels, code lines) is byte-identical to
the original's; only the prose inside is compressed."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.compression import METHODS
from thresher.compression.code import compress_code, names_identifier
from thresher.compression.conversation import ConversationCompressor, LRUMessageCache
from thresher.compression.markup import code_blocks, label_end, speaker_labels
from thresher.compression.structured import split_segments

WORDS = (
    "the harbour master said that the evening ferry would leave early because a storm was "
    "coming from the north and every passenger should carry a warm coat and a small lamp"
).split()
SETTINGS = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
sentence = st.lists(st.sampled_from(WORDS), min_size=8, max_size=16).map(
    lambda ws: " ".join(ws).capitalize() + "."
)
slug = st.text("abcdefghij", min_size=3, max_size=8)
LINK = re.compile(r"\]\([^)\n]*\)")
IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")


@st.composite
def markdown_doc(draw) -> str:
    parts = [f"# {draw(slug).capitalize()} notes", ""]
    for k in range(draw(st.integers(2, 3))):
        parts += [f"## Part {k}", ""]
        parts.append(
            f"{draw(sentence)} See [the {draw(slug)} page](https://example.com/{draw(slug)}?k={k}) "
            f"and {draw(sentence)}"
        )
        parts.append(f"![figure {k}](https://img.example.com/{draw(slug)}.png) {draw(sentence)}")
        parts += ["", f"- {draw(sentence)}", f"- {draw(sentence)}", f"1. {draw(sentence)}", ""]
        parts += ["| name | note |", "|------|------|"]
        parts += [f"| {draw(slug)} | {draw(sentence)} |" for _ in range(3)]
        parts += ["", draw(sentence) + " " + draw(sentence), ""]
    return "\n".join(parts)


@st.composite
def transcript(draw) -> str:
    speakers = ["Alice", "Bob", "Dr. Okafor", "Speaker 2"]
    lines = []
    for i in range(draw(st.integers(14, 18))):
        label = speakers[i % len(speakers)]
        stamp = f"[10:{i:02d}] " if i % 3 == 0 else ""
        lines.append(f"{stamp}{label}: {draw(sentence)} {draw(sentence)}")
    return "\n".join(lines)


CODE = '''```python
import json


# Load the settings file and merge the defaults into it; the defaults
# come from the package and the file may leave any of them out.
# A missing file is not an error.
def load_settings(path, defaults):
    """Read settings from path."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {}

    # every key the file leaves out takes the default
    return {**defaults, **data}


TABLE = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
```'''


def check_markdown(original: str, out: str) -> None:
    for target in LINK.findall(original):
        assert target in out, target
    for image in IMAGE.findall(original):
        assert image in out, image
    kept_lines = out.split("\n")
    for line in original.split("\n"):
        if line.startswith("#") or line.startswith("|---"):
            assert line in kept_lines, line
    rows = [line for line in out.split("\n") if line.startswith("|")]
    assert len(rows) == sum(1 for line in original.split("\n") if line.startswith("|"))
    assert all(row.count("|") == 3 for row in rows), rows


def check_labels(original: str, out: str) -> None:
    labels = [original[a:b].strip() for a, b in speaker_labels(original)]
    found = [line[: label_end(line)].strip() for line in out.split("\n") if label_end(line)]
    assert found == labels


@SETTINGS
@given(markdown_doc(), st.sampled_from(sorted(METHODS)))
def test_markdown_structure_survives_every_method(compressors, doc, name):
    result = compressors[name].compress(doc, rate=0.33)
    assert result.compressed_tokens < result.origin_tokens
    check_markdown(doc, result.text)


@SETTINGS
@given(transcript(), st.sampled_from(sorted(METHODS)))
def test_speaker_labels_survive_every_method(compressors, text, name):
    result = compressors[name].compress(text, rate=0.33)
    assert result.compressed_tokens < result.origin_tokens
    check_labels(text, result.text)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_code_lines_survive_whole_in_every_method(compressors, name):
    unfenced = CODE.split("\n", 1)[1].rsplit("\n", 1)[0]
    text = f"{' '.join(WORDS * 3)}.\n{unfenced}\n{' '.join(WORDS * 3)}."
    result = compressors[name].compress(text, rate=0.33)
    original = set(text.split("\n"))
    code = [line for line in result.text.split("\n") if line.startswith(("def ", "    ", "TABLE"))]
    assert code and all(line in original for line in code)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_conversation_keeps_structure_in_every_method(compressors, counter, name):
    doc = "\n".join(
        [
            "# Ferry notes",
            "",
            " ".join(WORDS) + ". See [the timetable](https://example.com/t?d=1) today.",
            "![map](https://img.example.com/map.png) " + " ".join(WORDS[:12]) + ".",
            "",
            "| stop | note |",
            "|------|------|",
            *(f"| s{i} | {' '.join(WORDS[i : i + 9])} |" for i in range(6)),
            "",
            " ".join(reversed(WORDS)) + ".",
        ]
    )
    chat = "\n".join(f"{'Alice' if i % 2 else 'Bob'}: {' '.join(WORDS[i:])}." for i in range(8))
    conv = ConversationCompressor(
        compressors[name], counter, cache=LRUMessageCache(), target="gpt-4o", rate=0.33
    )
    messages = [
        {"role": "user", "content": doc},
        {"role": "assistant", "content": chat},
        {"role": "tool", "content": CODE},
        {"role": "user", "content": "What does the harbour master say?"},
    ]
    result = conv.run(conv.plan(messages))
    out = [m["content"] for m in result.messages]
    check_markdown(doc, out[0])
    check_labels(chat, out[1])
    original = set(CODE.split("\n"))
    assert all(line in original or "lines elided [thr:" in line for line in out[2].split("\n"))


def test_code_loses_blank_lines_comments_and_literals_first(counter):
    tokens = counter.count(CODE)
    out = compress_code(CODE, tokens // 2, counter.count, "How is the file read?")
    lines = out.text.split("\n")
    assert "def load_settings(path, defaults):" in lines and "```python" in lines
    assert not any(line.strip().startswith("# Load") for line in lines)
    assert any("lines elided [thr:" in line for line in lines) and out.elided
    assert all(line in CODE.split("\n") or "elided [thr:" in line for line in lines)
    for gone in out.elided:  # each handle's original is the lines it stands for
        assert gone.content in CODE


def test_code_stays_verbatim_when_the_question_names_it(counter):
    assert names_identifier(CODE, "What does load_settings return?")
    assert names_identifier(CODE, "Why does loadSettings catch FileNotFoundError?")
    assert not names_identifier(CODE, "What is this?")
    out = compress_code(CODE, 10, counter.count, "What does load_settings return?")
    assert out.text == CODE and not out.elided


def test_unfenced_code_is_a_segment_of_its_own():
    text = (
        "The loader is below.\nimport json\ndef load(p):\n    return json.load(open(p))\n"
        "It is short. And it works well for us.\n"
    )
    assert [s.kind for s in split_segments(text)] == ["prose", "code", "prose"]
    assert code_blocks("Dear Ann,\nthe meeting moved (again) to Friday.\nBest, Bo\n") == []


def test_a_tool_result_is_ranked_by_the_question_before_it(compressors, counter, data_dir):
    """A tool result after the last user turn keeps the record that turn asks about, and the
    result lists the spans elided from it (their handles are in the forwarded text)."""
    import json

    from thresher.compression.elision import handles_in

    case = next(
        json.loads(line)
        for line in (data_dir / "content" / "tool_cases.jsonl").open()
        if '"customers_by_id"' in line
    )
    call = {"id": "c1", "type": "function", "function": {"name": "find", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": case["question"]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": case["content"]},
    ]
    conv = ConversationCompressor(
        compressors["llmlingua2"], counter, cache=LRUMessageCache(), target="gpt-4o", rate=0.33
    )
    plan = conv.plan(messages)
    assert all(p.build is None for p in plan.pending)  # nothing is cut while planning
    result = conv.run(plan)
    sent = result.messages[2]["content"]
    assert case["answers"][0] in sent and len(sent) <= 0.35 * len(case["content"])
    assert sorted(e.handle for e in result.elided) == sorted(handles_in(sent))
