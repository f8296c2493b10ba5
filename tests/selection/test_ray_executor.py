"""The same recipe and seed select the same rows on the local executor and on Ray Data."""

import pytest
from selection_helpers import read_jsonl

from thresher import selection

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    from thresher.selection.executors.ray_data import init_local_ray

    init_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_ray_and_local_select_the_same_rows(tmp_path, raw_path, target_path, local_ray):
    recipe = {
        "inputs": [str(raw_path)],
        "batch_size": 400,
        "shard_bytes": 250_000,  # several shards inside the one file
        "workers": 2,
        "seed": 11,
        "steps": [
            {"type": "length"},
            {"type": "threshold", "score": "length", "min": 5},
            {"type": "dsir", "target": [str(target_path)], "num": 200},
            {"type": "top_k", "score": "length", "k": 150},
        ],
    }
    local = selection.run_recipe(recipe, tmp_path / "local", progress=False)
    on_ray = selection.run_recipe(recipe, tmp_path / "ray", executor="ray", progress=False)
    ids = [r["id"] for r in read_jsonl(local.output_path)]
    assert len(ids) == 150
    assert [r["id"] for r in read_jsonl(on_ray.output_path)] == ids
    assert on_ray.output_path.read_bytes() == local.output_path.read_bytes()
    assert [s.__dict__ for s in on_ray.report.steps] == [s.__dict__ for s in local.report.steps]
    assert on_ray.report.metrics["dsir"] == pytest.approx(local.report.metrics["dsir"])


def test_a_bad_row_under_strict_is_the_same_error_on_ray(tmp_path, raw_path, local_ray):
    from thresher.core.errors import InputError

    lines = raw_path.read_bytes().splitlines(keepends=True)[:50]
    lines[9] = b"{not json\n"
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"".join(lines))
    recipe = {"inputs": [str(damaged)], "steps": [{"type": "length"}], "strict": True}
    with pytest.raises(InputError, match=f"{damaged}:10:"):
        selection.run_recipe(recipe, tmp_path / "job", executor="ray", progress=False)
    relaxed = selection.run_recipe(
        recipe, tmp_path / "job", executor="ray", progress=False, strict=False
    )
    assert relaxed.report.rejects == 1 and relaxed.report.rows_read == 49
