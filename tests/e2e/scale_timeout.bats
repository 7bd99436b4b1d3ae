#!/usr/bin/env bats
# eep-scale's --timeout-ms bounds the whole scaling command, whatever it is: against a stand-in
# coordinator (slow_coord.py) that answers 'scale' late or never finishes the operation.

load cluster
bats_require_minimum_version 1.5.0

teardown() {
  if [ -n "${FAKE_PID:-}" ]; then
    kill "$FAKE_PID" 2>/dev/null || true
    wait "$FAKE_PID" 2>/dev/null || true
  fi
}

# fake ARGS...: starts slow_coord.py on a fresh ADDR and waits until it answers.
fake() {
  ADDR="tcp://127.0.0.1:$(free_port)"
  /usr/bin/python3 "$EEP_SRC/tests/e2e/slow_coord.py" "$ADDR" "$@" &
  FAKE_PID=$!
  local i
  for i in $(seq 1 50); do
    "$SCALE" --coord "$ADDR" --timeout-ms 200 status --json >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

@test "a scale answer later than 10 s is still taken when --timeout-ms allows it" {
  fake --scale-delay 11
  local start=$SECONDS
  run -0 --separate-stderr timeout 30 "$SCALE" --coord "$ADDR" --timeout-ms 20000 to 2 --no-wait
  [ $((SECONDS - start)) -ge 10 ]
  [ "$(jq -r .id <<<"$output")" = op0 ]
}

@test "a scale answer later than --timeout-ms: exit 1 within about --timeout-ms" {
  fake --scale-delay 5
  local start=$SECONDS
  run -1 --separate-stderr timeout 30 "$SCALE" --coord "$ADDR" --timeout-ms 1500 to 2 --no-wait
  [ $((SECONDS - start)) -le 3 ]
  [[ "$stderr" == *"no answer to 'scale'"*"within 1500 ms"* ]]
}

@test "--wait: the answer and the operation share one --timeout-ms" {
  # 1.5 s for the answer, done 3.5 s after the request: 3 s is not enough for both.
  fake --scale-delay 1.5 --done-after 3.5
  local start=$SECONDS
  run -1 --separate-stderr timeout 30 "$SCALE" --coord "$ADDR" --timeout-ms 3000 to 2 --wait
  echo "stderr: $stderr"  # shown only if the test fails
  [ $((SECONDS - start)) -le 5 ]
  [[ "$stderr" == *"still in phase preparing after --timeout-ms"* ]]
}

@test "--wait: an operation that ends within --timeout-ms exits 0" {
  fake --scale-delay 1 --done-after 2
  run -0 --separate-stderr timeout 30 "$SCALE" --coord "$ADDR" --timeout-ms 6000 to 2 --wait
  [ "$(jq -r .phase <<<"$output")" = done ]
}
