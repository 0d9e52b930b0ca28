#!/usr/bin/env bash
# Sets up (idempotent) and runs every check: ruff, mypy (strict), the whole pytest suite including
# the integration tests on the real stack (vLLM on CPU, Ray, Prometheus, Locust).
#
#   bash deploy/test.sh            # everything (what CI runs)
#   bash deploy/test.sh --quick    # lint + tests not marked slow (no services started)
#   bash deploy/test.sh -- -k int4 # extra arguments after -- go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MARK=()
PYTEST_ARGS=()
while (($#)); do
  case "$1" in
    --quick) MARK=(-m "not slow") ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) echo "error: unknown option $1 (use --quick, or -- PYTEST_ARGS)" >&2; exit 2 ;;
  esac
  shift
done

bash deploy/setup.sh --dev
VENV="${M3BENCH_VENV:-$ROOT/.venv}"

echo "[test] ruff"
"$VENV/bin/ruff" check .
echo "[test] mypy (strict)"
"$VENV/bin/mypy"
if [[ ${#MARK[@]} -eq 0 ]]; then
  # The integration tests serve the trained embedded models: train them here, once per build key
  # (about 9 minutes the first time on 2 cores, then cached), not inside some test's time limit.
  echo "[test] embedded models (built and trained once, then cached: \$M3BENCH_CACHE or .cache/m3bench)"
  M3BENCH_CACHE="${M3BENCH_CACHE:-$ROOT/.cache/m3bench}" "$VENV/bin/m3bench" models build
fi
echo "[test] pytest ${MARK[*]:-} ${PYTEST_ARGS[*]:-}"
# --strict-skips: a skipped test fails the run unless it names the disturbance it measured
# (tests/conftest.py); every skip is listed with its reason at the end.
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider -ra --strict-skips --durations=25 "${MARK[@]}" "${PYTEST_ARGS[@]}"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $rc
