#!/usr/bin/env bats
# eep-bench serve against a real CPU cluster: a short Poisson run with one scaling event checks
# that requests finish, the event's phases come from the coordinator, the windows around it are
# reported, and the JSON and SVG outputs are written.

load cluster

teardown() {
  stop_cluster
  assert_no_engines_left
}

@test "serve: 4 s at 8 req/s on 2 tiny engines, scaling to 3 at 1.5 s" {
  start_cluster 2
  local json="$BATS_TEST_TMPDIR/serve.json" svg="$BATS_TEST_TMPDIR/serve.svg"
  run timeout 120 "$BENCH" serve --coord "$ADDR" --rate 8 --duration 4 --seed 3 \
    --prompt-len uniform:4:24 --output-len uniform:4:16 --scale-at 1.5:3 \
    --drain-timeout 30 --json "$json" --plot "$svg"
  echo "$output" >&2
  [ "$status" -eq 0 ]
  [[ "$output" == *"event scale 2→3 at 1.50 s"* ]]
  [ "$(jq '.finished > 0' "$json")" = true ]
  [ "$(jq '.failed' "$json")" -eq 0 ]
  [ "$(jq '.events | length' "$json")" -eq 1 ]
  [ "$(jq -r '.events[0].phase' "$json")" = done ]
  [ "$(jq '[.events[0].phases[].phase] | index("preparing") != null and index("committing") != null' "$json")" = true ]
  [ "$(jq '.events[0].elapsed_ms > 0' "$json")" = true ]
  [ "$(jq '.events[0].windows | has("before") and has("during") and has("after")' "$json")" = true ]
  [ "$(jq '.events[0].windows.before.start_s == 0 and .events[0].windows.during.start_s >= 1.5' "$json")" = true ]
  [ "$(jq '.longest_gap_ms | type' "$json")" = '"number"' ]
  [ "$(jq '.timeline | length > 30' "$json")" = true ]
  [ "$(jq '.overall.ttft_ms.p50 > 0 and .overall.latency_ms.p99 >= .overall.latency_ms.p50' "$json")" = true ]
  head -c 4 "$svg" | grep -q '^<svg'
  grep -q 'scale 2→3' "$svg"
  [ "$("$SCALE" --coord "$ADDR" status --json | jq .size)" -eq 3 ]
}
