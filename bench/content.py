"""Content-aware compression: tool-output JSON at a rate, adversarial text, and a reader.

    python bench/content.py                       # JSON cases and adversarial planning
    python bench/content.py --peer                # + headroom-ai 0.42.0 (setup_headroom.sh)
    python bench/content.py --reader --items 24   # + SmolLM2 answering tool-output questions
    python bench/content.py --smoke               # a quick pass (make bench-smoke)

**JSON** (tests/data/content/tool_cases.jsonl, from bench/content_cases.py): for each case,
the lossless re-encoding alone (the Headroom-style baseline: compact, uniform arrays as
tables), Thresher's question-aware structure compression at ``--rate``, and the same without
the question: the share of characters and of cl100k tokens kept, milliseconds (median of
``--repeat`` runs; also scaled to 16,000 characters), whether every asked record survives whole
and whether the answers' values are in the text. With ``--peer``, headroom's ``compress`` on
the same messages (it takes no rate).

**Adversarial planning**: 100,000 characters of each delimiter shape (runs of brackets,
quotes, fences, email-, URL- and Markdown-like shapes); the planners (segments and units) in
milliseconds per 10,000 characters, against plain prose of the same length.

**Reader** (``--reader``): SmolLM2-135M answers tool-output questions (bench/content_cases.py
``reader_items``: one field of one record, asked by id or name) from the full JSON, the
lossless form, and Thresher's form at the rate; right when the answer holds the field's value.

Results go to bench/results/content.json (``--out``), rewritten as each part finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "results" / "content.json"
PEER_VENV = ROOT / "bench" / ".venv-headroom"
SHAPES = [
    "ab.", "```x\n", "~~~\n", "[1, ", "[", "]", "{", '{"a": ', '"', "\\", '["a', "a@",
    "a.b@c.", "@a.", "http://", "www.", "http://a!!!", ".", " ", "\n", "1,", "9", "March 3, ",
    "| a |\n", "# ", "- ", "[x](", "![a](b", "Alice: ", "[10:02] ", "    x\n", "# c\n", "`", "a",
    "a(", "x1",
]  # fmt: skip
PROSE = "The river rose over the old bridge while the village slept and the baker waited. "


def contains(value: Any, record: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if node == record:
            return True
        if isinstance(node, dict):
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return False


def judge(case: dict, text: str) -> dict[str, Any]:
    """Valid JSON, every asked record whole, every answer value present."""
    from thresher.compression.jsonpack import unpack

    try:
        value = unpack(json.loads(text))
    except ValueError:
        return {"valid": False, "asked": False, "answers": False}
    return {
        "valid": True,
        "asked": all(contains(value, r) for r in case["asked"]),
        "answers": all(a in text for a in case["answers"]),
    }


def timed(fn, repeat: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return out, statistics.median(times)


def json_part(cases: list[dict], rate: float, repeat: int, counter) -> list[dict]:
    from thresher.compression.jsonpack import dumps, pack
    from thresher.compression.structured import compress_json

    rows = []
    for case in cases:
        text = case["content"]
        chars, tokens = len(text), counter.count(text)
        goal = round(rate * tokens)
        lossless, lossless_ms = timed(lambda t=text: dumps(pack(json.loads(t))), repeat)
        aware, aware_ms = timed(
            lambda t=text, q=case["question"], g=goal, n=tokens: compress_json(
                t, g, counter.count, q, n
            ),
            repeat,
        )
        blind = compress_json(text, goal, counter.count, "", tokens)
        row = {
            "case": case["name"],
            "chars": chars,
            "tokens": tokens,
            "lossless": {
                "chars": len(lossless) / chars,
                "tokens": counter.count(lossless) / tokens,
                "ms": lossless_ms,
                **judge(case, lossless),
            },
            "thresher": {
                "chars": len(aware.text) / chars,
                "tokens": counter.count(aware.text) / tokens,
                "ms": aware_ms,
                "ms_per_16k_chars": aware_ms * 16_000 / chars,
                "elided_spans": len(aware.elided),
                **judge(case, aware.text),
            },
            "question_blind": {
                "chars": len(blind.text) / chars,
                "tokens": counter.count(blind.text) / tokens,
                **judge(case, blind.text),
            },
        }
        rows.append(row)
        t = row["thresher"]
        print(
            f"{case['name']:20s} {chars:6d} ch  lossless {row['lossless']['chars']:.2f}  "
            f"thresher {t['chars']:.3f} ch {t['tokens']:.3f} tok {t['ms']:5.1f} ms "
            f"asked={t['asked']} answers={t['answers']}  "
            f"blind asked={row['question_blind']['asked']}"
        )
    return rows


def peer_part(cases: list[dict]) -> list[dict]:
    """headroom's compress on each case as a chat whose tool returned the JSON."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"no peer: {python} is missing (bash bench/setup_headroom.sh)")
        return []
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [str(python), str(ROOT / "bench" / "headroom_peer.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=env,
    )  # fmt: skip
    rows = []
    try:
        for case in cases:
            messages = tool_chat(case)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"messages": messages}) + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            text = answer["messages"][-1]["content"]
            rows.append(
                {
                    "case": case["name"],
                    "chars": len(text) / len(case["content"]),
                    "ms": answer["ms"],
                    **judge(case, text),
                    "answers": all(a in text for a in case["answers"]),
                }
            )
            print(f"headroom {case['name']:20s} {rows[-1]['chars']:.3f} ch {answer['ms']:.1f} ms")
    finally:
        proc.kill()
    return rows


