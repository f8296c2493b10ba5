import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from selection_helpers import read_jsonl, write_jsonl

from thresher import selection
from thresher.selection.formats import row_to_record


def top_k_recipe(path, k=20, **extra):
    return {
        "inputs": [{"path": str(path), **extra.pop("input", {})}],
        "steps": [{"type": "length"}, {"type": "top_k", "score": "length", "k": k}],
        **extra,
    }


def read_any(path, fmt):
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "jsonl.gz":
        return [json.loads(x) for x in gzip.open(path, "rt", encoding="utf-8")]
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    import datasets

    return datasets.load_from_disk(str(path)).to_list()


def write_any(rows, path, fmt):
    if fmt == "jsonl":
        return write_jsonl(path, rows)
    if fmt == "jsonl.gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        return path
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
        return path
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


NAMES = {"jsonl": "in.jsonl", "jsonl.gz": "in.jsonl.gz", "parquet": "in.parquet", "hf": "in_ds"}
OUT = {"jsonl": "out.jsonl", "jsonl.gz": "out.jsonl.gz", "parquet": "out.parquet", "hf": "out_ds"}


# Every reader into jsonl, jsonl into every writer, and the two typed formats into themselves.
PAIRS = sorted(
    {(f, "jsonl") for f in NAMES}
    | {("jsonl", f) for f in OUT}
    | {("parquet", "parquet"), ("hf", "hf")}
)


@pytest.mark.parametrize(("fmt_in", "fmt_out"), PAIRS)
def test_every_format_round_trips_losslessly(tmp_path, raw_path, fmt_in, fmt_out):
    rows = read_jsonl(raw_path)[:300]
    source = write_any(rows, tmp_path / NAMES[fmt_in], fmt_in)
    recipe = top_k_recipe(source, k=25, output={"path": OUT[fmt_out]}, shard_bytes=20_000)
    result = selection.run_recipe(recipe, tmp_path / "job", progress=False)
    kept = read_any(result.output_path, fmt_out)
    by_id = {r["id"]: r for r in rows}
    assert len(kept) == 25
    for row in kept:
        scores = row.pop("thresher")
        assert row == by_id[row["id"]]  # every original field, unchanged
        assert scores["length"] == len(row["text"].split())
    lengths = sorted((len(r["text"].split()) for r in rows), reverse=True)
    assert min(len(r["text"].split()) for r in kept) == lengths[24]


def test_scores_go_to_a_side_file_by_option(tmp_path, raw_path):
    recipe = top_k_recipe(raw_path, output={"scores": "side"})
    result = selection.run_recipe(recipe, tmp_path, progress=False)
    kept = read_jsonl(result.output_path)
    side = read_jsonl(result.scores_path)
    assert all("thresher" not in r for r in kept)
    assert [s["id"] for s in side] == [r["id"] for r in kept]
    assert all(set(s["scores"]) == {"length"} for s in side)


def test_output_preserves_input_order(tmp_path, raw_path):
    result = selection.run_recipe(
        top_k_recipe(raw_path, k=200, shard_bytes=50_000), tmp_path, progress=False
    )
    order = {r["id"]: i for i, r in enumerate(read_jsonl(raw_path))}
    positions = [order[r["id"]] for r in read_jsonl(result.output_path)]
    assert positions == sorted(positions)


def _sharegpt(row):
    user = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
    return {
        "id": row["id"],
        "conversations": [
            {"from": "human", "value": user},
            {"from": "gpt", "value": row["output"]},
        ],
        "source": row["source"],
    }


def _openai(row):
    user = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
    return {
        "id": row["id"],
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": row["output"]},
        ],
    }


@pytest.mark.parametrize("shape", ["alpaca", "sharegpt", "openai", "auto"])
def test_instruction_shapes_map_to_the_same_messages(alpaca_path, shape):
    row = read_jsonl(alpaca_path)[0]
    made = {"alpaca": row, "auto": row, "sharegpt": _sharegpt(row), "openai": _openai(row)}[shape]
    record = row_to_record(
        made,
        shape=shape,
        text_field="text",
        id_field="id",
        default_id="x",
        pos=0,
        source="s",
        line=1,
    )
    assert record.id == row["id"]
    assert [m["role"] for m in record.messages] == ["user", "assistant"]
    assert record.messages[1]["content"] == row["output"]
    assert row["instruction"] in record.content
    assert record.metadata["row"] is made


def test_sharegpt_rows_keep_all_fields_on_write(tmp_path, alpaca_path):
    rows = [_sharegpt(r) for r in read_jsonl(alpaca_path)]
    source = write_jsonl(tmp_path / "sg.jsonl", rows)
    result = selection.run_recipe(top_k_recipe(source, k=10), tmp_path / "job", progress=False)
    kept = read_jsonl(result.output_path)
    by_id = {r["id"]: r for r in rows}
    assert len(kept) == 10
    assert all({k: v for k, v in r.items() if k != "thresher"} == by_id[r["id"]] for r in kept)


def test_plain_text_with_a_configured_field_and_no_ids(tmp_path, raw_path):
    rows = [{"body": r["text"], "origin": r["source"]} for r in read_jsonl(raw_path)[:50]]
    source = write_jsonl(tmp_path / "body.jsonl", rows)
    recipe = top_k_recipe(source, k=5, input={"text_field": "body", "shape": "text"})
    result = selection.run_recipe(recipe, tmp_path / "job", progress=False)
    kept = read_jsonl(result.output_path)
    assert len(kept) == 5 and all(set(r) == {"body", "origin", "thresher"} for r in kept)
    ids = [e["id"] for e in result.report.examples["kept"]]
    assert all(i.startswith("body.jsonl:") for i in ids)  # file:line ids when rows have none


@pytest.mark.parametrize(
    "steps",
    [
        [{"type": "dedup", "method": "exact", "prefer": "first"}],  # no scores at all
        [{"type": "length"}, {"type": "quality_rules"}],  # scores some rows lack (NaN)
    ],
)
def test_parquet_output_with_no_or_uneven_scores(tmp_path, alpaca_path, steps):
    recipe = {
        "inputs": [{"path": str(alpaca_path), "shape": "alpaca"}],
        "steps": steps,
        "batch_size": 30,
        "output": {"path": "kept.parquet", "scores": "inline"},
    }
    result = selection.run_recipe(recipe, tmp_path / "job", progress=False)
    table = pq.read_table(result.output_path)
    assert table.num_rows == result.report.rows_kept > 0
    if "thresher" in table.column_names:  # left out when no step writes a score
        scores = table.column("thresher").to_pylist()
        assert all(set(s) == {"length", "quality_rules.fluency"} for s in scores)
