#!/usr/bin/env bats
# eep-engine command line: help, version, usage errors and bad models (exit 2), runtime failures
# (exit 1), --write-checkpoint, and the simplest life cycle against a real coordinator. Every
# process started here is stopped in teardown.

load common

@test "--help exits 0" {
  run -0 "$ENGINE" --help
}

@test "--help prints the usage on stdout" {
  run --separate-stderr "$ENGINE" --help
  [[ "$output" == *"--model"* ]]
}

@test "--help prints nothing on stderr" {
  run --separate-stderr "$ENGINE" --help
  [ -z "$stderr" ]
}

@test "--version prints 'eep-engine 0.1.0'" {
  run -0 --separate-stderr "$ENGINE" --version
  [ "$output" = "eep-engine 0.1.0" ]
}

@test "an unknown flag exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --no-such-flag
}

@test "an unknown flag is named on stderr" {
  run --separate-stderr "$ENGINE" --model preset:tiny --no-such-flag
  [[ "$stderr" == *"--no-such-flag"* ]]
}

@test "without --model exits 2" {
  run -2 --separate-stderr "$ENGINE"
}

@test "without --model says --model is required" {
  run --separate-stderr "$ENGINE"
  [[ "$stderr" == *"--model"*"required"* ]]
}

@test "EEP_MODEL from the environment satisfies --model" {
  EEP_MODEL=preset:tiny run -0 --separate-stderr "$ENGINE" \
    --write-checkpoint "$BATS_TEST_TMPDIR/ckpt"
}

@test "--model preset:nope exits 2" {
  run -2 --separate-stderr timeout 20 "$ENGINE" --coord "$ADDR" --model preset:nope
}

@test "--model preset:nope says unknown preset and lists the known ones" {
  run --separate-stderr timeout 20 "$ENGINE" --coord "$ADDR" --model preset:nope
  [[ "$stderr" == *"unknown model preset 'nope' (known: tiny"* ]]
}

@test "--model naming a missing directory exits 2" {
  run -2 --separate-stderr timeout 20 "$ENGINE" --coord "$ADDR" --model "$BATS_TEST_TMPDIR/none"
}

@test "--model naming a missing directory says it is not a directory" {
  run --separate-stderr timeout 20 "$ENGINE" --coord "$ADDR" --model "$BATS_TEST_TMPDIR/none"
  [[ "$stderr" == *"none: not a directory"* ]]
}

@test "--backend tpu exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --backend tpu
}

@test "--data-comm mpi exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --data-comm mpi
}

@test "--data-comm nccl with the cpu backend exits 2 before registering, naming why" {
  run -2 --separate-stderr timeout 20 "$ENGINE" --model preset:tiny --data-comm nccl \
    --coord tcp://127.0.0.1:1
  [[ "$stderr" == *"--data-comm nccl needs --backend cuda"* ]]
}

@test "--kv-blocks -1 exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --kv-blocks -1
}

@test "--gpu-memory-fraction 0 and 1.5 exit 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --gpu-memory-fraction 0
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --gpu-memory-fraction 1.5
}

@test "--backend cuda without a usable GPU fails before registering, naming why" {
  # CI has no GPU (and a CPU-only build has no CUDA): either way a clear error and exit 1,
  # without waiting for a coordinator that is not there.
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    skip "a GPU is visible here"
  fi
  run -1 --separate-stderr timeout 20 "$ENGINE" --model preset:tiny --backend cuda \
    --coord tcp://127.0.0.1:1
  [[ "$stderr" == *"CUDA"* || "$stderr" == *"cuda"* ]]
}

@test "--block-size 2048 (over 1024) exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --block-size 2048
}

@test "--help lists the elastic options" {
  run -0 --separate-stderr "$ENGINE" --help
  [[ "$output" == *"--collective-timeout-ms"*"EEP_COLLECTIVE_TIMEOUT_MS"*"--test-prepare-delay-ms"*"EEP_TEST_PREPARE_DELAY_MS"* ]]
}

@test "--collective-timeout-ms below 100 exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --collective-timeout-ms 99
}

@test "--test-prepare-delay-ms -1 exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --test-prepare-delay-ms -1
}

@test "--dtype f64 exits 2" {
  run -2 --separate-stderr "$ENGINE" --model preset:tiny --dtype f64 \
    --write-checkpoint "$BATS_TEST_TMPDIR/ckpt"
}

@test "--backend cuda exits 1 (the CUDA backend is not available in this version)" {
  run -1 --separate-stderr timeout 20 "$ENGINE" --coord "$ADDR" --model preset:tiny --backend cuda
}

