"""The tool-output peer, headroom-ai==0.42.0 (``headroom.compress``), as a worker in its own
venv (bench/.venv-headroom, ``bash bench/setup_headroom.sh``).

Run by bench/content.py, never imported by Thresher. Reads one JSON item per stdin line
(``messages``: OpenAI chat messages) and answers one JSON line each: the compressed messages
and the milliseconds the call took.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    from headroom import compress

    for line in sys.stdin:
        item = json.loads(line)
        start = time.perf_counter()
        result = compress(item["messages"], model=item.get("model", "gpt-4o"))
        ms = (time.perf_counter() - start) * 1000
        print(json.dumps({"messages": result.messages, "ms": ms}), flush=True)


if __name__ == "__main__":
    main()
