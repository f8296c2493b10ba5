"""Tool-output cases for the content benchmarks and tests: JSON a tool returned, a question that
asks about some of its records, and the records (and the field values) an answer needs.

    python bench/content_cases.py            # rewrite tests/data/content/tool_cases.jsonl

Every case is generated from a fixed seed (no data outside the repository), and names are
drawn so that each asked value identifies its record. Shapes: a flat list of customers (the
issue's 120 records), orders with nested lines and shipping, users keyed by name, search
results, CI runs with nested steps, a pretty-printed inventory, and a question that names no
value (errors must survive).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "content" / "tool_cases.jsonl"
FIRST = "Ada Bruno Chen Dalia Emil Farah Goran Hana Ivo Jana Kofi Lena Milo Nadia Otto Pia".split()
LAST = "Novak Okafor Petrov Quinn Rossi Sato Tanaka Ueda Varga Weber Xu Young Zorn Abel".split()
CITIES = "Lyon Porto Graz Turku Brno Cork Gent Pula Bergen Split Evora Tartu".split()
WORDS = (
    "harbour tide ferry schedule bridge tunnel river market museum garden station library "
    "castle square festival night walking tour coastal trail weather forecast storm"
).split()


def _names(rng: random.Random, n: int) -> list[str]:
    pairs = [f"{a} {b}" for a in FIRST for b in LAST]
    rng.shuffle(pairs)
    return pairs[:n]


def customers(rng: random.Random, n: int = 120) -> dict[str, Any]:
    names = _names(rng, n)
    rows = [
        {
            "id": 4000 + i,
            "name": names[i],
            "email": f"{names[i].lower().replace(' ', '.')}@example.com",
            "city": rng.choice(CITIES),
            "plan": rng.choice(["free", "pro", "team"]),
            "balance": round(rng.uniform(0, 900), 2),
            "signup": f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "status": "active",
        }
        for i in range(n)
    ]
    return {"rows": rows, "content": json.dumps(rows)}


def case_customer_by_id(rng: random.Random) -> dict[str, Any]:
    data = customers(rng)
    row = data["rows"][63]
    return {
        "name": "customers_by_id",
        "question": f"What is the email address of customer {row['id']}?",
        "content": data["content"],
        "asked": [row],
        "answers": [row["email"]],
    }


def case_customers_by_name(rng: random.Random) -> dict[str, Any]:
    data = customers(rng)
    a, b = data["rows"][41], data["rows"][88]
    return {
        "name": "customers_by_name",
        "question": f"Which plans are {a['name']} and {b['name']} on?",
        "content": data["content"],
        "asked": [a, b],
        "answers": [a["plan"], b["plan"]],
    }


def orders(rng: random.Random, n: int = 50) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        lines = [
            {
                "sku": f"SKU-{rng.randint(100, 999)}",
                "name": f"{rng.choice(WORDS)} {rng.choice(WORDS)} kit",
                "qty": rng.randint(1, 5),
                "unit_price": round(rng.uniform(3, 80), 2),
            }
            for _ in range(rng.randint(2, 5))
        ]
        out.append(
            {
                "order_id": f"ORD-{1000 + i}",
                "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "status": rng.choice(["shipped", "delivered", "processing"]),
                "lines": lines,
                "shipping": {
                    "carrier": rng.choice(["DHL", "UPS", "PostNL"]),
                    "tracking": f"TRK{rng.randint(10**9, 10**10 - 1)}",
                    "address": {"city": rng.choice(CITIES), "zip": f"{rng.randint(1000, 9999)}"},
                },
            }
        )
    return out


def case_orders_nested(rng: random.Random) -> dict[str, Any]:
    rows = orders(rng)
    value = {"customer": {"id": 77, "name": "Ivo Varga"}, "orders": rows, "page": 1}
    a, b = rows[17], rows[42]
    return {
        "name": "orders_nested",
        "question": f"What are the tracking numbers of orders {a['order_id']} and {b['order_id']}?",
        "content": json.dumps(value),
        "asked": [a, b],
        "answers": [a["shipping"]["tracking"], b["shipping"]["tracking"]],
    }


def case_users_keyed(rng: random.Random) -> dict[str, Any]:
    names = _names(rng, 60)
    users = {}
    for name in names:
        handle = "u_" + name.lower().replace(" ", "_")
        users[handle] = {
            "display": name,
            "roles": rng.sample(["admin", "editor", "viewer", "billing", "support"], 2),
            "prefs": {"theme": rng.choice(["dark", "light"]), "lang": rng.choice(["en", "de"])},
            "last_login": f"2024-06-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00Z",
        }
    keys = list(users)
    a, b = keys[11], keys[47]
    return {
        "name": "users_keyed",
        "question": f"What roles do {a} and {b} have?",
        "content": json.dumps({"users": users, "count": len(users)}),
        "asked": [users[a], users[b]],
        "answers": [users[a]["roles"][0], users[b]["roles"][0]],
    }


def case_search_results(rng: random.Random) -> dict[str, Any]:
    results = []
    for i in range(40):
        title = " ".join(rng.sample(WORDS, 4)).capitalize()
        results.append(
            {
                "rank": i + 1,
                "title": title,
                "url": f"https://example.org/{'-'.join(title.lower().split())}",
                "snippet": " ".join(rng.choice(WORDS) for _ in range(30)) + ".",
                "score": round(1 - i / 50, 3),
            }
        )
    asked = results[26]
    return {
        "name": "search_results",
        "question": f'What is the address of the result titled "{asked["title"]}"?',
        "content": json.dumps({"query": "coastal walks", "results": results}),
        "asked": [asked],
        "answers": [asked["url"]],
    }


def case_ci_runs(rng: random.Random) -> dict[str, Any]:
    runs = []
    for i in range(25):
        steps = [
            {
                "name": name,
                "status": "ok",
                "duration_ms": rng.randint(200, 9000),
                "log": f"{name} finished",
            }
            for name in ("checkout", "install", "lint", "test", "build", "deploy")
        ]
        runs.append({"run_id": 7700 + i, "branch": rng.choice(["main", "dev"]), "steps": steps})
    failing = runs[13]
    failing["steps"][5] = {
        "name": "deploy",
        "status": "failed",
        "duration_ms": 31,
        "log": "deploy failed: permission denied for bucket releases-eu",
    }
    return {
        "name": "ci_runs_nested",
        "question": f"Why did the deploy step fail in run {failing['run_id']}?",
        "content": json.dumps({"pipeline": "release", "runs": runs}),
        "asked": [failing],
        "answers": ["permission denied"],
    }


def inventory(rng: random.Random, n: int = 90) -> list[dict[str, Any]]:
    colours = "Blue Red Green Amber Violet Grey Black White Teal".split()
    things = "Widget Gasket Bracket Hinge Spring Valve Flange Sprocket Bolt Washer".split()
    pairs = [f"{c} {t}" for c in colours for t in things]
    rng.shuffle(pairs)
    return [
        {
            "sku": f"{p.split()[0][0]}{p.split()[1][0]}-{200 + i}",
            "name": p,
            "in_stock": rng.randint(0, 500),
            "warehouse": rng.choice(CITIES),
            "price": round(rng.uniform(1, 40), 2),
        }
        for i, p in enumerate(pairs[:n])
    ]


def case_inventory_pretty(rng: random.Random) -> dict[str, Any]:
    items = inventory(rng)
    a, b = items[30], items[71]
    return {
        "name": "inventory_pretty",
        "question": f"How many {a['name']} and {b['name']} units are in stock?",
        "content": json.dumps({"items": items}, indent=2),
        "asked": [a, b],
        "answers": [str(a["in_stock"]), str(b["in_stock"])],
    }


def case_no_names(rng: random.Random) -> dict[str, Any]:
    rows = [
        {"job": f"sync-{i}", "status": "ok", "records": rng.randint(100, 200), "message": "synced"}
        for i in range(80)
    ]
    rows[52] = {"job": "sync-52", "status": "error", "records": 0, "message": "timeout on shard 3"}
    return {
        "name": "errors_no_names",
        "question": "Did anything go wrong?",
        "content": json.dumps(rows),
        "asked": [rows[52]],
        "answers": ["timeout on shard 3"],
    }


CASES = (
    case_customer_by_id,
    case_customers_by_name,
    case_orders_nested,
    case_users_keyed,
    case_search_results,
    case_ci_runs,
    case_inventory_pretty,
    case_no_names,
)


def reader_items(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` tool-output questions small enough for a 135M reader to answer from the full
    JSON at all (under a thousand tokens each): one field of one record, asked by the
    record's id or name; ``answers`` holds the field's value."""
    out = []
    for i in range(n):
        rng = random.Random(seed * 1000 + i)
        kind = i % 4
        if kind in (0, 1):
            rows = customers(rng, 12)["rows"]
            row = rows[rng.randrange(2, 10)]
            if kind == 0:
                question = f"What is the email address of customer {row['id']}?"
                gold = row["email"]
            else:
                question = f"In which city does {row['name']} live?"
                gold = row["city"]
            content: Any = rows
        elif kind == 2:
            content = orders(rng, 5)
            row = content[rng.randrange(1, 4)]
            question = f"What is the tracking number of order {row['order_id']}?"
            gold = row["shipping"]["tracking"]
        else:
            content = inventory(rng, 14)
            row = content[rng.randrange(2, 12)]
            question = f"How many {row['name']} units are in stock?"
            gold = str(row["in_stock"])
        out.append(
            {
                "name": f"reader-{i}",
                "question": question,
                "content": json.dumps(content),
                "asked": [row],
                "answers": [gold],
            }
        )
    return out


def build(seed: int = 25) -> list[dict[str, Any]]:
    return [make(random.Random(seed * 100 + i)) for i, make in enumerate(CASES)]


def load(path: Path = OUT) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in build()))
    for case in build():
        print(f"{case['name']:18s} {len(case['content']):6d} chars")
