#!/usr/bin/env bash
# Sets up (idempotent) and runs the main job on the embedded default: `m3bench demo`.
# Extra arguments go to `m3bench demo` (see `.venv/bin/m3bench demo --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash deploy/setup.sh
exec "${M3BENCH_VENV:-$ROOT/.venv}/bin/m3bench" demo "$@"
