#!/usr/bin/env bats
# eep-scale command line: help, version, usage errors (exit 2), no coordinator (exit 1 within
# --timeout-ms), subcommands not implemented yet (exit 1), and status/stats/shutdown against a
# coordinator without engines. Every process started here is stopped in teardown.

bats_require_minimum_version 1.5.0

SCALE="$EEP_BIN/eep-scale/eep-scale"
COORD="$EEP_BIN/eep-coord/eep-coord"

setup() {
  ADDR="tcp://127.0.0.1:$(free_port)"
  COORD_PID=
}

teardown() {
  if [ -n "$COORD_PID" ]; then
    kill -KILL "$COORD_PID" 2>/dev/null || true
    wait "$COORD_PID" 2>/dev/null || true
  fi
}

# not_implemented_yet VERB: skips the test once this build implements VERB (the scaling work).
not_implemented_yet() {
  "$SCALE" "$1" --help 2>/dev/null | grep -q "not implemented yet" ||
    skip "'$1' is implemented in this build"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

# start_coord: eep-coord --engines 1 (no engine comes) on $ADDR, answering within 20 s.
start_coord() {
  "$COORD" --bind "$ADDR" --engines 1 2>"$BATS_TEST_TMPDIR/coord.log" &
  COORD_PID=$!
  local i
  for i in $(seq 1 100); do
    "$SCALE" --coord "$ADDR" --timeout-ms 200 status >/dev/null 2>&1 && return 0
    kill -0 "$COORD_PID" 2>/dev/null || { cat "$BATS_TEST_TMPDIR/coord.log" >&2; return 1; }
  done
  echo "eep-coord did not answer within 20 s" >&2
  return 1
}

@test "--help exits 0" {
  run -0 "$SCALE" --help
}

@test "--help prints the usage on stdout" {
  run --separate-stderr "$SCALE" --help
  [[ "$output" == *"status"*"shutdown"* ]]
}

@test "--help prints nothing on stderr" {
  run --separate-stderr "$SCALE" --help
  [ -z "$stderr" ]
}

@test "status --help exits 0 and shows --json" {
  run -0 --separate-stderr "$SCALE" status --help
  [[ "$output" == *"--json"* ]]
}

@test "--version prints 'eep-scale 0.1.0'" {
  run -0 --separate-stderr "$SCALE" --version
  [ "$output" = "eep-scale 0.1.0" ]
}

@test "without a subcommand exits 2" {
  run -2 --separate-stderr "$SCALE"
}

@test "without a subcommand says so on stderr" {
  run --separate-stderr "$SCALE"
  [[ "$stderr" == *"subcommand"* ]]
}

@test "an unknown subcommand exits 2" {
  run -2 --separate-stderr "$SCALE" resize
}

@test "an unknown flag exits 2" {
  run -2 --separate-stderr "$SCALE" --no-such-flag status
}

@test "an unknown flag is named on stderr" {
  run --separate-stderr "$SCALE" --no-such-flag status
  [[ "$stderr" == *"--no-such-flag"* ]]
}

@test "--timeout-ms 0 exits 2" {
  run -2 --separate-stderr "$SCALE" --timeout-ms 0 status
}

@test "a malformed --coord endpoint exits 2" {
  run -2 --separate-stderr timeout 5 "$SCALE" --coord nonsense status
}

@test "status with nothing listening exits 1" {
  run -1 --separate-stderr timeout 10 "$SCALE" --coord "$ADDR" --timeout-ms 300 status
}

@test "status with nothing listening gives up within about --timeout-ms" {
  local start=$SECONDS
  run --separate-stderr timeout 10 "$SCALE" --coord "$ADDR" --timeout-ms 300 status
  [ $((SECONDS - start)) -le 2 ]
}

@test "status with nothing listening says no answer on stderr" {
  run --separate-stderr timeout 10 "$SCALE" --coord "$ADDR" --timeout-ms 300 status
  [[ "$stderr" == *"no answer to 'status' from $ADDR within 300 ms"* ]]
}

@test "status with nothing listening prints nothing on stdout" {
  run --separate-stderr timeout 10 "$SCALE" --coord "$ADDR" --timeout-ms 300 status
  [ -z "$output" ]
}

@test "EEP_COORD and EEP_TIMEOUT_MS come from the environment" {
  EEP_COORD="$ADDR" EEP_TIMEOUT_MS=300 run -1 --separate-stderr timeout 10 "$SCALE" status
  [[ "$stderr" == *"from $ADDR within 300 ms"* ]]
}

@test "to exits 1: not implemented yet" {
  not_implemented_yet to
  run -1 --separate-stderr "$SCALE" --coord "$ADDR" to 4
  [[ "$stderr" == *"'to' is not implemented yet"* ]]
}

@test "up exits 1: not implemented yet" {
  not_implemented_yet up
  run -1 --separate-stderr "$SCALE" --coord "$ADDR" up 1
  [[ "$stderr" == *"'up' is not implemented yet"* ]]
}

@test "down exits 1: not implemented yet" {
  not_implemented_yet down
  run -1 --separate-stderr "$SCALE" --coord "$ADDR" down 1
  [[ "$stderr" == *"'down' is not implemented yet"* ]]
}

@test "apply exits 1: not implemented yet" {
  not_implemented_yet apply
  run -1 --separate-stderr "$SCALE" --coord "$ADDR" apply plan.json
  [[ "$stderr" == *"'apply' is not implemented yet"* ]]
}

@test "status --json against a coordinator without engines: size 0" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --json
  [ "$(jq -r .size <<<"$output")" = 0 ]
}

@test "status --json against a coordinator without engines: serving false" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --json
  [ "$(jq -r .serving <<<"$output")" = false ]
}

@test "status --json prints one JSON object without v and seq" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --json
  [ "$(jq -c '[has("v"), has("seq"), has("engines")]' <<<"$output")" = "[false,false,true]" ]
}

@test "status prints a table that says not serving" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status
  [[ "${lines[0]}" == "size 0  generation 0  not serving"* ]]
}

@test "status table has a header row" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status
  [[ "${lines[1]}" == "ENGINE"*"RANK"*"PID"*"STATE"* ]]
}

@test "status --plan before a group has formed exits 1" {
  start_coord
  run -1 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --plan
  [[ "$stderr" == *"no group has formed yet"* ]]
}

@test "stats prints JSON with an empty load before a group has formed" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 stats
  [ "$(jq -c .load <<<"$output")" = "[]" ]
}

@test "shutdown exits 0 and prints nothing" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 shutdown
  [ -z "$output" ]
}

@test "shutdown makes the coordinator exit 0" {
  start_coord
  "$SCALE" --coord "$ADDR" --timeout-ms 2000 shutdown
  local i
  for i in $(seq 1 100); do
    kill -0 "$COORD_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$COORD_PID" 2>/dev/null; then
    echo "eep-coord still running 10 s after shutdown" >&2
    return 1
  fi
  local rc=0
  wait "$COORD_PID" || rc=$?
  COORD_PID=
  [ "$rc" -eq 0 ]
}
