#!/usr/bin/env bats
# eep-coord command line: help, version, usage errors (exit 2), runtime failures (exit 1), and the
# simplest life cycle (no engine: not serving; shutdown and signals exit 0). Every process
# started here is stopped in teardown.

load common

@test "--help exits 0" {
  run -0 "$COORD" --help
}

@test "--help prints the usage on stdout" {
  run --separate-stderr "$COORD" --help
  [[ "$output" == *"--bind"* ]]
}

@test "--help prints nothing on stderr" {
  run --separate-stderr "$COORD" --help
  [ -z "$stderr" ]
}

@test "--help lists the environment variables" {
  run --separate-stderr "$COORD" --help
  [[ "$output" == *"EEP_HEARTBEAT_TIMEOUT_MS"* ]]
}

@test "--help lists the scaling options" {
  run -0 --separate-stderr "$COORD" --help
  [[ "$output" == *"--max-engines"*"EEP_MAX_ENGINES"*"--scale-timeout-ms"*"EEP_SCALE_TIMEOUT_MS"* ]]
}

@test "--max-engines 0 exits 2" {
  run -2 --separate-stderr "$COORD" --max-engines 0
}

@test "--max-engines 5000 (over 4096) exits 2" {
  run -2 --separate-stderr "$COORD" --max-engines 5000
}

@test "--scale-timeout-ms below 100 exits 2" {
  run -2 --separate-stderr "$COORD" --scale-timeout-ms 99
}

@test "EEP_SCALE_TIMEOUT_MS=abc from the environment exits 2" {
  EEP_SCALE_TIMEOUT_MS=abc run -2 --separate-stderr "$COORD"
}

@test "SIGINT stops it with exit 0" {
  start_coord --engines 1
  kill -INT "$COORD_PID"
  wait_exit "$COORD_PID" 10
  [ "$EXIT_STATUS" -eq 0 ]
}

@test "--version prints 'eep-coord 0.1.0'" {
  run -0 --separate-stderr "$COORD" --version
  [ "$output" = "eep-coord 0.1.0" ]
}

@test "an unknown flag exits 2" {
  run -2 --separate-stderr "$COORD" --no-such-flag
}

@test "an unknown flag is named on stderr" {
  run --separate-stderr "$COORD" --no-such-flag
  [[ "$stderr" == *"--no-such-flag"* ]]
}

@test "an unknown flag prints nothing on stdout" {
  run --separate-stderr "$COORD" --no-such-flag
  [ -z "$output" ]
}

@test "--spawn -1 exits 2" {
  run -2 --separate-stderr "$COORD" --spawn -1 --model preset:tiny
}

@test "--spawn 2000 (over 1024) exits 2" {
  run -2 --separate-stderr "$COORD" --spawn 2000 --model preset:tiny
}

@test "--backend tpu exits 2" {
  run -2 --separate-stderr "$COORD" --backend tpu
}

@test "--backend tpu names the bad value on stderr" {
  run --separate-stderr "$COORD" --backend tpu
  [[ "$stderr" == *"tpu"* ]]
}

@test "EEP_BACKEND=tpu from the environment exits 2" {
  EEP_BACKEND=tpu run -2 --separate-stderr "$COORD"
}

@test "--heartbeat-timeout-ms below 100 exits 2" {
  run -2 --separate-stderr "$COORD" --heartbeat-timeout-ms 5
}

@test "--queue-timeout-ms 0 exits 2" {
  run -2 --separate-stderr "$COORD" --queue-timeout-ms 0
}

@test "--spawn without --model exits 2" {
  run -2 --separate-stderr "$COORD" --bind "$ADDR" --spawn 1
}

@test "--spawn without --model says so on stderr" {
  run --separate-stderr "$COORD" --bind "$ADDR" --spawn 1
  [[ "$stderr" == *"--spawn needs --model"* ]]
}

@test "--engine-bin that does not exist exits 2" {
  run -2 --separate-stderr timeout 20 "$COORD" --bind "$ADDR" --spawn 1 --model preset:tiny \
    --engine-bin "$BATS_TEST_TMPDIR/no-such-engine"
}

@test "--engine-bin that does not exist is named on stderr" {
  run --separate-stderr timeout 20 "$COORD" --bind "$ADDR" --spawn 1 --model preset:tiny \
    --engine-bin "$BATS_TEST_TMPDIR/no-such-engine"
  [[ "$stderr" == *"no-such-engine does not exist"* ]]
}

@test "--bind nonsense exits 1 within 5 s" {
  run -1 --separate-stderr timeout 5 "$COORD" --bind nonsense
}

@test "--bind nonsense names the endpoint on stderr" {
  run --separate-stderr timeout 5 "$COORD" --bind nonsense
  [[ "$stderr" == *"cannot bind nonsense"* ]]
}

@test "--bind to an address in use exits 1" {
  start_coord --engines 1
  run -1 --separate-stderr timeout 5 "$COORD" --bind "$ADDR" --engines 1
}

@test "without engines the coordinator answers status: size 0" {
  start_coord --engines 1
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --json
  [ "$(jq -r .size <<<"$output")" = 0 ]
}

@test "without engines the coordinator is not serving" {
  start_coord --engines 1
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --json
  [ "$(jq -r .serving <<<"$output")" = false ]
}

@test "without engines the generation is 0 and no placement is reported" {
  start_coord --engines 1
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --json
  [ "$(jq -c '[.generation, has("placement")]' <<<"$output")" = "[0,false]" ]
}

@test "eep-scale shutdown stops it with exit 0" {
  start_coord --engines 1
  "$SCALE" --coord "$ADDR" --timeout-ms 2000 shutdown
  wait_exit "$COORD_PID" 10
  [ "$EXIT_STATUS" -eq 0 ]
}

@test "SIGTERM stops it with exit 0" {
  start_coord --engines 1
  kill -TERM "$COORD_PID"
  wait_exit "$COORD_PID" 10
  [ "$EXIT_STATUS" -eq 0 ]
}

@test "engines that never come exit 1 after --start-timeout-ms" {
  start_coord --engines 1 --start-timeout-ms 500
  wait_exit "$COORD_PID" 10
  [ "$EXIT_STATUS" -eq 1 ]
}

@test "engines that never come are reported on stderr" {
  run -1 --separate-stderr timeout 10 "$COORD" --bind "$ADDR" --engines 1 --start-timeout-ms 300
  [[ "$stderr" == *"did not become ready within 300 ms"* ]]
}
