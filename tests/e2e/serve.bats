#!/usr/bin/env bats
# End-to-end serving on CPU with real processes: a coordinator spawning 1..4 engines, 64
# concurrent greedy requests, outputs bitwise identical to the single-engine run.

load cluster

setup_file() {
  export REQS="$BATS_FILE_TMPDIR/requests.jsonl"
  make_requests 64 12 >"$REQS"
}

teardown() {
  stop_cluster
  assert_no_engines_left
}

run_size() {
  local n=$1
  start_cluster "$n"
  "$BENCH" replay --coord "$ADDR" --timeout-ms 120000 "$REQS" >"$BATS_FILE_TMPDIR/out$n.jsonl"
  stop_cluster
}

@test "1 engine serves 64 concurrent requests, each to its length" {
  run_size 1
  [ "$(wc -l <"$BATS_FILE_TMPDIR/out1.jsonl")" -eq 64 ]
  [ "$(jq -r 'select(.finish_reason == "length" and (.tokens | length) == 12) | .id' "$BATS_FILE_TMPDIR/out1.jsonl" | wc -l)" -eq 64 ]
}

@test "greedy outputs are not degenerate (prompts give different continuations)" {
  [ -f "$BATS_FILE_TMPDIR/out1.jsonl" ] || skip "needs the 1-engine run"
  [ "$(jq -c '.tokens' "$BATS_FILE_TMPDIR/out1.jsonl" | sort -u | wc -l)" -gt 32 ]
}

@test "2 engines give bitwise the same tokens as 1" {
  run_size 2
  diff <(by_id "$BATS_FILE_TMPDIR/out1.jsonl") <(by_id "$BATS_FILE_TMPDIR/out2.jsonl")
}

@test "3 engines give bitwise the same tokens as 1" {
  run_size 3
  diff <(by_id "$BATS_FILE_TMPDIR/out1.jsonl") <(by_id "$BATS_FILE_TMPDIR/out3.jsonl")
}

@test "4 engines with redundant expert slots give bitwise the same tokens as 1" {
  start_cluster 4 --redundant 4
  "$BENCH" replay --coord "$ADDR" --timeout-ms 120000 "$REQS" >"$BATS_FILE_TMPDIR/out4.jsonl"
  run "$SCALE" --coord "$ADDR" status --plan
  [ "$status" -eq 0 ]
  [ "$(jq '.phy2log[0] | length' <<<"$output")" -eq 12 ]
  stop_cluster
  diff <(by_id "$BATS_FILE_TMPDIR/out1.jsonl") <(by_id "$BATS_FILE_TMPDIR/out4.jsonl")
}

@test "requests are spread over engines and expert load is recorded" {
  start_cluster 2
  "$BENCH" replay --coord "$ADDR" "$REQS" >/dev/null
  sleep 1  # one heartbeat carries the final load
  run "$SCALE" --coord "$ADDR" status --json
  [ "$(jq '[.engines[].steps] | min' <<<"$output")" -gt 0 ]
  run "$SCALE" --coord "$ADDR" stats
  [ "$status" -eq 0 ]
  # every token of every layer picks top-k experts: total load = tokens * k per layer, > 0
  [ "$(jq '.load[0] | add' <<<"$output")" -gt 0 ]
  [ "$(jq '.load | length' <<<"$output")" -eq 4 ]
}

@test "sampled requests with a seed repeat exactly" {
  start_cluster 2
  printf '%s\n' '{"id":"a","prompt":[1,2,3],"max_tokens":10,"temperature":0.9,"top_k":50,"top_p":0.9,"seed":7}' \
    '{"id":"b","prompt":[1,2,3],"max_tokens":10,"temperature":0.9,"top_k":50,"top_p":0.9,"seed":7}' \
    '{"id":"c","prompt":[1,2,3],"max_tokens":10,"temperature":0.9,"top_k":50,"top_p":0.9,"seed":8}' >"$BATS_TEST_TMPDIR/s.jsonl"
  run "$BENCH" replay --coord "$ADDR" "$BATS_TEST_TMPDIR/s.jsonl"
  [ "$status" -eq 0 ]
  a=$(jq -c 'select(.id=="a") | .tokens' <<<"$output")
  b=$(jq -c 'select(.id=="b") | .tokens' <<<"$output")
  [ "$a" = "$b" ]
}

