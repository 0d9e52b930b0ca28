#!/usr/bin/env bash
# One device call: serve one model on the H200 and measure it with vLLM's own benchmark and with
# m3bench (closed-loop saturation, then an open-loop rate sweep), within one call's 10 minutes.
#
#   bash deploy/device/run.sh ray  awq|bf16    # Ray Serve LLM app from the catalog (`m3bench serve up`)
#   bash deploy/device/run.sh bare awq|bf16    # bare `vllm serve` (OpenAI server) with the same engine
#
# Needs a staged machine (deploy/device/stage.sh). Everything lands in $M3STAGE/runs/<tag>/ and is
# packed into $OUT (the files the device tool brings back): <tag>.tgz (split in 15 MiB pieces if
# larger) and <tag>-brief.txt. Steps run in order of importance and each checks the time left
# (M3_BUDGET_S, default 565 s), so a slow start costs the last steps, not the whole call.
set -uo pipefail

MODE="${1:?ray|bare}"
VARIANT="${2:?awq|bf16}"
STEPS="${3:-vb-c256,m3-c256,m3-open,vb-r16}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/device/env.sh
source "$HERE/env.sh" || exit 3
T0="$(date +%s)"
BUDGET="${M3_BUDGET_S:-565}"
MODEL_ID="llava-1.5-7b-$VARIANT"
MODEL_DIR="$HERE/models/$MODEL_ID"
TOKENIZER="$HERE/models/llava-1.5-7b-bf16"
# M3_CATALOG=deploy/device/models/h200-dummy-batched.yaml: Ray's 50 ms stream batching (throughput).
CATALOG="${M3_CATALOG:-$HERE/models/h200-dummy.yaml}"
TAG="${MODE}-${VARIANT}"
RUN="$M3STAGE/runs/$TAG"
LOGS="$RUN/logs"
mkdir -p "$RUN" "$LOGS"
BRIEF="$RUN/brief.txt"
: >"$BRIEF"
RAY_ADDRESS_LOCAL="127.0.0.1:6379"
SERVE_STATE="$M3STAGE/serve-state"
if [[ "$MODE" == ray ]]; then PORT=8000; else PORT=8001; fi
ENDPOINT="http://127.0.0.1:$PORT"

left() { echo $((BUDGET - ($(date +%s) - T0))); }
say() { printf '[%s +%3ss] %s\n' "$(date +%H:%M:%S)" "$(($(date +%s) - T0))" "$*" | tee -a "$BRIEF"; }
# `m3bench serve|load ...`; should the whole CLI fail to import on the device (it imports every stage),
# the same Typer group apps directly (serving.cli / loadgen.cli are what `m3bench serve|load` run).
M3_CLI=full
m3bench() { python3 -c 'import sys; from m3bench.cli import main; sys.argv[0] = "m3bench"; main()' "$@"; }
serve_cli() {
  if [[ "$M3_CLI" == full ]]; then m3bench serve "$@"
  else python3 -c 'import sys; from serving.cli import app; sys.argv[0] = "m3bench serve"; app()' "$@"; fi
}
load_cli() {
  if [[ "$M3_CLI" == full ]]; then m3bench load "$@"
  else python3 -c 'import sys; from loadgen.cli import app; sys.argv[0] = "m3bench load"; app()' "$@"; fi
}

# GPU memory and load once a second for the whole call (our own process: stopped by its pid).
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total,power.draw,clocks.sm \
  --format=csv,noheader -lms 1000 >"$RUN/gpu.csv" 2>/dev/null &
SMI_PID=$!

# ------------------------------------------------------------------------------------------ server
gpu_free() {
  # After an app is taken down its engine must give the GPU back; wait, then end leftovers by pid.
  local t=$(date +%s) used
  while (($(date +%s) - t < 60)); do
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    ((used < 3000)) && { say "GPU free (${used} MiB used)"; return 0; }
    sleep 2
  done
  say "GPU still holds ${used} MiB after 60 s; ending its processes by pid"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader | tee -a "$BRIEF"
  for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader); do kill "$pid" 2>/dev/null; done
  sleep 5
}

take_down_previous() {
  if [[ -f "$SERVE_STATE/serve-state.json" ]]; then
    say "taking the previous Ray Serve apps down"
    serve_cli down --state-dir "$SERVE_STATE" >>"$LOGS/serve-down.log" 2>&1
    gpu_free
  fi
  for f in "$M3STAGE"/bare-*.pid; do
    [[ -f "$f" ]] || continue
    say "stopping the previous bare server (pid $(cat "$f"))"
    kill "$(cat "$f")" 2>/dev/null
    rm -f "$f"
    gpu_free
  done
}

