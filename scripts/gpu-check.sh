#!/usr/bin/env bash
# Runs eep's GPU checks on a machine with an NVIDIA GPU, from a build made elsewhere:
#   scripts/gpu-check.sh [BUILD_DIR] [RESULTS_DIR]
# BUILD_DIR (default build-cuda) holds tests/gpu/{kernels_test,grouped_gemm_bench} (and
# attention_bench, run when present); RESULTS_DIR (default $OUT, else ./gpu-check-results)
# receives the logs. Runs the kernel tests, the grouped GEMM benchmark and torch._grouped_mm on
# the same shapes (if python3 has torch), the attention benchmark, then prints a results table.
# Exit: 0 all tests passed, 1 a test failed or a step broke, 2 usage.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
results=${2:-${OUT:-gpu-check-results}}
bin=$build/tests/gpu
if [[ ! -x $bin/kernels_test || ! -x $bin/grouped_gemm_bench ]]; then
  echo "gpu-check: no $bin/kernels_test or $bin/grouped_gemm_bench (build with EEP_BUILD_DIR=$build ./scripts/build.sh)" >&2
  exit 2
fi
mkdir -p "$results"

# cuBLAS: the toolkit's, else the one PyTorch's wheels bring.
for d in /usr/local/cuda/lib64 \
         $(python3 -c 'import nvidia.cublas, os; print(os.path.join(nvidia.cublas.__path__[0], "lib"))' 2>/dev/null); do
  [[ -d $d ]] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done
if ldd "$bin/kernels_test" | grep -q "not found"; then
  echo "gpu-check: missing libraries:" >&2
  ldd "$bin/kernels_test" | grep "not found" >&2
  exit 1
fi

status=0
echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader \
  | tee "$results/device.txt"

echo "== kernels_test"
"$bin/kernels_test" 2>&1 | tee "$results/kernels_test.txt"
rc=${PIPESTATUS[0]}
[[ $rc -eq 0 ]] || status=1

echo "== grouped_gemm_bench"
"$bin/grouped_gemm_bench" "$results" 2>&1 | tee "$results/grouped_gemm_bench.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

echo "== attention_bench"
if [[ -x $bin/attention_bench ]]; then
  "$bin/attention_bench" 2>&1 | tee "$results/attention_bench.txt"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
else
  echo "skipped: no $bin/attention_bench" | tee "$results/attention_bench.txt"
fi

echo "== torch._grouped_mm"
if python3 -c 'import torch' 2>/dev/null; then
  PYTHONUNBUFFERED=1 python3 tests/gpu/grouped_mm_torch.py "$results" 2>&1 | tee "$results/grouped_mm_torch.txt"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
else
  echo "skipped: python3 has no torch" | tee "$results/grouped_mm_torch.txt"
fi

# Results table.
{
  echo
  echo "== results"
  pass=$(grep -c '^PASS' "$results/kernels_test.txt")
  fail=$(grep -c '^FAIL' "$results/kernels_test.txt")
  echo "kernels_test: $pass passed, $fail failed (exit $rc)"
  echo
  cat "$results"/grouped_gemm_bench.txt "$results"/grouped_mm_torch.txt 2>/dev/null | grep '^RESULT' | awk '
    {
      for (i = 2; i <= NF; ++i) { split($i, kv, "="); f[kv[1]] = kv[2] }
      key = f["tokens"] " " f["gemm"]
      if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
      tf[key, f["impl"]] = f["tflops"]; gb[key, f["impl"]] = f["w_gbps"]
      if (f["impl"] ~ /^shape_/ && !(f["impl"] in shseen)) { shseen[f["impl"]] = 1; shapes[++ns] = f["impl"] }
      if (f["impl"] ~ /^cublas/ && f["tflops"] + 0 > best[key] + 0) best[key] = f["tflops"]
      if (("vs_cublas" in f) && f["vs_cublas"] + 0 >= 0) {
        if (tolower(f["vs_cublas"]) ~ /nan|inf/) bad[key] = 1
        else if (f["vs_cublas"] + 0 > err[key] + 0) err[key] = f["vs_cublas"]
      }
      delete f
    }
    function v(x) { return x == "" ? "-" : x }
    function r(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2fx", a / b) : "-" }
    END {
      n = split("cublas_loop cublas_grouped cublas_streams cublas_split torch_grouped_mm device_offsets device_swiglu", im, " ")
      printf "TFLOP/s (device_swiglu: gate_up with SwiGLU fused, same FLOPs counted)\n"
      printf "%-7s %-8s", "tokens", "gemm"
      for (j = 1; j <= n; ++j) printf " %14s", im[j]
      printf " %12s %12s %14s\n", "best_cublas/t", "device/torch", "dev_vs_cublas"
      for (i = 1; i <= nk; ++i) {
        k = order[i]; split(k, p, " ")
        printf "%-7s %-8s", p[1], p[2]
        for (j = 1; j <= n; ++j) printf " %14s", v(tf[k, im[j]])
        printf " %12s %12s %14s\n", r(best[k], tf[k, "torch_grouped_mm"]), r(tf[k, "device_offsets"], tf[k, "torch_grouped_mm"]), (k in bad) ? "NaN" : v(err[k])
      }
      printf "\nweights read, GB/s (used experts x n x k x 2 bytes / time)\n"
      printf "%-7s %-8s", "tokens", "gemm"
      for (j = 1; j <= n; ++j) printf " %14s", im[j]
      printf "\n"
      for (i = 1; i <= nk; ++i) {
        k = order[i]; split(k, p, " ")
        printf "%-7s %-8s", p[1], p[2]
        for (j = 1; j <= n; ++j) printf " %14s", v(gb[k, im[j]])
        printf "\n"
      }
      if (ns > 0) {
        printf "\ndevice_offsets with each tile shape forced, TFLOP/s (weights GB/s)\n"
        printf "%-7s %-8s", "tokens", "gemm"
        for (j = 1; j <= ns; ++j) { s = shapes[j]; sub(/^shape_/, "", s); printf " %19s", s }
        printf "\n"
        for (i = 1; i <= nk; ++i) {
          k = order[i]; split(k, p, " ")
          printf "%-7s %-8s", p[1], p[2]
          for (j = 1; j <= ns; ++j) printf " %19s", v(tf[k, shapes[j]]) " (" v(gb[k, shapes[j]]) ")"
          printf "\n"
        }
      }
    }'
  echo
  grep '^case' "$results/attention_bench.txt" 2>/dev/null
} | tee "$results/summary.txt"
exit $status