@test "stop token ends a request early with finish reason stop" {
  [ -f "$BATS_FILE_TMPDIR/out1.jsonl" ] || skip "needs the 1-engine run"
  start_cluster 1
  first=$(head -1 "$BATS_FILE_TMPDIR/out1.jsonl" | jq -c '.tokens[3]')
  prompt=$(head -1 "$REQS" | jq -c '.prompt')
  echo "{\"id\":\"s\",\"prompt\":$prompt,\"max_tokens\":12,\"stop\":[$first]}" >"$BATS_TEST_TMPDIR/stop.jsonl"
  run "$BENCH" replay --coord "$ADDR" "$BATS_TEST_TMPDIR/stop.jsonl"
  [ "$status" -eq 0 ]
  [ "$(jq -r .finish_reason <<<"$output")" = stop ]
  [ "$(jq '.tokens | length' <<<"$output")" -le 4 ]
}

@test "SIGTERM stops the coordinator and every spawned engine" {
  start_cluster 3
  pids=$(pgrep -f -- "eep-engine --coord $ADDR")
  [ "$(wc -w <<<"$pids")" -eq 3 ]
  kill -TERM "$COORD_PID"
  for i in $(seq 1 100); do kill -0 "$COORD_PID" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$COORD_PID" 2>/dev/null
  wait "$COORD_PID" || true
  COORD_PID=
  for p in $pids; do ! kill -0 "$p" 2>/dev/null; done
}

@test "a checkpoint written from the preset serves the same tokens (the real loader, fp32)" {
  [ -f "$BATS_FILE_TMPDIR/out1.jsonl" ] || skip "needs the 1-engine run"
  "$ENGINE" --model preset:tiny --write-checkpoint "$BATS_TEST_TMPDIR/ckpt" --dtype f32 >/dev/null
  [ -f "$BATS_TEST_TMPDIR/ckpt/config.json" ]
  ls "$BATS_TEST_TMPDIR"/ckpt/*.safetensors >/dev/null
  EEP_TEST_MODEL="$BATS_TEST_TMPDIR/ckpt" start_cluster 2
  "$BENCH" replay --coord "$ADDR" "$REQS" >"$BATS_TEST_TMPDIR/ckpt.jsonl"
  diff <(by_id "$BATS_FILE_TMPDIR/out1.jsonl") <(by_id "$BATS_TEST_TMPDIR/ckpt.jsonl")
}

@test "a bf16 checkpoint serves (tokens may differ from fp32, none fail)" {
  "$ENGINE" --model preset:tiny --write-checkpoint "$BATS_TEST_TMPDIR/ckpt16" --dtype bf16 >/dev/null
  EEP_TEST_MODEL="$BATS_TEST_TMPDIR/ckpt16" start_cluster 1
  run "$BENCH" replay --coord "$ADDR" "$REQS"
  [ "$status" -eq 0 ]
  [ "$(jq -r 'select(.finish_reason == "length") | .id' <<<"$output" | wc -l)" -eq 64 ]
}

@test "DP waves: an idle group pauses (no busy dummy steps) and one request wakes it" {
  start_cluster 3
  echo '{"id":"w1","prompt":[1,2,3],"max_tokens":4}' >"$BATS_TEST_TMPDIR/w.jsonl"
  "$BENCH" replay --coord "$ADDR" "$BATS_TEST_TMPDIR/w.jsonl" >/dev/null
  sleep 1
  s1=$("$SCALE" --coord "$ADDR" status --json)
  [ "$(jq '[.engines[].paused] | all' <<<"$s1")" = true ]
  [ "$(jq .wave_running <<<"$s1")" = false ]
  sleep 1.5
  s2=$("$SCALE" --coord "$ADDR" status --json)
  [ "$(jq -c '[.engines[].steps]' <<<"$s1")" = "$(jq -c '[.engines[].steps]' <<<"$s2")" ]
  # One request to one engine: every engine steps again (lockstep), then all pause again.
  run "$BENCH" replay --coord "$ADDR" "$BATS_TEST_TMPDIR/w.jsonl"
  [ "$status" -eq 0 ]
  sleep 1
  s3=$("$SCALE" --coord "$ADDR" status --json)
  for r in 0 1 2; do
    [ "$(jq ".engines[$r].steps" <<<"$s3")" -gt "$(jq ".engines[$r].steps" <<<"$s2")" ]
  done
  [ "$(jq '[.engines[].paused] | all' <<<"$s3")" = true ]
}

@test "a client aborts a request mid-stream: it ends with finish reason abort" {
  start_cluster 2
  run /usr/bin/python3 "$EEP_SRC/tests/e2e/abort.py" "$ADDR"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$("$SCALE" --coord "$ADDR" status --json | jq .requests_open)" -eq 0 ]
}
