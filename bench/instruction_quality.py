"""Precision and recall of the `instruction-quality` recipe at flagging defective rows.

Runs the shipped recipe (the same one `thresher filter` runs) through
`thresher.selection.run_recipe` on ../shared/data/instructions.jsonl, reads every dropped row and
its reason, and scores them against instructions_labels.jsonl per defect type; with --peer, runs
datatrove's Gopher and C4 filters (bench/datatrove_filters.py in bench/.venv-datatrove) on the same
rows beside ours.

Duplicates: two identical rows cannot say which one was copied, so a duplicate pair counts as
caught when exactly one of its two rows is dropped as a duplicate ("pair" columns); the
"strict" numbers also ask that the dropped one be the labelled copy.

Held-out sources (bench/instruction_sources.py): kinds of legitimate answer the rules were not
tuned on (labels, math, stories that reuse their input, headlines, long-context QA, JSON/dict
literals, code, tables, numbers, dates, lists, other languages), each run as its own job with
the pool's defect kinds seeded into 8% of it; precision and recall are reported per source.

    python bench/instruction_quality.py [--smoke] [--peer] [--no-sources] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from embedcache import shared_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = shared_data(required=False)
PEER_PY = ROOT / "bench" / ".venv-datatrove" / "bin" / "python"


def load(path: Path, limit: int | None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def evaluate(ids: list[str], labels: dict[str, dict], flagged: dict[str, str]) -> dict:
    """Per-defect recall, overall precision/recall; duplicates judged per pair as well."""
    present = set(ids)
    by_type: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        # A copy whose original is not in the rows read (--smoke) is no longer a duplicate.
        if i in labels and labels[i].get("duplicate_of", ids[0]) in present:
            by_type[labels[i]["defect"]].append(i)
    excused: set[str] = set()  # originals dropped in place of their (kept) labelled copy
    table = {}
    for defect, members in sorted(by_type.items()):
        strict = sum(i in flagged for i in members)
        pair = strict
        if "duplicate" in defect:
            pair = 0
            for i in members:
                original = labels[i].get("duplicate_of")
                if i in flagged:
                    pair += 1
                elif original in present and original in flagged and "dedup" in flagged[original]:
                    pair += 1
                    excused.add(original)
        table[defect] = {"rows": len(members), "strict": strict, "pair": pair}
    defective = {i for members in by_type.values() for i in members}
    hits = len(defective & set(flagged))
    false = [i for i in flagged if i not in defective and i not in excused]
    caught = sum(v["pair"] for v in table.values())
    overall = {
        "flagged": len(flagged),
        "precision": (len(flagged) - len(false)) / max(len(flagged), 1),
        "recall": caught / max(len(defective), 1),
        "precision_strict": hits / max(len(flagged), 1),
        "recall_strict": hits / max(len(defective), 1),
        "false_positives": len(false),
    }
    return {"per_defect": table, "overall": overall, "fp_examples": false[:20]}


def run_sources(work: Path, smoke: bool) -> dict:
    """Precision and recall on every held-out source, each filtered as its own dataset."""
    from instruction_sources import corrupt, sources

    table = {}
    print(f"\n  {'held-out source':<22}{'rows':>6}{'defects':>8}{'precision':>10}{'recall':>8}"
          f"{'clean dropped':>14}")  # fmt: skip
    for name, rows in sources(DATA).items():
        rows = rows[:120] if smoke else rows
        rows, labels = corrupt(rows)
        path = work / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        flagged, _, notes = run_ours(path, work / name, quiet=True)
        result = evaluate([r["id"] for r in rows], labels, flagged)
        o = result["overall"]
        clean = len(rows) - len(labels)
        print(f"  {name:<22}{len(rows):>6}{len(labels):>8}{o['precision']:>10.3f}"
              f"{o['recall']:>8.3f}{o['false_positives']:>7} of {clean:<5}")  # fmt: skip
        for i in result["fp_examples"][:2]:
            print(f"      clean row dropped: {i}: {flagged[i][:110]}")
        for note in notes:
            print(f"      note: {note}")
        table[name] = {**result, "rows": len(rows), "notes": notes}
    return table


def per_source(rows: list[dict], labels: dict[str, dict], flagged: dict[str, str]) -> dict:
    """Clean rows dropped per source of the pool (its BIG-bench subtask)."""
    out: dict[str, dict] = {}
    # An original dropped in place of its labelled copy is no false positive (see evaluate).
    originals = {v["duplicate_of"] for v in labels.values() if "duplicate_of" in v}
    for r in rows:
        entry = out.setdefault(r.get("source", "?").rsplit("/", 1)[-1], {"clean": 0, "dropped": 0})
        if r["id"] not in labels:
            entry["clean"] += 1
            entry["dropped"] += r["id"] in flagged and r["id"] not in originals
    return out


def run_ours(
    path: Path, work: Path, quiet: bool = False
) -> tuple[dict[str, str], float, list[str]]:
    from thresher import selection
    from thresher.selection.recipes import builtin_recipe

    recipe = builtin_recipe("instruction-quality")
    recipe["inputs"] = [{"path": str(path), "shape": "alpaca"}]
    recipe["output"] = {"path": str(work / "kept.jsonl"), "write_dropped": True}
    start = time.perf_counter()
    result = selection.run_recipe(recipe, work / "job", fresh=True, progress=not quiet)
    seconds = time.perf_counter() - start
    flagged = {}
    with open(result.dropped_path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            flagged[row["id"]] = f"{row['step']}: {row['reason']}"
    if not quiet:
        print(result.summary())
    return flagged, seconds, result.report.notes


def run_peer(path: Path, work: Path, limit: int | None) -> dict | None:
    if not PEER_PY.exists():  # the peer gets its own venv, kept out of the project's
        venv = PEER_PY.parents[1]
        print(f"creating {venv} with datatrove[processing]==0.10.1 and spacy")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "datatrove[processing]==0.10.1", "spacy"]
        subprocess.run(pip, check=True)
    out = work / "datatrove.json"
    cmd = [str(PEER_PY), str(ROOT / "bench" / "datatrove_filters.py"), str(path), str(out)]
    subprocess.run(cmd + (["--limit", str(limit)] if limit else []), check=True)
    return json.loads(out.read_text())


def show(name: str, result: dict, seconds: float) -> None:
    o = result["overall"]
    print(
        f"\n{name}: flagged {o['flagged']}, precision {o['precision']:.3f} recall {o['recall']:.3f}"
        f" (strict {o['precision_strict']:.3f}/{o['recall_strict']:.3f}), {seconds:.1f}s"
    )
    print(f"  {'defect':<24}{'rows':>6}{'caught':>8}{'recall':>8}{'strict':>8}")
    for defect, v in result["per_defect"].items():
        print(
            f"  {defect:<24}{v['rows']:>6}{v['pair']:>8}{v['pair'] / v['rows']:>8.3f}"
            f"{v['strict'] / v['rows']:>8.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "instructions.jsonl")
    parser.add_argument("--labels", type=Path, default=DATA / "instructions_labels.jsonl")
    parser.add_argument("--smoke", action="store_true", help="first 1,500 rows only")
    parser.add_argument("--peer", action="store_true", help="also run datatrove's filters")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    parser.add_argument("--no-sources", action="store_true", help="skip the held-out sources")
    args = parser.parse_args()
    limit = 1500 if args.smoke else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = load(args.data, limit)
        path = work / "input.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        labels = {r["id"]: r for r in load(args.labels, None)}
        ids = [r["id"] for r in rows]
        flagged, seconds, _ = run_ours(path, work)
        ours = evaluate(ids, labels, flagged)
        show("thresher instruction-quality", ours, seconds)
        rules = Counter(v.split(":")[0] for v in flagged.values())
        print("  dropped by step:", dict(rules))
        report = {"rows": len(rows), "ours": {**ours, "seconds": seconds}}
        report["pool_sources"] = per_source(rows, labels, flagged)
        print(f"  {'pool source (tuned on)':<52}{'clean':>7}{'dropped':>9}")
        for name, v in report["pool_sources"].items():
            print(f"  {name:<52}{v['clean']:>7}{v['dropped']:>9}")
        if not args.no_sources:
            report["held_out"] = run_sources(work, args.smoke)
        peer = run_peer(path, work, limit) if args.peer else None
        if peer is not None:
            report["datatrove"] = {}
            for name, found in peer["flagged"].items():
                result = evaluate(ids, labels, {i: name for i in found})
                show(f"datatrove {name}", result, peer["seconds"][name])
                report["datatrove"][name] = {**result, "seconds": peer["seconds"][name]}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