def tool_chat(case: dict) -> list[dict]:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return [
        {"role": "system", "content": "Answer from the tool results."},
        {"role": "user", "content": case["question"]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": case["content"]},
    ]


def adversarial_part(chars: int) -> dict[str, Any]:
    from thresher.compression.structured import split_segments
    from thresher.compression.units import ProtectOptions, split_units

    def plan_ms(text: str) -> float:
        _, ms = timed(lambda: (split_units(text, ProtectOptions()), split_segments(text)), 3)
        return ms

    prose = (PROSE * (chars // len(PROSE) + 1))[:chars]
    out = {"chars": chars, "prose_ms_per_10k": plan_ms(prose) * 10_000 / chars, "shapes": {}}
    for unit in SHAPES:
        text = (unit * (chars // len(unit) + 1))[:chars]
        out["shapes"][unit] = plan_ms(text) * 10_000 / chars
    worst = max(out["shapes"], key=out["shapes"].get)
    out["worst"] = {"shape": worst, "ms_per_10k": out["shapes"][worst]}
    print(
        f"adversarial {chars} chars: worst {worst!r} {out['worst']['ms_per_10k']:.1f} ms per 10k "
        f"(prose {out['prose_ms_per_10k']:.1f})"
    )
    return out


def reader_part(n: int, rate: float, counter) -> dict[str, Any]:
    from content_cases import reader_items
    from reader_tasks import Reader

    from thresher.compression.jsonpack import dumps, pack
    from thresher.compression.structured import compress_json
    from thresher.core.models import ModelProvider

    reader = Reader(ModelProvider(device="cpu"), max_new_tokens=24)
    forms = {"full": [], "lossless": [], "thresher": []}
    answerable = []
    for k, item in enumerate(reader_items(n)):
        text = item["content"]
        shrunk = compress_json(text, round(rate * counter.count(text)), counter.count,
                               item["question"])  # fmt: skip
        texts = {"full": text, "lossless": dumps(pack(json.loads(text))), "thresher": shrunk.text}
        answerable.append(judge(item, shrunk.text)["asked"])
        for form, body in texts.items():
            prompt = f"Tool result:\n{body}\n\nQuestion: {item['question']}"
            forms[form].append(float(reader.correct(prompt, item["answers"][0])))
        print(
            f"reader {k + 1}/{n}: "
            + "  ".join(f"{f} {sum(v) / len(v):.2f}" for f, v in forms.items())
        )
    return {
        "items": n,
        "rate": rate,
        "accuracy": {f: sum(v) / len(v) for f, v in forms.items()},
        "answerable": sum(answerable) / len(answerable),
    }


def machine() -> dict[str, Any]:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "cpu": model,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_bf16" in flags,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if flags else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=0.33)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--peer", action="store_true", help="run headroom-ai beside")
    parser.add_argument("--reader", action="store_true", help="score a SmolLM2 reader")
    parser.add_argument("--items", type=int, default=24, help="reader items")
    parser.add_argument("--adversarial-chars", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from content_cases import load

    from thresher.core.tokens import TiktokenCounter

    counter = TiktokenCounter("cl100k_base").fit()
    cases = load()
    out_path = args.out or OUT.with_name("content_smoke.json" if args.smoke else "content.json")
    command = "python " + " ".join(["bench/content.py", *sys.argv[1:]])
    report: dict[str, Any] = {"command": command, "machine": machine(), "rate": args.rate}

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        tmp.replace(out_path)

    report["json"] = json_part(cases[:3] if args.smoke else cases, args.rate,
                               2 if args.smoke else args.repeat, counter)  # fmt: skip
    save()
    if args.peer:
        report["headroom"] = peer_part(cases)
        save()
    report["adversarial"] = adversarial_part(20_000 if args.smoke else args.adversarial_chars)
    save()
    if args.reader:
        report["reader"] = reader_part(4 if args.smoke else args.items, args.rate, counter)
        save()
    failed = [
        r["case"] for r in report["json"] if not (r["thresher"]["asked"] and r["thresher"]["valid"])
    ]
    if failed:
        raise SystemExit(f"asked records lost in {failed}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
