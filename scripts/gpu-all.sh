#!/usr/bin/env bash
# Every GPU check of issue 6 in one run, from a bundle (the GPU machines lack ZeroMQ, Gloo and
# msgpack, so eep is built and packed elsewhere; see docs/cuda.md):
#   scripts/gpu-all.sh [BUNDLE] [RESULTS_DIR]
#     (defaults: .carry/bundle, else .carry/bundle.tgz; ./gpu-all-results, or on a device call
#      ($OUT set) one archive, $OUT/gpu-all-results.tgz: scripts/results-dir.sh)
# BUNDLE: the directory scripts/bundle.sh made, or its .tgz (scripts/bundle.sh --archive).
#   scripts/gpu-all.sh --build [RESULTS_DIR]       (on a machine with the build dependencies: builds
#                                                   build-cuda for sm_90a and bundles it first)
# Runs the GPU unit tests (kernels_test, nccl_group_test: multi-rank parts on >= 2 GPUs,
# backend_test, and its first-step check alone in its process), then scripts/gpu-serve.sh (the
# engines against the CPU, 2 engines on 2 GPUs over NCCL, 1 -> 2 -> 1 under load) on the small
# preset and on the trained checkpoint tests/data/qwen3-moe-trained, and prints one results
# table. NCCL_NVLS_ENABLE=0 is forced (shared multi-GPU hosts).
# Exit: 0 everything passed, 1 something failed, 2 usage.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [[ ${1:-} == --build ]]; then
  shift
  EEP_BUILD_DIR=build-cuda ./scripts/build.sh || exit 1
  ./scripts/bundle.sh build-cuda .carry/bundle || exit 1
  set -- .carry/bundle "$@"
fi
bundle=${1:-.carry/bundle}
results=${2:-}
script=gpu-all
# shellcheck source=scripts/results-dir.sh
source scripts/results-dir.sh
# shellcheck source=scripts/bundle-open.sh
source scripts/bundle-open.sh
# shellcheck disable=SC1091
source "$bundle/env"
export NCCL_NVLS_ENABLE=0
export EEP_TEST_DATA=$PWD/tests/data  # backend_test's trained checkpoint (this tree's copy)
mkdir -p "$results"
status=0
declare -a table

# run_test NAME TIMEOUT CMD...: a test program's exit code (77: skipped) as a table line.
run_test() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name"
  timeout "$limit" "$@" >"$results/$name.txt" 2>&1
  local rc=$? verdict
  case $rc in
    0) verdict=PASS ;;
    77) verdict="SKIP ($(grep -m1 -i skip "$results/$name.txt" | cut -c1-100))" ;;
    124) verdict="FAIL (timed out after ${limit} s)"; status=1 ;;
    *) verdict="FAIL (exit $rc, see $results/$name.txt)"; status=1 ;;
  esac
  tail -3 "$results/$name.txt"
  table+=("$(printf '%-22s %s (%d s)' "$name" "$verdict" $((SECONDS - t0)))")
}

run_test kernels_test 600 kernels_test
run_test nccl_group_test 600 nccl_group_test
run_test backend_test 600 backend_test --gtest_filter=-FirstStep.*
run_test backend_first_step 300 backend_test --gtest_filter=FirstStep.*

# serve NAME [MODEL]: gpu-serve.sh on the small preset, or on MODEL; its result lines.
declare -a serve_lines
serve() {
  echo "== gpu-serve ($1)"
  EEP_GPU_MODEL=${2:-} bash scripts/gpu-serve.sh "$bundle" "$results/$1" | tee "$results/$1.txt"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  serve_lines+=("serving, $1:")
  mapfile -t -O "${#serve_lines[@]}" serve_lines < <(sed -n '/^== results/,$p' "$results/$1.txt" | tail -n +2)
}
serve small
# The trained checkpoint: the issue's 99% greedy bar on prompts the model is sure of.
serve trained tests/data/qwen3-moe-trained

echo
echo "== results ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(nvidia-smi -L | wc -l) GPU(s))"
printf '%s\n' "${table[@]}" "${serve_lines[@]}"
exit $status
