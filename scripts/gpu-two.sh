#!/usr/bin/env bash
# The checks of issue 6 that need two GPUs (nvidia-h200-x2), from a bundle (scripts/bundle.sh):
#   scripts/gpu-two.sh [--parts LIST] [BUNDLE] [RESULTS_DIR]
#     (defaults: every part; .carry/bundle, else .carry/bundle.tgz; ./gpu-two-results, or on a
#      device call ($OUT set) one archive, $OUT/gpu-two-results-parts-LIST.tgz:
#      scripts/results-dir.sh)
# BUNDLE: the directory scripts/bundle.sh made, or its .tgz (scripts/bundle.sh --archive).
# LIST: the parts to run, comma-separated (all of them take longer than one 10-minute device
# call: run 1 in one call, 2-5 in another).
# 1. scripts/gpu-all.sh: every GPU test (nccl_group_test's multi-rank parts: send_recv_batch,
#    p2p bandwidth, split/shrink), 2 engines on 2 GPUs over NCCL, 1 -> 2 -> 1 under load (the
#    device weight path, the pause after the switch), on the small preset and the trained
#    checkpoint;
# 2. eep-bench transfer on small and a 4-layer qwen3-30b-a3b: the device weight path against
#    NCCL's own point-to-point figure in the same run (the >= 90% target);
# 3. gpu-serve.sh again with the stream-ordered MoE exchange (EEP_CUDA_DEVICE_EXCHANGE=1): two
#    engines' throughput with and without it;
# 4. eep-bench decode on GPU 0, qwen3-30b-a3b at batch 1, 32 and 256: one engine's tokens/s
#    against its floor at the GPU's own peak bandwidth;
# 5. grouped_gemm_bench and torch._grouped_mm (tests/gpu/grouped_mm_torch.py, where python3
#    has torch) on GPU 0, the model's expert GEMM shapes.
# Prints each part's summary; files under RESULTS_DIR. NCCL_NVLS_ENABLE=0 is forced.
# Parts 4 and 5 use GPU 0 only, so they also run on a one-GPU machine (e.g. nvidia-h200, for
# the issue's H200 figures while no two-GPU machine is lent): --parts 4,5.
# Exit: 0 all parts ran and passed, 1 a part failed, 2 usage, or fewer GPUs than the parts need
# (two for parts 1-3, one for 4-5).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
parts=1,2,3,4,5
if [[ ${1:-} == --parts ]]; then
  parts=${2:-}
  shift 2 || true
  [[ $parts =~ ^[1-5](,[1-5])*$ ]] || { echo "gpu-two: --parts takes a comma-separated list of 1-5" >&2; exit 2; }
fi
want() { [[ ,$parts, == *,$1,* ]]; }
bundle=${1:-.carry/bundle}
results=${2:-}
script=gpu-two
results_suffix=-parts-${parts//,/-}
# shellcheck source=scripts/results-dir.sh
source scripts/results-dir.sh
# shellcheck source=scripts/bundle-open.sh
source scripts/bundle-open.sh
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
need=1
if want 1 || want 2 || want 3; then need=2; fi
((gpus >= need)) || {
  echo "gpu-two: parts $parts need $need GPU(s), this machine has $gpus" >&2
  exit 2
}
export NCCL_NVLS_ENABLE=0
mkdir -p "$results"
status=0

if want 1; then
  echo "== 1. scripts/gpu-all.sh"
  bash scripts/gpu-all.sh "$bundle" "$results/all" >"$results/all.txt" 2>&1 || status=1
  sed -n '/^== results/,$p' "$results/all.txt"
  grep -hE "send_recv_batch|alltoallv 4|GB/s|FAIL" "$results/all/nccl_group_test.txt" | head -12
  grep -h "slow step\|weights moved" "$results/all/small/logs/coord-scale.log" 2>/dev/null | head -12
fi

# shellcheck disable=SC1091
source "$bundle/env"
if want 2; then
  echo "== 2. eep-bench transfer"
  for m in preset:small "preset:qwen3-30b-a3b,layers=4"; do
    f=$results/transfer-$(echo "$m" | tr ':,=' '___')
    if timeout 300 eep-bench transfer --backend cuda --model "$m" --peers 2 --bytes 1M,16M,256M \
      --iters 3 --json "$f.json" >"$f.txt" 2>&1; then :; else status=1; fi
    echo "-- $m"
    tail -12 "$f.txt"
  done
fi

if want 3; then
  echo "== 3. serving with EEP_CUDA_DEVICE_EXCHANGE=1"
  # Part 1's small checkpoint where this run made it; gpu-serve.sh writes its own otherwise.
  ckpt=$results/all/small/ckpt-small-bf16
  [[ -d $ckpt ]] || ckpt=
  if EEP_GPU_MODEL=$ckpt EEP_CUDA_DEVICE_EXCHANGE=1 timeout 600 \
    bash scripts/gpu-serve.sh "$bundle" "$results/exchange" >"$results/exchange.txt" 2>&1; then :; else status=1; fi
  grep -A12 "event scale 1" "$results/exchange.txt" | grep -v "^$" | head -8
  sed -n '/^== results/,$p' "$results/exchange.txt"
fi

if want 4; then
  echo "== 4. eep-bench decode, qwen3-30b-a3b, GPU 0"
  if timeout 300 eep-bench decode --backend cuda --model preset:qwen3-30b-a3b --batch 1,32,256 \
    --context 256 --steps 32 --json "$results/decode-qwen3-30b-a3b.json" \
    >"$results/decode-qwen3-30b-a3b.txt" 2>&1; then :; else status=1; fi
  tail -8 "$results/decode-qwen3-30b-a3b.txt"
fi

if want 5; then
  echo "== 5. expert grouped GEMM against torch._grouped_mm, GPU 0"
  mkdir -p "$results/grouped"
  timeout 300 grouped_gemm_bench "$results/grouped" >"$results/grouped/bench.txt" 2>&1 || status=1
  if python3 -c 'import torch' 2>/dev/null; then
    timeout 300 python3 tests/gpu/grouped_mm_torch.py "$results/grouped" \
      >"$results/grouped/torch.txt" 2>&1 || status=1
  else
    echo "skipped: python3 has no torch" >"$results/grouped/torch.txt"
  fi
  grep -hE '^RESULT impl=(device_offsets|device_swiglu|torch_grouped_mm) ' \
    "$results/grouped/bench.txt" "$results/grouped/torch.txt" | sed 's/ spread_ms=[^ ]*//'
fi
exit $status
