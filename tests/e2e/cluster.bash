# Helpers for end-to-end tests: real eep-coord and eep-engine processes on loopback.
# Every cluster started here is stopped in teardown; nothing is left running.

COORD="$EEP_BIN/eep-coord/eep-coord"
ENGINE="$EEP_BIN/eep-engine/eep-engine"
SCALE="$EEP_BIN/eep-scale/eep-scale"
BENCH="$EEP_BIN/eep-bench/eep-bench"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_cluster N [extra eep-coord flags...]: coordinator spawning N tiny engines; waits until the
# group serves. Sets ADDR and COORD_PID.
start_cluster() {
  local n=$1
  shift
  ADDR="tcp://127.0.0.1:$(free_port)"
  "$COORD" --bind "$ADDR" --spawn "$n" --model "${EEP_TEST_MODEL:-preset:tiny}" "$@" \
    2>>"$BATS_TEST_TMPDIR/coord.log" &
  COORD_PID=$!
  wait_serving "$n"
}

# wait_serving N: until status says serving with N engines (30 s at most).
wait_serving() {
  local n=$1 i
  for i in $(seq 1 300); do
    if out=$("$SCALE" --coord "$ADDR" --timeout-ms 500 status --json 2>/dev/null) &&
      [ "$(jq -r '.serving' <<<"$out")" = true ] && [ "$(jq -r '.size' <<<"$out")" = "$n" ]; then
      return 0
    fi
    if ! kill -0 "$COORD_PID" 2>/dev/null; then
      echo "coordinator exited; log:" >&2
      cat "$BATS_TEST_TMPDIR/coord.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "cluster of $n did not serve within 30 s; log:" >&2
  tail -50 "$BATS_TEST_TMPDIR/coord.log" >&2
  return 1
}

stop_cluster() {
  [ -n "${COORD_PID:-}" ] || return 0
  kill -TERM "$COORD_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$COORD_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$COORD_PID" 2>/dev/null || true
  wait "$COORD_PID" 2>/dev/null || true
  COORD_PID=
}

# No eep process started by this test may outlive it.
assert_no_engines_left() {
  [ -n "${ADDR:-}" ] || return 0  # this test started no cluster
  local left
  left=$(pgrep -f -- "eep-engine --coord $ADDR" || true)
  if [ -n "$left" ]; then
    echo "engines still running: $left" >&2
    return 1
  fi
}

# make_requests N MAX_TOKENS: N greedy requests with varied prompt lengths, as JSON lines.
make_requests() {
  local n=$1 max=$2
  python3 - "$n" "$max" <<'PY'
import json, sys
n, mx = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    plen = 3 + (i * 7) % 29
    prompt = [(i * 31 + k * 17 + 5) % 500 for k in range(plen)]
    print(json.dumps({"id": f"q{i}", "prompt": prompt, "max_tokens": mx}))
PY
}

# by_id FILE: the replay output sorted by id, only id/tokens/finish_reason (for comparisons).
by_id() {
  jq -c '{id, tokens, finish_reason}' "$1" | sort
}
