#!/usr/bin/env bats
# Bad input a user will send: each gets a clear error and the cluster keeps serving.

load cluster

setup_file() {
  export REQS="$BATS_FILE_TMPDIR/requests.jsonl"
  make_requests 8 6 >"$REQS"
}

teardown() {
  stop_cluster
  assert_no_engines_left
}

# still_serves: a normal batch still completes after whatever the test did.
still_serves() {
  run "$BENCH" replay --coord "$ADDR" --timeout-ms 60000 "$REQS"
  [ "$status" -eq 0 ]
  [ "$(jq -r 'select(.finish_reason == "length") | .id' <<<"$output" | wc -l)" -eq 8 ]
}

# one_request JSON: replay one request; sets output to its result line.
one_request() {
  echo "$1" >"$BATS_TEST_TMPDIR/one.jsonl"
  run "$BENCH" replay --coord "$ADDR" --timeout-ms 60000 "$BATS_TEST_TMPDIR/one.jsonl"
}

@test "bad requests get errors naming the problem; good ones in the same batch finish" {
  start_cluster 2 --engine-arg=--kv-blocks=8
  cat >"$BATS_TEST_TMPDIR/mixed.jsonl" <<'JSON'
{"id":"vocab","prompt":[1,2,99999],"max_tokens":4}
{"id":"neg","prompt":[1,-2,3],"max_tokens":4}
{"id":"empty","prompt":[],"max_tokens":4}
{"id":"ctx","prompt":[1,2,3],"max_tokens":5000}
{"id":"kv","prompt":[1,2,3],"max_tokens":200}
{"id":"topp","prompt":[1,2,3],"max_tokens":4,"top_p":7}
{"id":"temp","prompt":[1,2,3],"max_tokens":4,"temperature":-1}
{"id":"unknown","prompt":[1,2,3],"max_tokens":4,"beam_width":4}
{"id":"type","prompt":"hello","max_tokens":4}
{"id":"good","prompt":[1,2,3],"max_tokens":4}
JSON
  run "$BENCH" replay --coord "$ADDR" --timeout-ms 60000 "$BATS_TEST_TMPDIR/mixed.jsonl"
  [ "$status" -eq 1 ]  # some requests failed
  err() { jq -r "select(.id==\"$1\") | .code + \": \" + .error" <<<"$output"; }
  [[ "$(err vocab)" == "invalid_argument: "*"outside the vocabulary"* ]]
  [[ "$(err neg)" == "invalid_argument: "*"out of range"* ]]
  [[ "$(err empty)" == "invalid_argument: prompt: is empty" ]]
  [[ "$(err ctx)" == "invalid_argument: "*"exceeds the context length"* ]]
  [[ "$(err kv)" == "resource_exhausted: "*"KV cache"* ]]
  [[ "$(err topp)" == "invalid_argument: top_p"* ]]
  [[ "$(err temp)" == "invalid_argument: temperature"* ]]
  [[ "$(err unknown)" == "invalid_argument: beam_width: unknown field"* ]]
  [[ "$(err type)" == "invalid_argument: prompt"* ]]
  [ "$(jq -r 'select(.id=="good") | .finish_reason' <<<"$output")" = length ]
  still_serves
}

@test "a prompt longer than the KV cache can ever hold is refused" {
  start_cluster 1 --engine-arg=--kv-blocks=4
  prompt=$(python3 -c 'print(list(range(1, 100)))')
  one_request "{\"id\":\"long\",\"prompt\":$prompt,\"max_tokens\":1}"
  [ "$status" -eq 1 ]
  [ "$(jq -r .code <<<"$output")" = resource_exhausted ]
  [[ "$(jq -r .error <<<"$output")" == *"can never fit the KV cache of 64 tokens"* ]]
  still_serves
}

@test "garbage on the port: raw bytes, malformed msgpack, wrong version, unknown type" {
  start_cluster 1
  port=${ADDR##*:}
  # Not even ZMTP: the connection is dropped, nothing crashes.
  head -c 4096 /dev/urandom >/dev/tcp/127.0.0.1/"$port" || true
  run /usr/bin/python3 "$EEP_SRC/tests/e2e/garbage.py" "$ADDR"
  echo "$output"
  [ "$status" -eq 0 ]
  kill -0 "$COORD_PID"
  still_serves
}

@test "a client that vanishes mid-stream: its requests are aborted, the cluster serves on" {
  start_cluster 2
  make_requests 16 400 >"$BATS_TEST_TMPDIR/long.jsonl"
  "$BENCH" replay --coord "$ADDR" "$BATS_TEST_TMPDIR/long.jsonl" >"$BATS_TEST_TMPDIR/partial.jsonl" &
  client=$!
  for i in $(seq 1 100); do
    open=$("$SCALE" --coord "$ADDR" status --json | jq .requests_open)
    [ "$open" -gt 0 ] && break
    sleep 0.05
  done
  sleep 0.5
  kill -KILL "$client"
  wait "$client" || true
  # The coordinator notices when it next streams to the vanished client and aborts the rest.
  for i in $(seq 1 100); do
    open=$("$SCALE" --coord "$ADDR" status --json | jq .requests_open)
    [ "$open" -eq 0 ] && break
    sleep 0.1
  done
  [ "$open" -eq 0 ]
  still_serves
}

@test "an engine killed mid-request: its requests continue elsewhere with identical tokens" {
  make_requests 12 40 >"$BATS_TEST_TMPDIR/mid.jsonl"
  start_cluster 1
  "$BENCH" replay --coord "$ADDR" "$BATS_TEST_TMPDIR/mid.jsonl" >"$BATS_TEST_TMPDIR/ref.jsonl"
  stop_cluster
  start_cluster 3
  "$BENCH" replay --coord "$ADDR" --timeout-ms 120000 "$BATS_TEST_TMPDIR/mid.jsonl" >"$BATS_TEST_TMPDIR/got.jsonl" &
  client=$!
  # Kill rank 1 once it has produced tokens.
  for i in $(seq 1 200); do
    st=$("$SCALE" --coord "$ADDR" status --json)
    steps=$(jq '[.engines[] | select(.rank == 1) | .steps][0] // 0' <<<"$st")
    [ "$steps" -gt 5 ] && break
    sleep 0.05
  done
  victim=$(jq '.engines[] | select(.rank == 1) | .pid' <<<"$st")
  kill -KILL "$victim"
  wait "$client"
  [ "$(wc -l <"$BATS_TEST_TMPDIR/got.jsonl")" -eq 12 ]
  diff <(by_id "$BATS_TEST_TMPDIR/ref.jsonl") <(by_id "$BATS_TEST_TMPDIR/got.jsonl")
  run "$SCALE" --coord "$ADDR" status --json
  [ "$(jq .size <<<"$output")" -eq 2 ]
  [ "$(jq .serving <<<"$output")" = true ]
  still_serves
}
