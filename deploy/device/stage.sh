#!/usr/bin/env bash
# Stage vLLM 0.22.0 + Ray 2.56.1 + m3bench's own dependencies on the lent H200, which has torch
# 2.11.0+cu130 but no vLLM or Ray and reaches no package registry. Rerunnable; see
# docs/results/h200/README.md for the measured cost.
#
# Here (a machine that reaches the registries; Python 3.11 venv of the repo, CPython 3.12 from pyenv):
#   bash deploy/device/stage.sh local      # download exactly wheels.lock, unpack, pack, split -> .stage/parts/
#   bash deploy/device/stage.sh lock       # only when requirements.txt changed: resolve again and
#                                          # rewrite wheels.lock (review and commit the diff)
#   bash deploy/device/stage.sh parts      # list the calls to make: one part per device call
# On the device, one call per part, back to back while the machine stays warm (30 s idle):
#   bash deploy/device/stage.sh remote 0   # carry .stage/parts/part00 .stage/parts/MANIFEST .stage/tools/zstd_min.zip
#   bash deploy/device/stage.sh remote 1   # carry .stage/parts/part01 .stage/parts/MANIFEST
#   ...                                    # the last part unpacks and checks the imports
#   source deploy/device/env.sh            # every later command
#
# Why not pip on the device: nothing is reachable there and the working tree that travels with a
# call is capped at 64 MiB. So the wheels are installed HERE with `pip install --target` for
# CPython 3.12 manylinux x86-64 (pure unpacking, no build), packed as one zstd tar (about 360 MiB),
# split into 46 MiB parts and appended on the device, checked by sha256 and unpacked in seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STAGE_LOCAL="$ROOT/.stage"
WHL="$ROOT/.whl"
# 46 MiB parts leave room under the 64 MiB per call for the tree (about 12 MiB now: translations and
# docs/results) and, with part 0, the zstd decoder (~3 MiB); the last part, the remainder, also brings
# the task set (~8 MiB).
PART_MIB="${M3_PART_MIB:-46}"
REMOTE="${M3STAGE:-/root/m3stage}"

now() { date +%s.%N; }
log() { printf '[stage %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --------------------------------------------------------------------------------------------------
# local half
# --------------------------------------------------------------------------------------------------
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64
  manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64
  manylinux_2_5_x86_64 manylinux1_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64
  manylinux_2_35_x86_64 linux_x86_64)
plat_args() { for p in "${PLATFORMS[@]}"; do printf -- '--platform\n%s\n' "$p"; done; }

LOCK="$ROOT/deploy/device/wheels.lock"
REQS="$ROOT/deploy/device/requirements.txt"
reqs_digest() { grep -v '^\s*#' "$REQS" | sed '/^\s*$/d' | sha256sum | cut -c1-16; }

# Resolve requirements.txt again and rewrite the lock. Only this command writes wheels.lock; `local`
# downloads exactly what it pins (no resolution), so staging twice stages the same wheels.
lock_half() {
  local pip=("$ROOT/.venv/bin/python" -m pip --disable-pip-version-check)
  mapfile -t PLAT < <(plat_args)
  mkdir -p "$STAGE_LOCAL/stubs"
  # Resolve for CPython 3.12 against placeholder wheels of what the image has at the pinned versions
  # (torch 2.11.0 and friends): a plain download for another platform fails on torch's CUDA pins,
  # and the image's torch must not be replaced anyway.
  log "resolving deploy/device/requirements.txt for cp312 manylinux x86-64"
  "$ROOT/.venv/bin/python" "$ROOT/deploy/device/mkstub.py" "$STAGE_LOCAL/stubs" \
    torch==2.11.0+stub torchvision==0.26.0+stub torchaudio==2.11.0+stub triton==3.6.0+stub >/dev/null
  "${pip[@]}" install --dry-run --ignore-installed --quiet --report "$STAGE_LOCAL/report.json" \
    --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
    --find-links "$STAGE_LOCAL/stubs" -r "$REQS" \
    torch==2.11.0+stub torchvision==0.26.0+stub torchaudio==2.11.0+stub triton==3.6.0+stub
  # Keep what the image lacks (deploy/device/wheelset.py says what is left out and why).
  {
    echo "# requirements $(reqs_digest): written by \`stage.sh lock\`; \`stage.sh local\` stages exactly these"
    "$ROOT/.venv/bin/python" "$ROOT/deploy/device/wheelset.py" "$STAGE_LOCAL/report.json"
  } >"$LOCK.new"
  mv "$LOCK.new" "$LOCK"
  log "wrote $LOCK ($(grep -vc '^#' "$LOCK") wheels); review the diff and commit it"
}