stop_haproxy() {
  # `ray stop` leaves HAProxy running on its ports: end the one Ray started (its config under
  # /tmp/haproxy-serve, Ray's default with --address), by pid.
  local pid
  for pid in $(pgrep -f -- '-f /tmp/haproxy-serve/haproxy.cfg' || true); do
    say "stopping HAProxy pid $pid"
    kill "$pid" 2>/dev/null
  done
}

ray_up() {
  # The catalog's serving mode (ingress, direct streaming) as Ray's variables: `ray start` needs them
  # as well as the process that deploys (serve up sets them there itself).
  local mode_env
  mode_env="$(serve_cli env --catalog "$CATALOG" 2>>"$LOGS/serve-env.log")" || { say "serve env failed"; return 1; }
  eval "$mode_env"
  # A port probe, not ray.init: ray.init on an address with no GCS retries for minutes.
  if timeout 3 bash -c '</dev/tcp/127.0.0.1/6379' 2>/dev/null && [[ "$(cat "$M3STAGE/ray-mode" 2>/dev/null)" != "$mode_env" ]]; then
    say "the Ray head runs another serving mode: restarting it"
    take_down_previous
    ray stop --force >>"$LOGS/ray-stop.log" 2>&1
    stop_haproxy
  fi
  if ! timeout 3 bash -c '</dev/tcp/127.0.0.1/6379' 2>/dev/null; then
    say "starting Ray head (16 CPUs, 1 GPU), mode: $(tr '\n' ' ' <<<"$mode_env" | cut -c1-200)"
    setsid ray start --head --port=6379 --num-cpus=16 --num-gpus=1 --dashboard-host=127.0.0.1 \
      --metrics-export-port=8080 --disable-usage-stats --temp-dir=/tmp/ray >"$LOGS/ray-start.log" 2>&1 </dev/null
    say "ray start rc=$? ($(tail -1 "$LOGS/ray-start.log" | cut -c1-100))"
    echo "$mode_env" >"$M3STAGE/ray-mode"
  fi
  take_down_previous
  say "m3bench serve up --only $MODEL_ID"
  local t=$(date +%s)
  timeout $(($(left) - 200)) bash -c "M3_CLI=$M3_CLI; $(declare -f serve_cli m3bench); serve_cli up --catalog '$CATALOG' --only '$MODEL_ID' \
    --address '$RAY_ADDRESS_LOCAL' --http-port $PORT --state-dir '$SERVE_STATE' --timeout 380" \
    >"$LOGS/serve-up.log" 2>&1
  local rc=$?
  say "serve up rc=$rc after $(($(date +%s) - t)) s: $(tail -1 "$LOGS/serve-up.log" | cut -c1-200)"
  if ((rc != 0)); then
    tail -30 "$LOGS/serve-up.log"
    say "FALLBACK: Ray Serve LLM directly (deploy/device/ray_app.py)"
    t=$(date +%s)
    timeout $(($(left) - 180)) python3 "$HERE/ray_app.py" "$MODEL_ID" "$MODEL_DIR" "$PORT" >"$LOGS/ray-app.log" 2>&1
    rc=$?
    say "ray_app rc=$rc after $(($(date +%s) - t)) s: $(tail -1 "$LOGS/ray-app.log" | cut -c1-200)"
    ((rc == 0)) || { tail -30 "$LOGS/ray-app.log"; return 1; }
    TAG_NOTE="ray_app.py fallback"
  fi
  return 0
}

