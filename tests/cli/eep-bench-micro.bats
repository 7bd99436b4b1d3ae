#!/usr/bin/env bats
# eep-bench moe, decode and transfer: help and version, every bad argument refused with exit 2
# and a one-line "eep-bench SUB: ..." naming the problem before any work (nothing on stdout), a
# backend this build cannot run refused with exit 1, and a short real CPU run of each on the
# tiny preset (the JSON report has every figure).

bats_require_minimum_version 1.5.0

BENCH="$EEP_BIN/eep-bench/eep-bench"

# refused SUB MESSAGE ARGS...: SUB exits 2 with "eep-bench SUB: ...MESSAGE..." on stderr and
# prints nothing on stdout.
refused() {
  local sub=$1 want=$2
  shift 2
  run --separate-stderr timeout 20 "$BENCH" "$sub" "$@"
  echo "status $status, stdout: $output, stderr: $stderr" >&2
  [ "$status" -eq 2 ]
  [[ "$stderr" == "eep-bench $sub: "*"$want"* ]]
  [ -z "$output" ]
}

@test "moe, decode and transfer are listed in eep-bench --help" {
  run -0 "$BENCH" --help
  [[ "$output" == *"moe "*"decode "*"transfer "* ]]
  [[ "$output" != *"not implemented"* ]]
}

@test "moe --help exits 0 and lists the flags" {
  run -0 --separate-stderr "$BENCH" moe --help
  for f in --backend --model --rows --iters --layer --device --json --bandwidth-gbs; do
    [[ "$output" == *"$f"* ]]
  done
  [ -z "$stderr" ]
}

@test "decode --help exits 0 and lists the flags" {
  run -0 --separate-stderr "$BENCH" decode --help
  for f in --backend --model --batch --context --steps --device --json --bandwidth-gbs --prefill-chunk; do
    [[ "$output" == *"$f"* ]]
  done
}

@test "transfer --help exits 0 and lists the flags" {
  run -0 --separate-stderr "$BENCH" transfer --help
  for f in --backend --model --peers --bytes --iters --device --json --timeout-ms; do
    [[ "$output" == *"$f"* ]]
  done
}

@test "moe --version prints the version" {
  run -0 --separate-stderr "$BENCH" moe --version
  [ "$output" = "eep-bench moe 0.1.0" ]
}

@test "moe: unknown backend" {
  refused moe "--backend: unknown backend 'tpu' (cpu or cuda)" --backend tpu
}

@test "moe: unknown preset" {
  refused moe "--model preset:nope:" --model preset:nope
}

@test "moe: missing checkpoint directory" {
  refused moe "--model $BATS_TEST_TMPDIR/none:" --model "$BATS_TEST_TMPDIR/none"
}

@test "moe: zero rows" {
  refused moe "--rows: 0 is out of range [1, 65536]" --rows 1,0
}

@test "moe: rows not a number" {
  refused moe "--rows: '3x' is not a whole number" --rows 3x
}

@test "moe: negative rows" {
  refused moe "--rows: '-4' is not a whole number" --rows=-4
}

@test "moe: empty item in rows" {
  refused moe "--rows: empty item in '1,,2'" --rows 1,,2
}

@test "moe: rows given twice" {
  refused moe "--rows: 8 is given twice" --rows 8,1,8
}

@test "moe: rows from EEP_ROWS" {
  EEP_ROWS=abc refused moe "--rows: 'abc' is not a whole number"
}

@test "moe: zero iterations" {
  refused moe "--iters" --iters 0
}

@test "moe: layer past the model's layers" {
  refused moe "--layer: 4 is out of range: the model has 4 layers" --model preset:tiny --layer 4
}

@test "moe: negative layer" {
  refused moe "--layer" --layer=-1
}

@test "moe: negative bandwidth" {
  refused moe "--bandwidth-gbs" --bandwidth-gbs=-5
}

@test "moe: unknown flag" {
  refused moe "--frob" --frob
}

@test "moe --backend cuda without a usable GPU exits 1 naming why" {
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    skip "a GPU is present"
  fi
  run --separate-stderr timeout 20 "$BENCH" moe --backend cuda --model preset:tiny
  echo "status $status, stderr: $stderr" >&2
  [ "$status" -eq 1 ]
  [[ "$stderr" == "eep-bench moe: "*"cuda"* || "$stderr" == "eep-bench moe: "*"CUDA"* ]]
  [ -z "$output" ]
}

@test "moe: a short CPU run on tiny reports every row count" {
  local json="$BATS_TEST_TMPDIR/moe.json"
  run -0 --separate-stderr timeout 60 "$BENCH" moe --model preset:tiny --rows 1,4,64 --iters 2 \
    --bandwidth-gbs 10 --json "$json"
  echo "$output" >&2
  [[ "$output" == *"eep-bench moe: backend cpu, preset:tiny layer 0"* ]]
  [[ "$output" == *"10.0 GB/s (given (--bandwidth-gbs))"* ]]
  [ "$(jq -c '[.results[].rows]' "$json")" = '[1,4,64]' ]
  [ "$(jq '[.results[] | .seconds_per_call > 0 and .gflops_per_s > 0 and .fraction_of_floor > 0] | all' "$json")" = true ]
  # tiny: top-2 of 8 experts; one row reaches 2, 64 rows reach all 8.
  [ "$(jq '.results[0].experts_touched' "$json")" -eq 2 ]
  [ "$(jq '.results[2].experts_touched' "$json")" -eq 8 ]
  # 2 * rows * (top_k * 3 * hidden * inter + experts * hidden) for one row: 2 * (2*3*64*32 + 8*64)
  [ "$(jq '.results[0].flops_per_call' "$json")" = 25600 ]
  [ "$(jq -r '.benchmark + " " + .config.backend' "$json")" = "moe cpu" ]
  [ "$(jq '.machine.cores > 0' "$json")" = true ]
}

