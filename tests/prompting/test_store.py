import json

import pytest

from thresher.core.errors import InputError, NotFoundError
from thresher.prompting import PoolStore, check_pool_name, read_demonstrations


@pytest.fixture()
def store(tmp_path, embedder):
    return PoolStore(tmp_path, lambda: embedder)


def test_create_get_add_remove_and_reload(store, intent_records, tmp_path, embedder):
    store.create("intent", intent_records[:20])
    assert store.names() == ["intent"] and len(store.get("intent")) == 20
    store.add("intent", intent_records[20:25])
    store.remove("intent", [intent_records[0].id])
    fresh = PoolStore(tmp_path, embedder)  # another process: reads what was saved
    assert len(fresh.get("intent")) == 24
    assert fresh.retriever("intent", "knn") is fresh.retriever("intent", "knn")


def test_store_errors_name_the_field(store, intent_records):
    with pytest.raises(NotFoundError) as info:
        store.get("ghost")
    assert info.value.field == "pool"
    store.create("p", intent_records[:3])
    with pytest.raises(InputError) as info:
        store.create("p", intent_records[:3])
    assert info.value.field == "name"
    assert len(store.create("p", intent_records[:4], replace=True)) == 4
    for bad in ["", "../etc", "a/b", "x" * 65]:
        with pytest.raises(InputError):
            check_pool_name(bad)


def test_read_demonstrations_maps_fields_and_reports_bad_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "hi", "y": "greet"}) + "\n\n" + json.dumps({"q": "yo"}) + "\n")
    records = list(read_demonstrations(path, text_field="q", label_field="y"))
    assert [r.id for r in records] == ["1", "3"] and records[0].metadata["label"] == "greet"
    with pytest.raises(InputError) as info:
        list(read_demonstrations(path))
    assert info.value.field == "text_field" and "d.jsonl:1" in str(info.value)
    path.write_text("{oops\n")
    with pytest.raises(InputError) as info:
        list(read_demonstrations(path))
    assert info.value.field == "input"
    with pytest.raises(NotFoundError):
        list(read_demonstrations(tmp_path / "none.jsonl"))
