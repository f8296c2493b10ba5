"""Instruction sources the rules were not tuned on, for bench/instruction_quality.py.

Each source is a list of clean Alpaca rows of one kind of legitimate answer: built from
../shared/data files other than the tuning pool (classification labels, math answers, long-context
QA, story continuations, headlines), and constructed here (JSON and dict literals, code, tables,
numbers and dates, lists, answers in other languages). ``corrupt`` then injects the pool's
defect kinds into a seeded 8% of a source, so precision and recall can be measured on each.
Everything is deterministic (fixed seeds).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

Row = dict[str, str]
PER_SOURCE = 400


def _jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def _row(source: str, i: int, instruction: str, given: str, output: str) -> Row:
    return {"id": f"{source}-{i:05d}", "instruction": instruction, "input": given,
            "output": output, "source": source}  # fmt: skip


def labels(data: Path, task: str) -> list[Row]:
    meta = json.loads((data / "icl" / f"{task}_labels.json").read_text())
    rows = _jsonl(data / "icl" / f"{task}_pool.jsonl", PER_SOURCE)
    return [_row(task, i, meta["instruction"], r["text"], r["label"]) for i, r in enumerate(rows)]


def math(data: Path) -> list[Row]:
    rows = _jsonl(data / "math_demos.jsonl", PER_SOURCE)
    out = []
    for i, r in enumerate(rows):
        answer = r["answer"] if i % 2 else f"{r['rationale']} The answer is {r['answer']}."
        out.append(_row("math", i, "Solve the math word problem.", r["question"], answer))
    return out


def stories(data: Path) -> list[Row]:
    """Continue an Austen paragraph: narrative answers that reuse the input's names."""
    rows = [r for r in _jsonl(data / "raw_pool.jsonl") if r["id"].startswith("austen-")]
    out = []
    for i, r in enumerate(rows[:PER_SOURCE]):
        words = r["text"].split()
        cut = len(words) // 2
        out.append(_row("austen", i, "Continue the passage in the same style.",
                        " ".join(words[:cut]), " ".join(words[cut:])))  # fmt: skip
    return out


def headlines(data: Path) -> list[Row]:
    rows = [r for r in _jsonl(data / "raw_pool.jsonl") if r["id"].startswith(("reuters-", "lee-"))]
    out = []
    for i, r in enumerate(rows[:PER_SOURCE]):
        title, _, body = r["text"].partition("\n")
        if body.strip():
            out.append(_row("headlines", i, "Write a headline for the news article.", body, title))
        else:
            sentences = r["text"].split(". ")
            out.append(_row("headlines", i, "Write a one-sentence summary of the article.",
                            r["text"], sentences[0] + "."))  # fmt: skip
    return out


def longqa(data: Path) -> list[Row]:
    out = []
    for i, r in enumerate(_jsonl(data / "longqa.jsonl")):
        answer = r.get("answer") or r.get("answers") or ""
        answer = answer if isinstance(answer, str) else str(answer[0] if answer else "")
        question = r.get("question", "")
        if answer.strip():
            out.append(_row("longqa", i, "Answer the question about the story.",
                            f"{r['context'][:3000]}\nQuestion: {question}", answer))  # fmt: skip
    return out


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]  # fmt: skip
NAMES = ["Ada", "Bruno", "Chen", "Dara", "Elif", "Femi", "Gita", "Hugo", "Iris", "Jonas"]
CITIES = ["Lisbon", "Osaka", "Nairobi", "Quito", "Oslo", "Pune", "Tunis", "Perth", "Lyon"]