@test "moe: --layer picks a layer of the model" {
  run -0 --separate-stderr timeout 60 "$BENCH" moe --model preset:tiny --rows 2 --iters 1 --layer 3 --bandwidth-gbs 10
  [[ "$output" == *"preset:tiny layer 3"* ]]
}

@test "decode: zero batch" {
  refused decode "--batch: 0 is out of range [1, 4096]" --batch 0
}

@test "decode: batch not a list of numbers" {
  refused decode "--batch: '1.5' is not a whole number" --batch 1,1.5
}

@test "decode: zero context" {
  refused decode "--context" --context 0
}

@test "decode: zero steps" {
  refused decode "--steps" --steps 0
}

@test "decode: context and steps past the model's positions" {
  refused decode "--context + --steps + 2 warm-up steps = 1025 is longer than the model's 1024 positions" \
    --model preset:tiny --context 1000 --steps 23
}

@test "decode: zero prefill chunk" {
  refused decode "--prefill-chunk" --prefill-chunk 0
}

@test "decode: unknown backend" {
  refused decode "--backend: unknown backend 'gpu'" --backend gpu
}

@test "decode: a short CPU run on tiny reports every batch size" {
  local json="$BATS_TEST_TMPDIR/decode.json"
  # Chunks of 4 rows split the 5-token prompts across forwards.
  run -0 --separate-stderr timeout 60 "$BENCH" decode --model preset:tiny --batch 1,3 --context 5 \
    --steps 3 --prefill-chunk 4 --bandwidth-gbs 10 --json "$json"
  echo "$output" >&2
  [[ "$output" == *"eep-bench decode: backend cpu, preset:tiny"* ]]
  [ "$(jq -c '[.results[].batch]' "$json")" = '[1,3]' ]
  [ "$(jq '[.results[] | .tokens_per_s > 0 and .ms_per_step > 0 and .floor_ms_per_step > 0] | all' "$json")" = true ]
  [ "$(jq '[.results[] | .experts_per_layer <= .experts_per_layer_bound and .experts_per_layer >= 2] | all' "$json")" = true ]
  # KV cache: ceil((5 + 3) / 16) = 1 block per sequence, 3 sequences at most.
  [ "$(jq '.config.num_kv_blocks' "$json")" -eq 3 ]
  [ "$(jq '.results[0].bytes_per_step.kv > 0 and .results[0].bytes_per_step.dense > 0' "$json")" = true ]
}

@test "decode: the cpu floor uses a measured memcpy bandwidth" {
  run -0 --separate-stderr timeout 60 "$BENCH" decode --model preset:tiny --batch 1 --context 2 --steps 1
  [[ "$output" == *"GB/s (measured: host memcpy"* ]]
}

@test "transfer: one peer" {
  refused transfer "--peers" --peers 1
}

@test "transfer: zero bytes" {
  refused transfer "--bytes: 0 is out of range" --bytes 0
}

@test "transfer: a size with an unknown suffix" {
  refused transfer "--bytes: '12x' is not a size" --bytes 1M,12x
}

@test "transfer: a size past 4 GiB" {
  refused transfer "--bytes: 5G is out of range" --bytes 5G
}

@test "transfer: zero iterations" {
  refused transfer "--iters" --iters 0
}

@test "transfer: a timeout too short" {
  refused transfer "--timeout-ms" --timeout-ms 5
}

@test "transfer --backend cuda without a usable GPU exits 1 naming why" {
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    skip "a GPU is present"
  fi
  run --separate-stderr timeout 20 "$BENCH" transfer --backend cuda --model preset:tiny
  [ "$status" -eq 1 ]
  [[ "$stderr" == "eep-bench transfer: "* ]]
}

@test "transfer: a short CPU run on tiny, 2 members" {
  local json="$BATS_TEST_TMPDIR/transfer.json"
  run -0 --separate-stderr timeout 60 "$BENCH" transfer --model preset:tiny --bytes 4K,64K --iters 2 --json "$json"
  echo "$output" >&2
  [[ "$output" == *"engine weight transfer, scale-up 1 -> 2"* ]]
  [ "$(jq -r .p2p_group "$json")" = gloo ]
  # 4K, 64K and the engine's mean message.
  [ "$(jq '.p2p | length' "$json")" -eq 3 ]
  [ "$(jq '[.p2p[] | .gbs > 0] | all' "$json")" = true ]
  [ "$(jq '.engine.bytes > 0 and .engine.move_gbs > 0 and .ratio_to_p2p_same_size > 0' "$json")" = true ]
  [ "$(jq '[.p2p[].bytes] | index('"$(jq .engine.mean_message_bytes "$json")"') != null' "$json")" = true ]
}

@test "transfer: 3 members (uneven 1 -> 3)" {
  local json="$BATS_TEST_TMPDIR/transfer.json"
  run -0 --separate-stderr timeout 60 "$BENCH" transfer --model preset:tiny --peers 3 --bytes 16K --iters 1 --json "$json"
  [ "$(jq -r .engine.transition "$json")" = "1 -> 3" ]
  [ "$(jq '.engine.bytes > 0' "$json")" = true ]
}
