#!/usr/bin/env bats
# eep-bench command line: help, version, subcommand errors (exit 2), eplb's options, and
# replay's input checking (exit 2 naming the line) and failures (exit 1). serve is tested in
# eep-bench-serve.bats; moe, decode and transfer in eep-bench-micro.bats.
# Every process started here is stopped in teardown.

load common

@test "--help exits 0" {
  run -0 "$BENCH" --help
}

@test "--help prints the subcommands on stdout" {
  run --separate-stderr "$BENCH" --help
  [[ "$output" == "Usage: eep-bench SUBCOMMAND"*"replay"* ]]
}

@test "--help prints nothing on stderr" {
  run --separate-stderr "$BENCH" --help
  [ -z "$stderr" ]
}

@test "--version prints 'eep-bench 0.1.0'" {
  run -0 --separate-stderr "$BENCH" --version
  [ "$output" = "eep-bench 0.1.0" ]
}

@test "without a subcommand exits 2" {
  run -2 --separate-stderr "$BENCH"
}

@test "without a subcommand prints the usage on stderr, not stdout" {
  run --separate-stderr "$BENCH"
  [ -z "$output" ]
  [[ "$stderr" == "Usage: eep-bench"* ]]
}

@test "an unknown subcommand exits 2" {
  run -2 --separate-stderr "$BENCH" frobnicate
}

@test "an unknown subcommand is named on stderr" {
  run --separate-stderr "$BENCH" frobnicate
  [[ "$stderr" == "eep-bench: unknown subcommand 'frobnicate'"* ]]
}

@test "eplb --help exits 0 and lists its options" {
  run -0 --separate-stderr "$BENCH" eplb --help
  [[ "$output" == *"--runs"*"--steps"*"--seed"*"--drift"*"--json"* ]]
}

@test "eplb --runs 0 exits 2" {
  run -2 --separate-stderr "$BENCH" eplb --runs 0
}

@test "replay --help exits 0 and lists --concurrency" {
  run -0 --separate-stderr "$BENCH" replay --help
  [[ "$output" == *"--concurrency"* ]]
}

@test "replay with an unknown flag exits 2" {
  run -2 --separate-stderr "$BENCH" replay --no-such-flag
}

@test "replay --concurrency -1 exits 2" {
  run -2 --separate-stderr "$BENCH" replay --concurrency -1 "$REQS"
}

@test "replay of a missing file exits 2" {
  run -2 --separate-stderr "$BENCH" replay --coord "$ADDR" "$BATS_TEST_TMPDIR/none.jsonl"
  [[ "$stderr" == *"cannot read $BATS_TEST_TMPDIR/none.jsonl"* ]]
}

@test "replay of a malformed JSON line exits 2" {
  printf '%s\n' '{"prompt":[1]}' '' '{"prompt":[1' >"$REQS"
  run -2 --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" --timeout-ms 300 "$REQS"
}

@test "replay of a malformed JSON line names the file and line number" {
  printf '%s\n' '{"prompt":[1]}' '' '{"prompt":[1' >"$REQS"
  run --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" --timeout-ms 300 "$REQS"
  [[ "$stderr" == "eep-bench replay: $REQS:3: not JSON"* ]]
}

@test "replay from stdin names stdin and the line number" {
  run --separate-stderr bash -c "printf '[1,2]\n' | timeout 10 '$BENCH' replay --coord '$ADDR' -"
  [ "$status" -eq 2 ]
  [[ "$stderr" == "eep-bench replay: stdin:1: not an object"* ]]
}

@test "replay of a duplicate id exits 2 naming the line" {
  printf '%s\n' '{"id":"a","prompt":[1]}' '{"id":"a","prompt":[2]}' >"$REQS"
  run -2 --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" "$REQS"
  [[ "$stderr" == *"$REQS:2: duplicate id \"a\""* ]]
}

@test "replay of an id that is neither string nor number exits 2" {
  printf '%s\n' '{"id":[1],"prompt":[1]}' >"$REQS"
  run -2 --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" "$REQS"
}

@test "replay of an empty file exits 0 and prints nothing" {
  : >"$REQS"
  run -0 --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" "$REQS"
  [ -z "$output" ]
}

@test "replay with nothing listening exits 1 after --timeout-ms" {
  echo '{"id":"a","prompt":[1,2],"max_tokens":2}' >"$REQS"
  run -1 --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" --timeout-ms 300 "$REQS"
}

@test "replay with nothing listening reports code timeout for the request" {
  echo '{"id":"a","prompt":[1,2],"max_tokens":2}' >"$REQS"
  run --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" --timeout-ms 300 "$REQS"
  [ "$(jq -c '[.id, .finish_reason, .code, .ttft_ms == -1]' <<<"$output")" = '["a","error","timeout",true]' ]
}

@test "replay turns a numeric id into a string" {
  echo '{"id":7,"prompt":[1,2],"max_tokens":2}' >"$REQS"
  run --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" --timeout-ms 300 "$REQS"
  [ "$(jq -c .id <<<"$output")" = '"7"' ]
}

@test "replay without ids numbers the requests by line" {
  printf '%s\n' '' '{"prompt":[1,2],"max_tokens":2}' >"$REQS"
  run --separate-stderr timeout 10 "$BENCH" replay --coord "$ADDR" --timeout-ms 300 "$REQS"
  [ "$(jq -r .id <<<"$output")" = 2 ]
}

@test "replay reports a submit the coordinator refuses, with its code" {
  start_coord
  echo '{"id":"e","prompt":[],"max_tokens":2}' >"$REQS"
  run -1 --separate-stderr timeout 20 "$BENCH" replay --coord "$ADDR" --timeout-ms 10000 "$REQS"
  [ "$(jq -r .code <<<"$output")" = invalid_argument ]
}

@test "replay: a request with no engine to serve it fails after --queue-timeout-ms" {
  start_coord --queue-timeout-ms 200
  echo '{"id":"a","prompt":[1,2],"max_tokens":2}' >"$REQS"
  run -1 --separate-stderr timeout 20 "$BENCH" replay --coord "$ADDR" --timeout-ms 10000 "$REQS"
  [ "$(jq -r .code <<<"$output")" = unavailable ]
}
