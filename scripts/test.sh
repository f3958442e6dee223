#!/usr/bin/env bash
# Set up (idempotent, fast when nothing changed), then run the test suite.
# Arguments go to pytest unchanged, e.g.  scripts/test.sh -x -k wakeword
# Without arguments, the whole suite runs in ASRHUB_TEST_WORKERS pytest-xdist workers (default 2),
# a test file per worker at a time (--dist loadfile: a file's shared hub, cluster or browser stays
# in one process). Most of the suite waits on engines, servers and clocks, not on the CPU:
# on 2 cores, 2 workers take ~13.5 minutes where one took ~19.5.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export UV_PYTHON_DOWNLOADS=never
export ASRHUB_MODEL_DIR="${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}"

bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }

if command -v uv >/dev/null; then UV=(uv); else UV=(python3 -m uv); fi
if [[ $# -eq 0 ]]; then
    set -- -n "${ASRHUB_TEST_WORKERS:-2}" --dist loadfile
fi
"${UV[@]}" run --frozen pytest "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    echo "test: pytest collected no tests - treated as a failure" >&2
fi
exit "$rc"
