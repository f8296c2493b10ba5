import pytest

from thresher.core import InputError, Record, apply_scorer, validate_messages


def test_record_content_from_text_or_messages():
    assert Record("a", text="hello").content == "hello"
    chat = Record(
        "b",
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "yo"}]},
        ],
    )
    assert chat.content == "hi\nyo"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"id": ""}, "id"),
        ({"id": "x"}, "text"),
        ({"id": "x", "messages": []}, "record 'x' messages"),
        (
            {"id": "x", "messages": [{"role": "robot", "content": "hi"}]},
            "record 'x' messages[0].role",
        ),
    ],
)
def test_bad_records_name_the_field(kwargs, field):
    with pytest.raises(InputError) as info:
        Record(**kwargs)
    assert info.value.field == field


def test_messages_without_content_are_rejected():
    with pytest.raises(InputError, match=r"messages\[1\] has no content"):
        validate_messages([{"role": "user", "content": "a"}, {"role": "assistant"}])


def test_apply_scorer_writes_scores_and_checks_shape():
    import numpy as np

    class Length:
        name = "length"

        def score(self, records):
            return np.array([len(r.content) for r in records])

    class Broken:
        name = "broken"

        def score(self, records):
            return np.zeros(len(records) + 1)

    records = [Record("a", text="ab"), Record("b", text="abcd")]
    apply_scorer(Length(), records)
    assert [r.scores["length"] for r in records] == [2.0, 4.0]
    with pytest.raises(ValueError, match="broken"):
        apply_scorer(Broken(), records)
