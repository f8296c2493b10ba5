"""Peer: datatrove's Gopher (quality + repetition) and C4 filters on each row's response.

Runs in its own venv (datatrove[processing]==0.10.1 + spacy conflict with nothing we need, but
stay out of the main one):  python3 -m venv bench/.venv-datatrove &&
bench/.venv-datatrove/bin/pip install "datatrove[processing]==0.10.1" spacy
Usage: bench/.venv-datatrove/bin/python bench/datatrove_filters.py IN.jsonl OUT.json [--limit N]
Writes {"seconds": {...}, "flagged": {filter: [ids...]}}.
"""

from __future__ import annotations

import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[sys.argv.index("--limit") + 1]) if "--limit" in sys.argv else None
    rows = []
    with open(src, encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    filters = {
        "gopher_quality": GopherQualityFilter(),
        "gopher_repetition": GopherRepetitionFilter(),
        "c4": C4QualityFilter(filter_no_terminal_punct=False),
        # The same rules without the web-document length floors (50 words, 5 sentences,
        # 3 words a line) that no instruction response is meant to meet.
        "gopher_quality_no_length": GopherQualityFilter(min_doc_words=None),
        "c4_no_length": C4QualityFilter(
            filter_no_terminal_punct=False, min_num_sentences=-1, min_words_per_line=-1
        ),
    }
    flagged: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for name, f in filters.items():
        start = time.perf_counter()
        out = []
        for r in rows:
            doc = Document(text=r.get("output") or "", id=r["id"])
            try:
                verdict = f.filter(doc)
            except ZeroDivisionError:  # an empty response has no words to take a ratio of
                verdict = False
            keep = verdict[0] if isinstance(verdict, tuple) else verdict
            if not keep:
                out.append(r["id"])
        flagged[name] = out
        seconds[name] = time.perf_counter() - start
    with open(dst, "w", encoding="utf-8") as fh:
        json.dump({"seconds": seconds, "flagged": flagged, "rows": len(rows)}, fh)


if __name__ == "__main__":
    main()