bare_up() {
  take_down_previous
  say "starting bare vLLM OpenAI server for $MODEL_ID on :$PORT"
  setsid python3 -m vllm.entrypoints.openai.api_server --host 127.0.0.1 --port "$PORT" \
    --model "$MODEL_DIR" --served-model-name "$MODEL_ID" --load-format dummy --dtype bfloat16 \
    --max-model-len 4096 --max-num-seqs 256 --max-num-batched-tokens 8192 --gpu-memory-utilization 0.9 \
    --limit-mm-per-prompt '{"image": 1}' --no-enable-prefix-caching --mm-processor-cache-gb 0 --seed 0 \
    >"$LOGS/vllm-server.log" 2>&1 </dev/null &
  echo $! >"$M3STAGE/bare-$PORT.pid"
  local t=$(date +%s)
  # The server keeps starting in the background (setsid) if this call gives up on it.
  while (($(date +%s) - t < 300 && $(left) > 40)); do
    if ! kill -0 "$(cat "$M3STAGE/bare-$PORT.pid")" 2>/dev/null; then
      say "bare server exited"; tail -40 "$LOGS/vllm-server.log"; return 1
    fi
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "$ENDPOINT/v1/models")
    if [[ "$code" == 200 ]]; then say "bare server ready after $(($(date +%s) - t)) s"; return 0; fi
    if [[ "$code" =~ ^4 ]]; then say "bare server answers HTTP $code: failing"; return 1; fi
    sleep 2
  done
  say "bare server not ready in time"; tail -20 "$LOGS/vllm-server.log"; return 1
}

smoke() {
  # One image request: must stream, and produce exactly 256 tokens.
  python3 "$HERE/smoke.py" "$ENDPOINT" "$MODEL_ID" "$M3STAGE/tasks" | tee -a "$BRIEF"
}

# ------------------------------------------------------------------------------------------ steps
vb() {  # vllm bench serve: name, extra args...
  local name="$1"; shift
  say "vllm bench serve $name $*"
  timeout $(($(left) - 25)) python3 -m vllm.entrypoints.cli.main bench serve --backend openai-chat \
    --base-url "$ENDPOINT" --endpoint /v1/chat/completions --model "$MODEL_ID" --tokenizer "$TOKENIZER" \
    --dataset-name custom_image --dataset-path "$M3STAGE/vb-dataset.jsonl" --custom-output-len 256 \
    --ignore-eos --temperature 0 --extra-body '{"min_tokens": 256}' --seed 0 \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 \
    --save-result --save-detailed --result-dir "$RUN" --result-filename "vb-$name.json" "$@" \
    >"$LOGS/vb-$name.log" 2>&1
  local rc=$?
  sed -n '/Serving Benchmark Result/,/^====*$/p' "$LOGS/vb-$name.log" | tee -a "$BRIEF"
  ((rc == 0)) || { say "vllm bench $name rc=$rc"; tail -15 "$LOGS/vb-$name.log"; }
}

m3() {  # m3bench load run: name, profile
  local name="$1" profile="$2" need="$3"
  if (($(left) < need)); then say "skipping m3bench $name: $(left) s left, needs $need"; return; fi
  say "m3bench load run $name ($profile)"
  timeout $(($(left) - 20)) bash -c "M3_CLI=$M3_CLI; $(declare -f load_cli m3bench); load_cli run --endpoint '$ENDPOINT' \
    --tasks '$M3STAGE/tasks' --models '$MODEL_ID' --profile '$profile' --out '$RUN/m3bench' --run-id '$TAG-$name'" \
    >"$LOGS/m3-$name.log" 2>&1
  local rc=$?
  grep -v '^\[load\]' "$LOGS/m3-$name.log" | tail -12 | tee -a "$BRIEF"
  ((rc == 0)) || say "m3bench $name rc=$rc"
  # Measured 2026-11-28 on the H200: with Locust workers the master could start the stage before a
  # worker had built its runtime (loadgen race, see docs/results/h200/README.md) and the run ended
  # with 0 records. Then run again in one generator process.
  local records
  records=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("records", 0))' \
    "$RUN/m3bench/$TAG-$name/summary.json" 2>/dev/null || echo 0)
  if ((records == 0 && $(left) > need)); then
    say "m3bench $name measured nothing with Locust workers; again in one process (--workers 0)"
    timeout $(($(left) - 20)) bash -c "M3_CLI=$M3_CLI; $(declare -f load_cli m3bench); load_cli run --endpoint '$ENDPOINT' \
      --tasks '$M3STAGE/tasks' --models '$MODEL_ID' --profile '$profile' --out '$RUN/m3bench' --run-id '$TAG-$name-w0' --workers 0" \
      >"$LOGS/m3-$name-w0.log" 2>&1
    grep -v '^\[load\]' "$LOGS/m3-$name-w0.log" | tail -12 | tee -a "$BRIEF"
  fi
}

metrics_snapshot() {
  local name="$1"
  if [[ "$MODE" == ray ]]; then
    curl -s --max-time 5 http://127.0.0.1:8080/metrics >"$RUN/metrics-$name.prom" 2>/dev/null
  else
    curl -s --max-time 5 "$ENDPOINT/metrics" >"$RUN/metrics-$name.prom" 2>/dev/null
  fi
}

