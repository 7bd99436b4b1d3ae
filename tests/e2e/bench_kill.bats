#!/usr/bin/env bats
# eep-bench serve --kill-at against a real CPU cluster: kill -9 of one engine mid-run. The
# documented behaviour (design.md §4, docs/bench-serve.md): the coordinator declares the engine
# dead, re-forms the group with the survivors, and the killed engine's requests continue there
# with the tokens generated so far; the client sees no failure. So the run exits 0 with 0 failed
# requests, every request sent finished, and the kill event reports the engine, its pid and the
# moment the cluster served again.

load cluster

teardown() {
  stop_cluster
  assert_no_engines_left
}

@test "serve --kill-at: rank 1 of 3 killed at 1.5 s, its requests finish on the survivors" {
  start_cluster 3
  local json="$BATS_TEST_TMPDIR/kill.json"
  # A closed loop of 6 keeps requests on every engine, so the victim holds some when it dies.
  run timeout 120 "$BENCH" serve --coord "$ADDR" --concurrency 6 --duration 4 --seed 5 \
    --prompt-len uniform:4:24 --output-len uniform:24:48 --kill-at 1.5:1 \
    --drain-timeout 60 --json "$json"
  echo "$output" >&2
  [ "$status" -eq 0 ]
  [[ "$output" == *"event kill rank 1 at 1.50 s: done after"* ]]
  [ "$(jq '.failed' "$json")" -eq 0 ]
  [ "$(jq '.finished == .sent and .sent > 0' "$json")" = true ]
  [ "$(jq -r '.events[0].kind + " " + .events[0].phase' "$json")" = "kill serving" ]
  [ "$(jq '.events[0].failed' "$json")" = false ]
  [ "$(jq '.events[0].pid > 0 and .events[0].engine_id >= 0' "$json")" = true ]
  # The victim held requests when it died, and they finished anyway.
  [ "$(jq '.events[0].requests_assigned' "$json")" -gt 0 ]
  [ "$(jq '[.events[0].phases_seen[].phase] | index("serving") != null' "$json")" = true ]
  [ "$(jq '.events[0].windows.after.finished > 0' "$json")" = true ]
  # The coordinator saw the engine die and re-formed the group without it.
  local pid
  pid=$(jq '.events[0].pid' "$json")
  grep -q "pid $pid) is gone" "$BATS_TEST_TMPDIR/coord.log"
  ! kill -0 "$pid" 2>/dev/null
  run "$SCALE" --coord "$ADDR" status --json
  [ "$(jq '[.size, .serving]' -c <<<"$output")" = '[2,true]' ]
}

@test "serve --kill-at of a rank that does not exist fails the event, not the requests" {
  start_cluster 2
  local json="$BATS_TEST_TMPDIR/kill.json"
  run timeout 60 "$BENCH" serve --coord "$ADDR" --rate 4 --duration 2 --seed 5 \
    --prompt-len fixed:4 --output-len fixed:4 --kill-at 0.5:7 --json "$json"
  echo "$output" >&2
  [ "$status" -eq 1 ]
  [[ "$output" == *"FAILED: no engine has rank 7 now"* ]]
  [ "$(jq '.failed' "$json")" -eq 0 ]
  [ "$(jq '.events[0].failed' "$json")" = true ]
}

@test "a stopped rank: declared dead by heartbeats, the survivors' blocked collectives end at once" {
  # SIGSTOP keeps the peer's connections open, so no transport error ever reaches the survivors
  # blocked in a collective with it: only the coordinator's word (heartbeat replies carry the
  # dead generation) ends their waits, long before the 60 s collective timeout set here.
  start_cluster 3 --heartbeat-timeout-ms 1000 --engine-arg=--collective-timeout-ms=60000
  local json="$BATS_TEST_TMPDIR/stop.json" pid
  pid=$("$SCALE" --coord "$ADDR" status --json | jq '.engines[] | select(.rank == 1) | .pid')
  [ "$pid" -gt 0 ]
  "$BENCH" serve --coord "$ADDR" --concurrency 6 --duration 5 --seed 5 --prompt-len fixed:8 \
    --output-len fixed:40 --drain-timeout 60 --json "$json" >"$BATS_TEST_TMPDIR/bench.out" 2>&1 &
  local bench=$!
  sleep 1.5
  kill -STOP "$pid"
  local rc=0
  wait "$bench" || rc=$?
  kill -KILL "$pid" 2>/dev/null || true
  cat "$BATS_TEST_TMPDIR/bench.out" >&2
  [ "$rc" -eq 0 ]
  [ "$(jq '.failed' "$json")" -eq 0 ]
  [ "$(jq '.finished == .sent and .sent > 0' "$json")" = true ]
  # Heartbeat timeout (1 s) + a heartbeat (0.5 s) + re-forming: a few seconds, not 60.
  [ "$(jq '.longest_gap_ms < 10000' "$json")" = true ]
  grep -q "pid $pid) is gone" "$BATS_TEST_TMPDIR/coord.log"
  grep -q "declared group generation 1 dead: ending its collectives" "$BATS_TEST_TMPDIR/coord.log"
  run "$SCALE" --coord "$ADDR" status --json
  [ "$(jq '[.size, .serving]' -c <<<"$output")" = '[2,true]' ]
}
