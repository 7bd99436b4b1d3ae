#!/usr/bin/env bats
# eep-bench serve command line: help and version, and every bad argument refused with exit 2 and
# a one-line message naming the problem before any load is sent (no coordinator runs here: the
# checks come before the first connection). An unreachable coordinator exits 1.

bats_require_minimum_version 1.5.0

BENCH="$EEP_BIN/eep-bench/eep-bench"

setup() {
  # Nothing listens here: a check that passed by mistake would fail on the connection instead.
  ADDR="tcp://127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
}

# refused MESSAGE ARGS...: serve exits 2 with "eep-bench serve: ...MESSAGE..." on stderr.
refused() {
  local want=$1
  shift
  run --separate-stderr timeout 20 "$BENCH" serve --coord "$ADDR" --connect-timeout-ms 300 "$@"
  echo "status $status, stderr: $stderr" >&2
  [ "$status" -eq 2 ]
  [[ "$stderr" == "eep-bench serve: "*"$want"* ]]
}

@test "serve --help exits 0 and lists the flags" {
  run -0 --separate-stderr "$BENCH" serve --help
  [[ "$output" == *"--rate"* && "$output" == *"--concurrency"* && "$output" == *"--scale-at"* ]]
  [[ "$output" == *"--kill-at"* && "$output" == *"--plot"* && "$output" == *"--json"* ]]
  [ -z "$stderr" ]
}

@test "serve --version prints the version" {
  run -0 --separate-stderr "$BENCH" serve --version
  [ "$output" = "eep-bench serve 0.1.0" ]
}

@test "neither --rate nor --concurrency" {
  refused "give exactly one of --rate and --concurrency" --duration 5
}

@test "both --rate and --concurrency" {
  refused "give exactly one of --rate and --concurrency" --rate 2 --concurrency 4 --duration 5
}

@test "zero rate" {
  refused "--rate must be a positive" --rate 0 --duration 5
}

@test "negative rate" {
  refused "--rate must be a positive" --rate=-3 --duration 5
}

@test "negative rate from EEP_RATE" {
  EEP_RATE=-1 refused "--rate must be a positive" --duration 5
}

@test "zero concurrency" {
  refused "--concurrency must be at least 1" --concurrency 0 --duration 5
}

@test "missing --duration" {
  refused "--duration is required" --rate 1
}

@test "zero duration" {
  refused "--duration must be a positive" --rate 1 --duration 0
}

@test "negative duration" {
  refused "--duration must be a positive" --rate 1 --duration=-2
}

@test "unknown distribution name" {
  refused "--prompt-len: unknown distribution 'zipf'" --rate 1 --duration 5 --prompt-len zipf:2
}

@test "distribution with a missing parameter" {
  refused "--output-len: 'uniform' takes 2 parameter(s)" --rate 1 --duration 5 --output-len uniform:5
}

@test "distribution with a non-number" {
  refused "--prompt-len: fixed:N needs an integer N >= 1" --rate 1 --duration 5 --prompt-len fixed:ten
}

@test "fixed:0" {
  refused "--prompt-len: fixed:N needs an integer N >= 1" --rate 1 --duration 5 --prompt-len fixed:0
}

@test "uniform with A > B" {
  refused "--output-len: uniform:A:B needs A <= B" --rate 1 --duration 5 --output-len uniform:9:3
}

@test "normal with a negative spread" {
  refused "--prompt-len: normal: the spread must be >= 0" --rate 1 --duration 5 --prompt-len normal:10:-1
}

@test "lognormal with a trailing colon" {
  refused "--output-len: 'lognormal' takes 2 parameter(s)" --rate 1 --duration 5 --output-len lognormal:2:1:
}

@test "scale event at or past the duration" {
  refused "--scale-at: event time 10 s is not before the end of --duration" --rate 1 --duration 10 --scale-at 10:2
}

@test "negative event time" {
  refused "--scale-at: event time -1 s is negative" --rate 1 --duration 10 --scale-at=-1:2
}

@test "scale to zero engines" {
  refused "--scale-at: the new size must be at least 1, got 0" --rate 1 --duration 10 --scale-at 2:0
}

@test "malformed scale event" {
  refused "--scale-at: expected T:N" --rate 1 --duration 10 --scale-at soon
}

@test "kill event past the duration" {
  refused "--kill-at: event time 12 s is not before the end" --rate 1 --duration 10 --kill-at 12:1
}

@test "kill of a negative rank" {
  refused "--kill-at: rank must be >= 0" --rate 1 --duration 10 --kill-at 2:-1
}

@test "bad value for --vocab" {
  run -2 --separate-stderr "$BENCH" serve --rate 1 --duration 5 --vocab 0
  [[ "$stderr" == "eep-bench serve: "*"--vocab"* ]]
}

@test "unknown flag" {
  run -2 --separate-stderr "$BENCH" serve --rate 1 --duration 5 --no-such-flag
}

@test "malformed coordinator address exits 2" {
  run -2 --separate-stderr "$BENCH" serve --coord not-an-address --rate 1 --duration 5
  [[ "$stderr" == "eep-bench serve: bad coordinator address"* ]]
}

@test "unreachable coordinator exits 1 before sending load" {
  run -1 --separate-stderr timeout 20 "$BENCH" serve --coord "$ADDR" --connect-timeout-ms 300 \
    --rate 5 --duration 5 --json "$BATS_TEST_TMPDIR/out.json"
  [[ "$stderr" == "eep-bench serve: coordinator $ADDR unreachable"* ]]
  [ ! -e "$BATS_TEST_TMPDIR/out.json" ]
}