engine_log_facts() {
  local where
  if [[ "$MODE" == ray ]]; then where=/tmp/ray/session_latest/logs; else where="$LOGS/vllm-server.log"; fi
  grep -rhoE "(Model loading took|Available KV cache memory|GPU KV cache size|Maximum concurrency for|torch.compile took|torch.compile takes|Graph capturing finished|init engine|Using .*(Linear|kernel|backend)|awq_marlin|Machete|Marlin|FLASH_ATTN|Chunked prefill|max_num_batched_tokens)[^\"]{0,160}" \
    $where 2>/dev/null | sort | uniq -c | sort -rn | head -40 >"$RUN/engine-facts.txt"
  cat "$RUN/engine-facts.txt" | tee -a "$BRIEF" | head -25 >/dev/null
}

finish() {
  kill "$SMI_PID" 2>/dev/null
  nvidia-smi >"$RUN/nvidia-smi.txt" 2>&1
  engine_log_facts
  cp "$SERVE_STATE"/serve-*.json "$RUN/" 2>/dev/null
  if [[ "$MODE" == ray ]]; then
    mkdir -p "$RUN/ray-logs"
    find /tmp/ray/session_latest/logs -maxdepth 2 -type f \( -name '*.log' -o -name '*.err' -o -name '*.out' \) -size -20M \
      -newermt "@$T0" -exec cp {} "$RUN/ray-logs/" \; 2>/dev/null
  fi
  say "call used $(($(date +%s) - T0)) s"
  cp "$BRIEF" "$M3_OUT/$TAG-brief.txt"
  tar -C "$M3STAGE/runs" -czf "$M3STAGE/$TAG.tgz" "$TAG"
  local size
  size=$(stat -c %s "$M3STAGE/$TAG.tgz")
  if ((size > 15 * 1024 * 1024)); then
    split -b 15M -d -a 1 "$M3STAGE/$TAG.tgz" "$M3_OUT/$TAG.tgz."
  else
    cp "$M3STAGE/$TAG.tgz" "$M3_OUT/"
  fi
  ls -l "$M3_OUT"
}
trap finish EXIT

# ------------------------------------------------------------------------------------------ main
[[ -f "$M3STAGE/vb-dataset.jsonl" ]] || python3 "$HERE/vllm_bench_dataset.py" "$M3STAGE/tasks" "$M3STAGE/vb-dataset.jsonl" 1024 0
say "$TAG: $MODEL_ID on $(nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader); steps $STEPS"
TAG_NOTE=""
t=$(date +%s)
if ! python3 -c 'import m3bench.cli' >"$LOGS/m3bench-import.log" 2>&1; then
  M3_CLI=groups
  say "WARNING: m3bench.cli does not import here (see logs/m3bench-import.log: $(tail -1 "$LOGS/m3bench-import.log" | cut -c1-160)); using the serve/load group apps directly"
fi
say "m3bench CLI: $M3_CLI (import check $(($(date +%s) - t)) s)"
if [[ -n "${M3_SKIP_SERVER:-}" ]]; then say "M3_SKIP_SERVER: using the server already at $ENDPOINT (local plumbing test)"
elif [[ "$MODE" == ray ]]; then ray_up || exit 1
else bare_up || exit 1; fi
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/GPU memory used with the model up: /' | tee -a "$BRIEF"
smoke
metrics_snapshot before
IFS=, read -ra want <<<"$STEPS"
for step in "${want[@]}"; do
  case "$step" in
    vb-c256) (($(left) > 70)) && vb c256 --num-prompts "${M3_VB_PROMPTS:-1024}" --max-concurrency "${M3_VB_C:-256}" --request-rate inf ;;
    m3-c256) m3 c256 "${M3_PROFILE_CLOSED:-$HERE/profiles/h200-closed.yaml}" 100 ;;
    m3-open) m3 open "${M3_PROFILE_OPEN:-$HERE/profiles/h200-open.yaml}" 200 ;;
    vb-r16) (($(left) > 60)) && vb r16 --num-prompts "${M3_VB_R16_PROMPTS:-400}" --request-rate 16 --burstiness 1.0 ;;
    *) say "unknown step $step" ;;
  esac
  metrics_snapshot "after-$step"
done
say "done ${TAG_NOTE}"
