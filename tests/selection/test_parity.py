"""The default recipe keeps the same rows however a job runs, and whatever format it reads.

Every statistic a step learns is fitted over the whole input first, from statistics that merge
across batches and shards; these tests hold that promise to the shipped `instruction-quality`
recipe on real instruction rows with seeded defects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selection_helpers import read_jsonl, write_jsonl

from thresher import selection
from thresher.selection.recipes import builtin_recipe

DATA = Path(__file__).resolve().parents[1] / "data" / "quality" / "instructions_small.jsonl"


def run(tmp: Path, name: str, path: Path = DATA, executor: str = "local", keep_work=False,
        address: str | None = None, **settings):  # fmt: skip
    recipe = builtin_recipe("instruction-quality")
    recipe["inputs"] = [{"path": str(path), "shape": "auto"}]
    recipe["output"] = {"path": str(tmp / name / "kept.jsonl"), "write_dropped": True}
    recipe.update(settings)
    return selection.run_recipe(
        recipe,
        tmp / name,
        executor=executor,  # type: ignore[arg-type]
        address=address,
        progress=False,
        keep_work=keep_work,
    )


def verdicts(result) -> dict[str, str]:
    """Row id -> 'kept' or the step that dropped it and why."""
    out = {r["id"]: "kept" for r in read_jsonl(result.output_path)}
    for row in read_jsonl(result.dropped_path):
        out[row["id"]] = f"{row['step']}: {row['reason']}"
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    result = run(tmp_path_factory.mktemp("reference"), "one-batch", batch_size=100_000)
    return verdicts(result), result.output_path.read_bytes()


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the default batch size
        {"batch_size": 7},
        {"batch_size": 50, "shard_bytes": 60_000},  # several shards in one process
        {"batch_size": 50, "shard_bytes": 60_000, "workers": 2},
    ],
    ids=["default", "batch-7", "shards", "shards-2-workers"],
)
def test_same_rows_for_any_batch_shard_and_worker_count(tmp_path, reference, settings):
    result = run(tmp_path, "job", **settings)
    assert verdicts(result) == reference[0]
    assert result.output_path.read_bytes() == reference[1]


def test_same_rows_after_a_resume_mid_pass(tmp_path, reference):
    first = run(tmp_path, "job", batch_size=20, shard_bytes=60_000, keep_work=True)
    assert verdicts(first) == reference[0]
    work = tmp_path / "job" / ".work"
    # Pretend the job was killed in pass 3 (near-duplicate signatures) after half its shards:
    # the pass's end, the other half, its shuffle's results and everything after are gone.
    (work / "pass-2" / "done.json").unlink()
    shards = sorted((work / "pass-2").glob("shard-*.npz"))
    assert len(shards) > 2
    for path in shards[::2]:
        path.unlink()
    group = work / "group-2"
    for path in [group / "done.json", *group.glob("drops-*"), *group.glob("edges-*"),
                 *(work / "final").glob("*")]:  # fmt: skip
        path.unlink()
    first.output_path.unlink()
    again = run(tmp_path, "job", batch_size=20, shard_bytes=60_000)
    assert again.resumed
    assert verdicts(again) == reference[0]
    assert again.output_path.read_bytes() == reference[1]
    assert not work.exists()  # removed once the job succeeded (keep_work=False)


def test_the_19_row_file_keeps_rows_that_only_share_a_template(tmp_path):
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    labelled = {
        json.loads(line)["id"]
        for line in (DATA.parent / "instructions_small_labels.jsonl").read_text().splitlines()
    }
    template = rows[0]["instruction"]
    clean = [r for r in rows if r["instruction"] == template and r["id"] not in labelled][:19]
    path = write_jsonl(tmp_path / "small.jsonl", clean)
    result = run(tmp_path, "job", path=path)
    assert verdicts(result) == {r["id"]: "kept" for r in clean}


def request(row: dict) -> str:
    """An Alpaca row's request as chat converters write it."""
    given = row["input"].strip()
    return f"{row['instruction']}\n\n{row['input']}" if given else row["instruction"]


def as_sharegpt(row: dict) -> dict:
    turns = [{"from": "human", "value": request(row)}, {"from": "gpt", "value": row["output"]}]
    return {"id": row["id"], "conversations": turns}


def as_messages(row: dict) -> dict:
    user = request(row)
    return {"id": row["id"], "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": user},
        {"role": "assistant", "content": row["output"]},
    ]}  # fmt: skip


@pytest.mark.parametrize("convert", [as_sharegpt, as_messages], ids=["sharegpt", "messages"])
def test_same_verdicts_in_every_format(tmp_path, reference, convert):
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    path = write_jsonl(tmp_path / "converted.jsonl", [convert(r) for r in rows])
    assert verdicts(run(tmp_path, "job", path=path)) == reference[0]


def test_ray_keeps_the_same_rows(tmp_path, reference, ray_cluster):
    result = run(tmp_path, "ray", executor="ray", address=ray_cluster.address, batch_size=40,
                 shard_bytes=60_000)  # fmt: skip
    assert verdicts(result) == reference[0]
    assert result.output_path.read_bytes() == reference[1]
