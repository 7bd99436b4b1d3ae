#!/usr/bin/env bash
# The README's demo: installs what is missing, builds, starts a coordinator with local CPU
# engines on a small preset, replays a batch of requests while the cluster scales up and back
# down, and prints a short summary.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh >/dev/null
bin=${EEP_BUILD_DIR:-build}/tools
engines=${EEP_DEMO_ENGINES:-3}
requests=${EEP_DEMO_REQUESTS:-48}
model=${EEP_DEMO_MODEL:-preset:small}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr="tcp://127.0.0.1:$port"
work=$(mktemp -d)
trap 'kill "$coord" 2>/dev/null || true; wait "$coord" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== starting eep-coord on $addr with $engines CPU engines ($model)"
"$bin/eep-coord/eep-coord" --bind "$addr" --spawn "$engines" --model "$model" --redundant "$engines" \
  2>"$work/coord.log" &
coord=$!
for _ in $(seq 1 600); do
  if "$bin/eep-scale/eep-scale" --coord "$addr" --timeout-ms 500 status --json 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["serving"] else 1)'; then
    break
  fi
  kill -0 "$coord" 2>/dev/null || { cat "$work/coord.log"; exit 1; }
  sleep 0.1
done
"$bin/eep-scale/eep-scale" --coord "$addr" status

echo "== replaying $requests requests"
python3 - "$requests" >"$work/requests.jsonl" <<'PY'
import json, random, sys
rng = random.Random(1)
for i in range(int(sys.argv[1])):
    prompt = [rng.randrange(2000) for _ in range(rng.randrange(8, 64))]
    print(json.dumps({"id": f"demo{i}", "prompt": prompt, "max_tokens": rng.randrange(32, 96)}))
PY
start=$(date +%s.%N)
"$bin/eep-bench/eep-bench" replay --coord "$addr" "$work/requests.jsonl" >"$work/results.jsonl" &
replay=$!
# Mid-run, under load: grow by two engines, then give them back. No request is dropped.
sleep 1
echo "== scaling up by 2 while serving"
"$bin/eep-scale/eep-scale" --coord "$addr" up 2 --wait 2>&1 >/dev/null | sed 's/^/   /'
sleep 1
echo "== scaling back down by 2 while serving"
"$bin/eep-scale/eep-scale" --coord "$addr" down 2 --wait 2>&1 >/dev/null | sed 's/^/   /'
wait "$replay"
end=$(date +%s.%N)
sleep 0.6  # one heartbeat carries the final expert load
"$bin/eep-scale/eep-scale" --coord "$addr" status --json >"$work/status.json"
"$bin/eep-scale/eep-scale" --coord "$addr" stats >"$work/stats.json"

python3 - "$work" "$start" "$end" <<'PY'
import json, sys
work, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
results = [json.loads(l) for l in open(f"{work}/results.jsonl")]
status = json.load(open(f"{work}/status.json"))
stats = json.load(open(f"{work}/stats.json"))
ok = [r for r in results if "error" not in r]
tokens = sum(len(r["tokens"]) for r in ok)
wall = end - start
ttft = sorted(r["ttft_ms"] for r in ok)
print(f"== summary")
print(f"requests   {len(ok)} finished, {len(results) - len(ok)} failed")
print(f"tokens     {tokens} generated in {wall:.2f} s = {tokens / wall:.0f} tokens/s")
print(f"TTFT       p50 {ttft[len(ttft) // 2]:.0f} ms, max {ttft[-1]:.0f} ms")
spr = stats["num_slots"] // stats["num_gpus"]
left = [e for e in status["engines"] if e["state"] == "left"]
print(f"engines    {len(status['engines']) - len(left)} serving now, {len(left)} left after the scale-down")
print(f"expert load since the last transition, per rank:")
print(f"{'rank':>4} {'steps':>6} {'tokens routed to its slots':>28}")
for e in sorted((e for e in status["engines"] if e["rank"] >= 0), key=lambda e: e["rank"]):
    r = e["rank"]
    load = sum(sum(layer[r * spr:(r + 1) * spr]) for layer in stats["slot_load"])
    print(f"{r:>4} {e['steps']:>6} {load:>28}")
PY
"$bin/eep-scale/eep-scale" --coord "$addr" shutdown
wait "$coord"
echo "== done: coordinator and engines stopped"