local_half() {
  local pip=("$ROOT/.venv/bin/python" -m pip --disable-pip-version-check)
  local py312="${M3_PY312:-}"
  if [[ -z "$py312" ]]; then
    for c in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
      if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py312="$(command -v "$c")"; break; fi
    done
  fi
  [[ -x "$py312" ]] || { echo "error: need a CPython 3.12 here to unpack the wheels (set M3_PY312)" >&2; exit 2; }
  mapfile -t PLAT < <(plat_args)
  mkdir -p "$STAGE_LOCAL/tools" "$WHL/main" "$WHL/tf4"

  # 1. The lock must belong to today's requirements.txt (else: `stage.sh lock`, review, commit).
  local locked
  locked="$(awk 'NR == 1 && $2 == "requirements" {sub(":", "", $3); print $3}' "$LOCK")"
  if [[ "$locked" != "$(reqs_digest)" ]]; then
    echo "error: deploy/device/wheels.lock was locked for other requirements ($locked, now $(reqs_digest)); run \`bash deploy/device/stage.sh lock\`" >&2
    exit 2
  fi
  # 2. Download exactly the locked wheels (no resolution: the lock does not move).
  for group in main tf4; do
    grep -v '^#' "$LOCK" | awk -v g="$group" -F'\t' '$1 == g {print $2}' >"$STAGE_LOCAL/pins-$group.txt"
    log "downloading $(wc -l <"$STAGE_LOCAL/pins-$group.txt") wheels ($group)"
    "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLAT[@]}" -d "$WHL/$group" -r "$STAGE_LOCAL/pins-$group.txt"
  done
  "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLAT[@]}" -d "$STAGE_LOCAL/tools" zstandard==0.25.0
  # The device may have no zstd program: carry zstandard's C backend alone (2.7 MB, not 5.5).
  if [[ ! -f "$STAGE_LOCAL/tools/zstd_min.zip" ]]; then
    "$ROOT/.venv/bin/python" - "$STAGE_LOCAL/tools" <<'PY'
import sys, zipfile
from pathlib import Path
tools = Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tools.glob("zstandard-*.whl")))
with zipfile.ZipFile(tools / "zstd_min.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
    for name in wheel.namelist():
        if name == "zstandard/__init__.py" or name.startswith("zstandard/backend_c."):
            out.writestr(name, wheel.read(name))
PY
  fi
  # The task set the sweep replays (images rendered here: the device has no CJK/Devanagari fonts).
  # The first 48 problems of each language (480 image tasks, about 8 MiB): it travels with the last
  # part, and part + tree + tasks must stay under the 64 MiB a call carries (the whole set is 31 MiB).
  if [[ ! -f "$STAGE_LOCAL/tasks/tasks.jsonl" || "$(wc -l <"$STAGE_LOCAL/tasks/tasks.jsonl")" -ne 480 ]]; then
    log "building the task set into .stage/tasks"
    rm -rf "$STAGE_LOCAL/tasks"
    "$ROOT/.venv/bin/m3bench" tasks build --out "$STAGE_LOCAL/tasks" --no-text-only --limit-per-language 48
  fi
  # Exactly the locked set: a wheel left over from an earlier lock would install a second version.
  "$ROOT/.venv/bin/python" - "$WHL" "$ROOT/deploy/device/wheels.lock" <<'PY'
import re, sys
from pathlib import Path
whl, lock = Path(sys.argv[1]), Path(sys.argv[2])
want = {}
for line in lock.read_text().splitlines():
    if line.startswith("#"):
        continue
    group, pin = line.split("\t")
    name, version = pin.split("==")
    want[(group, re.sub(r"[-_.]+", "_", name).lower(), version)] = pin
seen = set()
for path in sorted(whl.glob("*/*.whl")):
    name, version = path.name.split("-")[:2]
    key = (path.parent.name, re.sub(r"[-_.]+", "_", name).lower(), version)
    if key in want:
        seen.add(key)
    else:
        print(f"removing {path.name}: not in the lock")
        path.unlink()
missing = set(want) - seen
if missing:
    sys.exit(f"error: wheels missing for {sorted(want[k] for k in missing)}")
PY
  # 3. Unpack here (pip --target for CPython 3.12 is pure unzipping: no build step, no compile).
  local stamp
  stamp="$(sha256sum "$ROOT/deploy/device/wheels.lock" | cut -c1-16)"
  if [[ ! -f "$STAGE_LOCAL/site/.lock-$stamp" ]]; then
    log "unpacking into .stage/site and .stage/site_tf4"
    rm -rf "$STAGE_LOCAL/site" "$STAGE_LOCAL/site_tf4"
    "$py312" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile \
      --no-warn-script-location --target "$STAGE_LOCAL/site" "$WHL"/main/*.whl
    "$py312" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile \
      --no-warn-script-location --target "$STAGE_LOCAL/site_tf4" "$WHL"/tf4/*.whl
    # Console scripts name this machine's interpreter; on the device `python3` is the torch one.
    for f in "$STAGE_LOCAL"/site/bin/* "$STAGE_LOCAL"/site_tf4/bin/*; do
      [[ -f "$f" ]] && sed -i '1s|^#!.*python[0-9.]*$|#!/usr/bin/env python3|' "$f"
    done
    touch "$STAGE_LOCAL/site/.lock-$stamp"
  fi
  # 4. Pack and split.
  if [[ ! -f "$STAGE_LOCAL/parts/MANIFEST" || "$STAGE_LOCAL/site/.lock-$stamp" -nt "$STAGE_LOCAL/parts/MANIFEST" ]]; then
    log "packing (zstd -9 --long=27)"
    rm -rf "$STAGE_LOCAL/parts"
    mkdir -p "$STAGE_LOCAL/parts"
    tar -C "$STAGE_LOCAL" -cf - site site_tf4 | nice -n 10 zstd -q -T2 -9 --long=27 -o "$STAGE_LOCAL/bundle.tar.zst" -f
    split -b "${PART_MIB}M" -d -a 2 "$STAGE_LOCAL/bundle.tar.zst" "$STAGE_LOCAL/parts/part"
    {
      echo "lock $stamp"
      echo "bundle $(sha256sum "$STAGE_LOCAL/bundle.tar.zst" | cut -d' ' -f1) $(stat -c %s "$STAGE_LOCAL/bundle.tar.zst")"
      echo "parts $(find "$STAGE_LOCAL/parts" -name 'part[0-9][0-9]' | wc -l)"
      (cd "$STAGE_LOCAL/parts" && sha256sum part[0-9][0-9])
    } >"$STAGE_LOCAL/parts/MANIFEST"
    rm -f "$STAGE_LOCAL/bundle.tar.zst"
  fi
  cat "$STAGE_LOCAL/parts/MANIFEST"
  du -sh "$STAGE_LOCAL/parts"
}

parts_half() {
  local n
  n="$(awk '$1 == "parts" {print $2}' "$STAGE_LOCAL/parts/MANIFEST")"
  for ((i = 0; i < n; i++)); do
    local carry="[\".stage/parts/part$(printf %02d "$i")\", \".stage/parts/MANIFEST\""
    ((i == 0)) && carry+=", \".stage/tools/zstd_min.zip\""
    ((i == n - 1)) && carry+=", \".stage/tasks\""
    echo "run: bash deploy/device/stage.sh remote $i    carry: $carry]"
  done
}

# --------------------------------------------------------------------------------------------------
# remote half (on the device)
# --------------------------------------------------------------------------------------------------
remote_half() {
  local i="$1" t0 manifest="$ROOT/.stage/parts/MANIFEST" n bundle_sha part
  t0="$(now)"
  [[ -f "$manifest" ]] || { echo "error: .stage/parts/MANIFEST was not carried" >&2; exit 2; }
  n="$(awk '$1 == "parts" {print $2}' "$manifest")"
  bundle_sha="$(awk '$1 == "bundle" {print $2}' "$manifest")"
  part="$ROOT/.stage/parts/part$(printf %02d "$i")"
  [[ -f "$part" ]] || { echo "error: $part was not carried" >&2; exit 2; }

  if ((i == 0)); then
    rm -rf "$REMOTE"
    mkdir -p "$REMOTE/tools"
    echo "$bundle_sha" >"$REMOTE/MARKER"
    echo 0 >"$REMOTE/RECEIVED"
    : >"$REMOTE/bundle.tar.zst"
    python3 -m zipfile -e "$ROOT/.stage/tools/zstd_min.zip" "$REMOTE/tools"
    log "zstd program: $(command -v zstd || echo none, using the zstandard module)"
    log "fresh stage at $REMOTE; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true)"
    python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' || true
  fi
  # A fresh machine (given back in between) or another bundle: start again from part 0.
  if [[ ! -f "$REMOTE/MARKER" || "$(cat "$REMOTE/MARKER")" != "$bundle_sha" ]]; then
    echo "STAGE-RESTART: this machine has no stage of bundle ${bundle_sha:0:12} (fresh machine?): run part 0 again" >&2
    exit 3
  fi
  local got
  got="$(cat "$REMOTE/RECEIVED")"
  if ((got != i)); then
    echo "STAGE-RESTART: expected part $got, got part $i" >&2
    exit 3
  fi
  local want have
  want="$(awk -v p="part$(printf %02d "$i")" '$2 == p {print $1}' "$manifest")"
  have="$(sha256sum "$part" | cut -d' ' -f1)"
  [[ "$want" == "$have" ]] || { echo "error: part $i sha256 mismatch" >&2; exit 4; }
  cat "$part" >>"$REMOTE/bundle.tar.zst"
  echo $((i + 1)) >"$REMOTE/RECEIVED"
  log "part $((i + 1))/$n received ($(stat -c %s "$part") bytes) in $(python3 -c "print(f'{$(now) - $t0:.1f}')") s"
  ((i + 1 == n)) || return 0

  have="$(sha256sum "$REMOTE/bundle.tar.zst" | cut -d' ' -f1)"
  [[ "$have" == "$bundle_sha" ]] || { echo "error: bundle sha256 mismatch" >&2; exit 4; }
  if command -v zstd >/dev/null; then
    zstd -q -d --long=31 -c "$REMOTE/bundle.tar.zst" | tar -C "$REMOTE" -xf -
  else
    PYTHONPATH="$REMOTE/tools" python3 -c '
import sys, zstandard
zstandard.ZstdDecompressor(max_window_size=2**31).copy_stream(open(sys.argv[1], "rb"), sys.stdout.buffer)
' "$REMOTE/bundle.tar.zst" | tar -C "$REMOTE" -xf -
  fi
  rm -f "$REMOTE/bundle.tar.zst"
  if [[ -f "$ROOT/.stage/tasks/tasks.jsonl" ]]; then
    rm -rf "$REMOTE/tasks" && cp -r "$ROOT/.stage/tasks" "$REMOTE/tasks"
  fi
  touch "$REMOTE/READY"
  log "unpacked: $(du -sh "$REMOTE/site" | cut -f1) + $(du -sh "$REMOTE/site_tf4" | cut -f1); staging call took $(python3 -c "print(f'{$(now) - $t0:.1f}')") s"
  # shellcheck source=deploy/device/env.sh
  source "$ROOT/deploy/device/env.sh"
  python3 "$ROOT/deploy/device/check_imports.py"
}

case "${1:-}" in
  lock) lock_half ;;
  local) local_half ;;
  parts) parts_half ;;
  remote) remote_half "${2:?part index}" ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