def structured(seed: int = 3) -> list[Row]:
    """JSON and dict literals, code, tables, numbers, dates, lists and short labels."""
    rng = random.Random(seed)
    out: list[Row] = []
    for i in range(PER_SOURCE):
        kind = i % 8
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(1950, 2030)
        if kind == 0:
            text = f"{name} (file {i}) moved to {city} on {month} {day}" + (
                f", {year}." if i % 3 else "."
            )
            parts = {"day": str(day), "month": month, "year": str(year) if i % 3 else ""}
            out.append(_row("structured", i, "Extract the date parts as a dictionary.", text,
                            f"{parts!r}."))  # fmt: skip
        elif kind == 1:
            age = rng.randint(18, 90)
            text = f"{name} is {age}, lives in {city} and has the badge number {1000 + i}."
            record = {"name": name, "age": age, "city": city, "badge": 1000 + i}
            out.append(_row("structured", i, "Return the person's details as JSON.", text,
                            json.dumps(record)))  # fmt: skip
        elif kind == 2:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            code = (f"def scale_{name.lower()}(values):\n    return [v * {a} + {b} for v in "
                    "values]\n")  # fmt: skip
            out.append(_row("structured", i, "Write a Python function that multiplies each "
                            f"value by {a} and adds {b}.", "", code))  # fmt: skip
        elif kind == 3:
            rows = [(rng.choice(CITIES), rng.randint(10, 40)) for _ in range(4)] + [("Station", i)]
            table = "| city | temperature |\n| --- | --- |\n" + "\n".join(
                f"| {c} | {t} |" for c, t in rows
            )
            text = ", ".join(f"{c} {t} degrees" for c, t in rows)
            out.append(_row("structured", i, "Put the readings in a markdown table.", text, table))
        elif kind == 4:
            a, b = rng.randint(100, 9999), rng.randint(100, 9999)
            out.append(_row("structured", i, "Add the two numbers.", f"{a} + {b}", str(a + b)))
        elif kind == 5:
            out.append(_row("structured", i, "Write the date in ISO 8601 format.",
                            f"{month} {day}, {year}",
                            f"{year}-{MONTHS.index(month) + 1:02d}-{day:02d}"))  # fmt: skip
        elif kind == 6:
            items = rng.sample(["flour", "eggs", "milk", "sugar", "butter", "salt", "yeast",
                                "vanilla"], 4)  # fmt: skip
            text = f"To bake cake number {i}, {name} needs {', '.join(items)}."
            listing = "\n".join(f"- {x}" for x in items)
            out.append(_row("structured", i, "List the ingredients, one per line.", text, listing))
        else:
            city_of = rng.choice(CITIES)
            out.append(_row("structured", i, "Which city is mentioned? Answer with the name only.",
                            f"{name} took flight {i} to {city_of}.", city_of))  # fmt: skip
    return out


# Written for this bench: short answers in other languages (no model wrote these).
FOREIGN = [
    ("fr", "Traduisez la phrase en français.", "The weather is nice today.",
     "Il fait beau aujourd'hui."),
    ("fr", "Répondez à la question.", "Quelle est la capitale de la France ?",
     "La capitale de la France est Paris, une ville connue pour ses musées et ses cafés."),
    ("de", "Beantworte die Frage.", "Wie viele Tage hat eine Woche?",
     "Eine Woche hat sieben Tage, von Montag bis Sonntag."),
    ("de", "Übersetze den Satz ins Deutsche.", "I am reading a book in the garden.",
     "Ich lese ein Buch im Garten."),
    ("es", "Responde a la pregunta.", "¿Cuál es el río más largo de América del Sur?",
     "El río más largo de América del Sur es el Amazonas."),
    ("es", "Traduce la frase al español.", "We will travel by train tomorrow morning.",
     "Mañana por la mañana viajaremos en tren."),
    ("ja", "次の質問に答えてください。", "日本の首都はどこですか?", "日本の首都は東京です。"),
    ("ja", "文を日本語に翻訳してください。", "I drink coffee every morning.",
     "私は毎朝コーヒーを飲みます。"),
    ("zh", "请回答下面的问题。", "一年有几个月?", "一年有十二个月。"),
    ("zh", "把句子翻译成中文。", "The library opens at nine o'clock.", "图书馆九点开门。"),
    ("ru", "Ответьте на вопрос.", "Какая самая большая страна в мире?",
     "Самая большая страна в мире — Россия."),
    ("pt", "Responda à pergunta.", "Qual é a cor do céu num dia limpo?",
     "Num dia limpo, o céu é azul."),
]  # fmt: skip


def languages() -> list[Row]:
    """Pairs of the hand-written rows above: 132 distinct two-part tasks in seven languages."""
    out = []
    for i, (a, b) in enumerate((a, b) for a in FOREIGN for b in FOREIGN if a is not b):
        out.append(_row("languages", i, a[1], f"{a[2]} {b[2]}", f"{a[3]} {b[3]}"))
    return out


