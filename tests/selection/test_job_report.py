import json

from selection_helpers import read_jsonl

from thresher import selection


def test_report_files_counts_histograms_and_examples(tmp_path, raw_path):
    recipe = {
        "inputs": [str(raw_path)],
        "output": {"write_dropped": True},
        "steps": [
            {"type": "length"},
            {"type": "threshold", "score": "length", "min": 8, "max": 120},
            {"type": "top_k", "score": "length", "k": 50},
        ],
    }
    result = selection.run_recipe(recipe, tmp_path, progress=False)
    folder = result.report_dir
    data = json.loads((folder / "report.json").read_text())
    assert data["rows_read"] == 3000 and data["rows_kept"] == 50
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["threshold"]["rows_in"] == 3000
    assert set(steps["threshold"]["reasons"]) == {"length < 8", "length > 120"}
    assert steps["top_k"]["rows_out"] == 50
    svg = (folder / "hist-length.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") > 10 and ">length</text>" in svg
    page = (folder / "report.html").read_text()
    for group in (
        "kept",
        "threshold: length &lt; 8",
        "threshold: length &gt; 120",
        "top_k: not selected by top_k",
    ):
        assert f"<h3>{group}</h3>" in page
    assert "hist-length.svg" in page
    assert "data:image/svg+xml;base64," in result.report._repr_html_()
    dropped = read_jsonl(result.dropped_path)
    assert len(dropped) == 2950 and {d["step"] for d in dropped} == {"threshold", "top_k"}
    assert result.summary() == result.report.summary_line()
    plain = json.loads(json.dumps(result.to_dict()))
    assert plain["report"]["rows_kept"] == 50 and plain["output_path"].endswith("selected.jsonl")
    assert [p["name"] for p in plain["report"]["phases"]][-1] == "join outputs and report"
    assert "threshold dropped" in result.summary() and "kept 50" in result.summary()


def test_rule_counts_order_by_count_then_name():
    from thresher.selection.summary import rule_counts

    reasons = ["b: x; a: y", "c: z", "c: w; b: v"]  # b 2, c 2, a 1 (one row may name several)
    assert list(rule_counts(reasons).items()) == [("b", 2), ("c", 2), ("a", 1)]
