# Shared scaffolding of the CLI suites: tool paths, a free loopback address per test, a
# coordinator in the background, waits with limits, and a teardown that kills every process a
# test started (PIDS).

bats_require_minimum_version 1.5.0

BENCH="$EEP_BIN/eep-bench/eep-bench"
COORD="$EEP_BIN/eep-coord/eep-coord"
ENGINE="$EEP_BIN/eep-engine/eep-engine"
SCALE="$EEP_BIN/eep-scale/eep-scale"

setup() {
  ADDR="tcp://127.0.0.1:$(free_port)"
  COORD_PID=
  PIDS=()
  REQS="$BATS_TEST_TMPDIR/requests.jsonl"
}

teardown() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

# start_coord [flags...]: eep-coord on $ADDR in the background (by default waiting for one
# engine); returns once it answers (20 s at most). Sets COORD_PID.
start_coord() {
  "$COORD" --bind "$ADDR" "$@" 2>"$BATS_TEST_TMPDIR/coord.log" &
  COORD_PID=$!
  PIDS+=("$COORD_PID")
  local i
  for i in $(seq 1 100); do
    "$SCALE" --coord "$ADDR" --timeout-ms 200 status >/dev/null 2>&1 && return 0
    kill -0 "$COORD_PID" 2>/dev/null || { cat "$BATS_TEST_TMPDIR/coord.log" >&2; return 1; }
  done
  echo "eep-coord did not answer within 20 s" >&2
  return 1
}

# wait_status JQ_FILTER EXPECTED WHAT: until `status --json | jq -c FILTER` prints EXPECTED
# (30 s at most).
wait_status() {
  local i out
  for i in $(seq 1 150); do
    out=$("$SCALE" --coord "$ADDR" --timeout-ms 200 status --json 2>/dev/null) &&
      [ "$(jq -c "$1" <<<"$out")" = "$2" ] && return 0
    sleep 0.1
  done
  echo "$3 after 30 s" >&2
  cat "$BATS_TEST_TMPDIR/coord.log" >&2
  return 1
}
wait_serving() { wait_status '[.serving, .size]' "[true,$1]" "not serving with $1 engine(s)"; }
wait_registered() { wait_status '.engines | length' "$1" "$1 engine(s) not registered"; }

# wait_exit PID SECONDS: waits for PID (a child of this shell) to exit; sets EXIT_STATUS.
wait_exit() {
  local pid=$1 limit=$2 i
  for i in $(seq 1 $((limit * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "process $pid still running after $limit s" >&2
    return 1
  fi
  EXIT_STATUS=0
  wait "$pid" || EXIT_STATUS=$?
}