def sources(data: Path) -> dict[str, list[Row]]:
    build: dict[str, Callable[[], list[Row]]] = {
        "intent_labels": lambda: labels(data, "intent"),
        "review_labels": lambda: labels(data, "rotten_tomatoes"),
        "food_labels": lambda: labels(data, "amazon_food"),
        "math": lambda: math(data),
        "austen_continuation": lambda: stories(data),
        "headlines": lambda: headlines(data),
        "longqa": lambda: longqa(data),
        "structured": structured,
        "languages": languages,
    }
    out = {}
    for name, make in build.items():
        seen: set[str] = set()
        rows = []
        for r in make():  # the packages ship a few articles twice: those are real duplicates
            key = " ".join(f"{r['input'][:300]} {r['output']}".lower().split())
            if key not in seen:
                seen.add(key)
                rows.append(r)
        out[name] = rows
    return out


# --- seeded defects, the pool's kinds (see ../shared/data/README.md) -----------------------------

FILLERS = ["OK", "Yes", "N/A", "Sure", "Done", "Thanks", "Okay", "none"]
SYLLABLES = ["ka", "lo", "mé", "tri", "zu", "vän", "pe", "shi", "ro", "gä", "nu", "bel", "quo"]
NOISE = "qwxzjkv{}[]#@$%^&*~|\\<>ÃÂ©â€™¤¶"


def corrupt(rows: list[Row], seed: int = 11, share: float = 0.08) -> tuple[list[Row], dict]:
    """Rows with a seeded ``share`` made defective; returns (rows, labels like the pool's)."""
    rng = random.Random(seed)
    rows = [dict(r) for r in rows]
    picks = rng.sample(range(len(rows)), max(9, int(share * len(rows))))
    kinds = ["empty_output", "one_word_output", "output_repeats_input", "garbled_repeated_chars",
             "garbled_random_chars", "gibberish_language", "long_repetitive", "exact_duplicate",
             "near_duplicate"]  # fmt: skip
    found: dict[str, dict] = {}
    extra: list[Row] = []
    for n, i in enumerate(picks):
        kind = kinds[n % len(kinds)]
        row = rows[i]
        if kind == "one_word_output" and len(row["output"].split()) < 4:
            kind = "gibberish_language"  # fillers only replace answers of four words or more
        if kind == "output_repeats_input" and not row["input"].strip():
            kind = "empty_output"
        if kind == "empty_output":
            row["output"] = rng.choice(["", " ", "\n"])
        elif kind == "one_word_output":
            row["output"] = rng.choice(FILLERS)
        elif kind == "output_repeats_input":
            row["output"] = row["input"]
        elif kind == "garbled_repeated_chars":
            row["output"] = rng.choice(["." * rng.randint(6, 30), "ha" * rng.randint(4, 12)])
        elif kind == "garbled_random_chars":
            row["output"] = "".join(rng.choice(NOISE + "abcdefgh ") for _ in range(60))
        elif kind == "gibberish_language":
            row["output"] = (
                " ".join(
                    "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
                    for _ in range(rng.randint(8, 25))
                ).capitalize()
                + "."
            )
        elif kind == "long_repetitive":
            phrase = " ".join(row["output"].split()[:4]) or "and then"
            row["output"] = " ".join([phrase] * rng.randint(200, 500))
        else:
            copy = dict(row, id=f"{row['id']}-copy")
            if kind == "near_duplicate":
                field = "input" if len(row["input"]) > len(row["output"]) else "output"
                words = copy[field].split()
                if len(words) >= 30:  # one word of 30 dropped keeps trigram Jaccard >= 0.7
                    del words[rng.randrange(len(words))]
                elif words:  # shorter: a change of case and punctuation, as in the pool
                    j = rng.randrange(len(words))
                    words[j] = words[j].swapcase() + ","
                copy[field] = " ".join(words)
            extra.append(copy)
            found[copy["id"]] = {"id": copy["id"], "defect": kind, "duplicate_of": row["id"]}
            continue
        found[row["id"]] = {"id": row["id"], "defect": kind}
    return rows + extra, found
