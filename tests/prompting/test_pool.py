import json

import numpy as np
import pytest

from thresher.core.errors import ConfigError, InputError, NotFoundError
from thresher.prompting import IndexConfig, Pool, demonstration

KINDS = ["flat", "ivf", "hnsw"]


def test_fit_embeds_indexes_and_finds_each_record_first(intent_pool, intent_records):
    assert len(intent_pool) == len(intent_records)
    assert intent_pool.index_.kind == "flat"
    assert intent_pool.embeddings_.shape == (len(intent_records), intent_pool.embedder.dim)
    assert "get_weather" in intent_pool.labels_
    scores, rows = intent_pool.search(intent_pool.embeddings_[:5], 3)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_auto_index_switches_to_approximate_above_the_threshold(embedder, intent_records):
    assert IndexConfig().resolve(10) == "flat"
    assert IndexConfig(approximate_above=100).resolve(100) == "ivf"
    config = IndexConfig(approximate_above=50, approximate_kind="hnsw")
    pool = Pool(embedder, index=config).fit(intent_records[:60])
    assert pool.index_.kind == "hnsw"
    with pytest.raises(ConfigError) as info:
        IndexConfig(kind="annoy")
    assert info.value.field == "index"


def test_search_parameters_follow_the_pool_size_unless_set():
    config = IndexConfig()
    assert config.resolve_nlist(100_000) == 316 and config.resolve_nprobe(316) == 54
    assert config.resolve_nlist(1_000_000) == 1000 and config.resolve_nprobe(1000) == 95
    assert config.resolve_nlist(50) == 1 and config.resolve_nprobe(1) == 1
    assert config.resolve_ef_search(10) == 80 and config.resolve_ef_search(2) == 64
    fixed = IndexConfig(nlist=64, nprobe=8, ef_search=40)
    assert fixed.resolve_nlist(100_000) == 64 and fixed.resolve_nprobe(64) == 8
    assert fixed.resolve_ef_search(10) == 40
    with pytest.raises(ConfigError) as info:
        IndexConfig(nprobe=0)
    assert info.value.field == "nprobe"


def test_ivf_tuning_is_kept_through_save_and_load(embedder, intent_records, tmp_path):
    pool = Pool(embedder, index="ivf").fit(intent_records)
    assert pool.index_.params() == {"nlist": 3, "nprobe": 3}  # 120 records: 3 lists, all probed
    pool.index_.tune(nprobe=1)
    assert pool.index_.params()["nprobe"] == 1
    loaded = Pool.load(pool.save(tmp_path / "p"), embedder)
    assert loaded.index_.params() == {"nlist": 3, "nprobe": 1}


@pytest.mark.parametrize("kind", KINDS)
def test_add_and_remove_online_then_round_trip(embedder, intent_records, kind, tmp_path):
    pool = Pool(embedder, index=kind).fit(intent_records[:60])
    index_before = pool.index_.index
    new = demonstration("new-1", "Will it snow in Oslo on Friday morning?", label="get_weather")
    pool.add([new])
    assert pool.index_.index is index_before  # no rebuild
    _, rows = pool.search(pool.embed([new.text]), 1)
    assert pool.records_[rows[0, 0]].id == "new-1"

    gone = intent_records[0]
    pool.remove([gone.id])
    assert gone.id not in pool.row_of_ and len(pool) == 60
    _, rows = pool.search(pool.embed([gone.text]), 5)
    assert gone.id not in {pool.records_[r].id for r in rows[0] if r >= 0}

    pool.save(tmp_path / "pool")
    loaded = Pool.load(tmp_path / "pool", embedder)
    assert [r.id for r in loaded.records_] == [r.id for r in pool.records_]
    assert loaded.index_.kind == kind and loaded.labels_ == pool.labels_
    q = pool.embed(["book a table for four in Rome"])
    assert np.array_equal(loaded.search(q, 5)[1], pool.search(q, 5)[1])
    loaded.add([demonstration("new-2", "Play some Miles Davis", label="play_music")])
    assert loaded.get("new-2").metadata["label"] == "play_music"


def test_saved_folder_holds_index_records_and_json_config(intent_pool, tmp_path):
    intent_pool.save(tmp_path / "p")
    names = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"index.faiss", "records.jsonl", "config.json", "embeddings.npy"} <= names
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["embedder"] == "all-MiniLM-L6-v2" and config["size"] == len(intent_pool)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp left behind


def test_load_refuses_another_embedder(intent_pool, embedder, tmp_path):
    path = intent_pool.save(tmp_path / "p")
    config = json.loads((path / "config.json").read_text())
    config["embedder"] = "some-other-model"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        Pool.load(path, embedder)
    assert info.value.field == "embedder"
    with pytest.raises(NotFoundError):
        Pool.load(tmp_path / "missing", embedder)


def test_bad_records_name_the_field(embedder, intent_records):
    with pytest.raises(InputError) as info:
        Pool(embedder).fit([])
    assert info.value.field == "records"
    with pytest.raises(InputError) as info:
        Pool(embedder).fit([intent_records[0], intent_records[0]])
    assert info.value.field == "records[1].id"
    with pytest.raises(InputError) as info:
        demonstration("x", "   ")
    assert info.value.field == "text"


def test_remove_unknown_or_everything_is_refused(embedder, intent_records):
    pool = Pool(embedder).fit(intent_records[:3])
    with pytest.raises(NotFoundError):
        pool.remove(["nope"])
    with pytest.raises(InputError):
        pool.remove([r.id for r in intent_records[:3]])
