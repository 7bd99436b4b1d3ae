#!/usr/bin/env bats
# eep-scale command line: help, version, usage errors (exit 2, also for the scaling verbs), no
# coordinator (exit 1 within --timeout-ms), and status/stats/shutdown/to against a coordinator
# without engines. Scaling a serving cluster is tested in tests/e2e/scale.bats. Every process
# started here is stopped in teardown.

load common

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

@test "--help lists the scaling subcommands" {
  run -0 --separate-stderr "$SCALE" --help
  [[ "$output" == *"to"*"up"*"down"*"apply"* ]]
}

@test "down --help shows --ranks, --id, --wait and --no-wait" {
  run -0 --separate-stderr "$SCALE" down --help
  [[ "$output" == *"--id"*"EEP_OP_ID"*"--wait"*"--no-wait"*"--ranks"*"EEP_RANKS"* ]]
}

@test "to without N exits 2" {
  run -2 --separate-stderr "$SCALE" --coord "$ADDR" to
}

@test "to without N names the missing N on stderr" {
  run --separate-stderr "$SCALE" --coord "$ADDR" to
  [[ "$stderr" == *"N"*"required"* ]]
}

@test "up without K exits 2" {
  run -2 --separate-stderr "$SCALE" --coord "$ADDR" up
}

@test "down without K exits 2" {
  run -2 --separate-stderr "$SCALE" --coord "$ADDR" down
}

@test "apply without a plan exits 2" {
  run -2 --separate-stderr "$SCALE" --coord "$ADDR" apply
}

@test "to with a non-number exits 2" {
  run -2 --separate-stderr "$SCALE" --coord "$ADDR" to two
}

@test "apply with a plan file that does not exist exits 2" {
  run -2 --separate-stderr timeout 15 "$SCALE" --coord "$ADDR" apply "$BATS_TEST_TMPDIR/none.json"
  [[ "$stderr" == *"cannot read plan"* ]]
}

@test "apply with a plan that is not JSON exits 2" {
  echo 'not json' >"$BATS_TEST_TMPDIR/plan.json"
  run -2 --separate-stderr timeout 15 "$SCALE" --coord "$ADDR" apply "$BATS_TEST_TMPDIR/plan.json"
  [[ "$stderr" == *"is not JSON"* ]]
}

@test "apply with a plan without phy2log exits 2" {
  echo '{"num_gpus": 2}' >"$BATS_TEST_TMPDIR/plan.json"
  run -2 --separate-stderr timeout 15 "$SCALE" --coord "$ADDR" apply "$BATS_TEST_TMPDIR/plan.json"
  [[ "$stderr" == *"no phy2log"* ]]
}

@test "apply - reads the plan from stdin" {
  run -2 --separate-stderr timeout 15 "$SCALE" --coord "$ADDR" apply - <<<'{}'
  [[ "$stderr" == *"no phy2log"* ]]
}

@test "to with nothing listening exits 1" {
  run -1 --separate-stderr timeout 20 "$SCALE" --coord "$ADDR" --timeout-ms 300 to 2
  [[ "$stderr" == *"no answer to 'scale' from $ADDR"* ]]
}

@test "to with nothing listening gives up within about --timeout-ms" {
  local start=$SECONDS
  run -1 --separate-stderr timeout 20 "$SCALE" --coord "$ADDR" --timeout-ms 300 to 2
  [ $((SECONDS - start)) -le 2 ]
}

@test "down 1 --ranks x against a live coordinator exits 2" {
  start_coord
  run -2 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 down 1 --ranks x
  [[ "$stderr" == *"--ranks: 'x' is not a rank"* ]]
}

@test "EEP_RANKS from the environment is parsed like --ranks" {
  start_coord
  EEP_RANKS=1,y run -2 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 down 2
  [[ "$stderr" == *"'y' is not a rank"* ]]
}

@test "to 2 against a coordinator that is not serving exits 1 (unavailable)" {
  start_coord
  run -1 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 to 2 --no-wait
  [[ "$stderr" == *"not serving"* ]]
  [ -z "$output" ]
}

@test "status --json has no scale field while no operation runs" {
  start_coord
  run -0 --separate-stderr "$SCALE" --coord "$ADDR" --timeout-ms 2000 status --json
  [ "$(jq -c 'has("scale")' <<<"$output")" = false ]
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
  wait_exit "$COORD_PID" 10
  [ "$EXIT_STATUS" -eq 0 ]
}
