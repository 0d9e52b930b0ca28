# Source on the device after `stage.sh remote` finished: the staged packages ahead of the image's.
# site: vLLM 0.22.0, Ray 2.56.1, fastapi 0.136.3, m3bench's deps; site_tf4: transformers 4.57.6 with
# tokenizers 0.22.2 / huggingface_hub 0.36.2 (the image's transformers 5.17 breaks vLLM 0.22.0).
M3_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export M3STAGE="${M3STAGE:-/root/m3stage}"
if [[ ! -f "$M3STAGE/READY" ]]; then
  echo "STAGE-RESTART: $M3STAGE is not staged on this machine (fresh machine?): run stage.sh remote 0.." >&2
  return 3 2>/dev/null || exit 3
fi
export PYTHONPATH="$M3_REPO:$M3STAGE/site:$M3STAGE/site_tf4"
export PATH="$M3STAGE/site/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export VLLM_NO_USAGE_STATS=1 VLLM_USE_FLASHINFER_SAMPLER=0 DO_NOT_TRACK=1
export RAY_USAGE_STATS_ENABLED=0 RAY_DEDUP_LOGS=0
export PYTHONUNBUFFERED=1
export M3_OUT="${OUT:-$M3STAGE/out}"
mkdir -p "$M3_OUT" "$M3STAGE/logs"