@test "--backend cuda says why on stderr" {
  run --separate-stderr timeout 20 "$ENGINE" --coord "$ADDR" --model preset:tiny --backend cuda
  [[ "$stderr" == *"CUDA"*"--backend cpu"* ]]
}

@test "--write-checkpoint exits 0 and prints the directory" {
  run -0 --separate-stderr "$ENGINE" --model preset:tiny --write-checkpoint "$BATS_TEST_TMPDIR/ckpt"
  [ "$output" = "$BATS_TEST_TMPDIR/ckpt" ]
}

@test "--write-checkpoint writes config.json" {
  "$ENGINE" --model preset:tiny --write-checkpoint "$BATS_TEST_TMPDIR/ckpt" >/dev/null
  [ -s "$BATS_TEST_TMPDIR/ckpt/config.json" ]
}

@test "--write-checkpoint writes safetensors" {
  "$ENGINE" --model preset:tiny --write-checkpoint "$BATS_TEST_TMPDIR/ckpt" >/dev/null
  compgen -G "$BATS_TEST_TMPDIR/ckpt/*.safetensors" >/dev/null
}

@test "a written checkpoint is a valid --model" {
  "$ENGINE" --model preset:tiny --write-checkpoint "$BATS_TEST_TMPDIR/ckpt" >/dev/null
  run -0 --separate-stderr "$ENGINE" --model "$BATS_TEST_TMPDIR/ckpt" \
    --write-checkpoint "$BATS_TEST_TMPDIR/copy"
}

@test "without a coordinator it exits 1 after 10 s of silence" {
  run -1 --separate-stderr timeout 40 "$ENGINE" --coord "$ADDR" --model preset:tiny
}

@test "without a coordinator it says the coordinator was silent" {
  run --separate-stderr timeout 40 "$ENGINE" --coord "$ADDR" --model preset:tiny
  [[ "$stderr" == *"coordinator $ADDR"*"10000 ms"* ]]
}

@test "one engine makes a coordinator with --engines 1 serve" {
  start_coord --engines 1
  "$ENGINE" --coord "$ADDR" --model preset:tiny 2>"$BATS_TEST_TMPDIR/engine.log" &
  PIDS+=($!)
  wait_serving 1
}

@test "the engine exits 0 when the coordinator shuts down" {
  start_coord --engines 1
  "$ENGINE" --coord "$ADDR" --model preset:tiny 2>"$BATS_TEST_TMPDIR/engine.log" &
  local engine=$!
  PIDS+=("$engine")
  wait_serving 1
  "$SCALE" --coord "$ADDR" --timeout-ms 2000 shutdown
  wait_exit "$engine" 15
  [ "$EXIT_STATUS" -eq 0 ]
}

@test "the engine exits 0 on SIGTERM" {
  start_coord --engines 1
  "$ENGINE" --coord "$ADDR" --model preset:tiny 2>"$BATS_TEST_TMPDIR/engine.log" &
  local engine=$!
  PIDS+=("$engine")
  wait_serving 1
  kill -TERM "$engine"
  wait_exit "$engine" 15
  [ "$EXIT_STATUS" -eq 0 ]
}

@test "an engine beyond --engines is refused and exits 1" {
  start_coord --engines 1
  "$ENGINE" --coord "$ADDR" --model preset:tiny 2>"$BATS_TEST_TMPDIR/engine.log" &
  PIDS+=($!)
  wait_serving 1
  run -1 --separate-stderr timeout 30 "$ENGINE" --coord "$ADDR" --model preset:tiny
}

@test "an engine beyond --engines is told the cluster is complete" {
  start_coord --engines 1
  "$ENGINE" --coord "$ADDR" --model preset:tiny 2>"$BATS_TEST_TMPDIR/engine.log" &
  PIDS+=($!)
  wait_serving 1
  run --separate-stderr timeout 30 "$ENGINE" --coord "$ADDR" --model preset:tiny
  [[ "$stderr" == *"already has its engines"*"eep-scale up"* ]]
}

@test "an engine with another seed than the deployment's exits 2" {
  start_coord --engines 2
  "$ENGINE" --coord "$ADDR" --model preset:tiny --seed 1 2>"$BATS_TEST_TMPDIR/engine.log" &
  PIDS+=($!)
  wait_registered 1
  run -2 --separate-stderr timeout 30 "$ENGINE" --coord "$ADDR" --model preset:tiny --seed 2
}
