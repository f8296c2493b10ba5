#!/usr/bin/env bash
# The tool-output peer, headroom-ai==0.42.0, in its own venv (its pins stay out of ours).
# Usage: bash bench/setup_headroom.sh [PYTHON]   -> bench/.venv-headroom
set -euo pipefail
cd "$(dirname "$0")"
PY="${1:-python3}"
VENV=.venv-headroom
if [ ! -f "$VENV/.installed" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet headroom-ai==0.42.0
    touch "$VENV/.installed"
fi
echo "$VENV ready"
