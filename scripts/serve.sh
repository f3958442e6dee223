#!/usr/bin/env bash
# Set up (idempotent, fast when nothing changed), then start the hub.
# Arguments go to `asrhub serve` unchanged, e.g.  scripts/serve.sh --port 8080
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export UV_PYTHON_DOWNLOADS=never
export ASRHUB_MODEL_DIR="${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}"

bash scripts/setup.sh

if command -v uv >/dev/null; then UV=(uv); else UV=(python3 -m uv); fi
exec "${UV[@]}" run --frozen asrhub serve "$@"
