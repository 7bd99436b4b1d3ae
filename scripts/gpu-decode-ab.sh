#!/usr/bin/env bash
# One-GPU decode timed under several values of one environment variable, the values alternated
# pass after pass so that drift (clocks, temperature, a neighbour) falls on all of them alike:
#   scripts/gpu-decode-ab.sh [--passes N] [--batch LIST] [--model M] [--backend B] BUNDLE VAR VALUE...
#     (defaults: 2 passes, batch 1,8,256, preset:qwen3-30b-a3b, backend cuda; results under
#      $OUT, else ./gpu-decode-ab-results)
# BUNDLE: the directory scripts/bundle.sh made, or its .tgz. Each run is `eep-bench decode
# --backend B --context 256 --steps 32` with VAR=VALUE (--backend cpu exists for its test).
# Prints a line per run ("VAR=VALUE pass P: b1=ms ...", ms per step: the mean of the
# graph-replayed steps), then each value's mean per batch. Writes two files, whatever the number
# of runs (a device call brings back at most 8): ab.json (every run's eep-bench JSON, with its
# setting and pass) and ab-summary.txt (the lines printed); a failed run's log is printed.
# Example: scripts/gpu-decode-ab.sh .carry/bundle.tgz EEP_CUDA_PDL 1 0
# Exit: 0 every run wrote its JSON, 1 one did not, 2 usage.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
passes=2
batch=1,8,256
model=preset:qwen3-30b-a3b
backend=cuda
while [[ ${1:-} == --* ]]; do
  case $1 in
    --passes) passes=${2:-}; [[ $passes =~ ^[1-9][0-9]*$ ]] || { echo "gpu-decode-ab: --passes takes a count >= 1" >&2; exit 2; } ;;
    --batch) batch=${2:-}; [[ $batch =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "gpu-decode-ab: --batch takes a list like 1,8,256" >&2; exit 2; } ;;
    --model) model=${2:-}; [[ -n $model ]] || { echo "gpu-decode-ab: --model takes a model" >&2; exit 2; } ;;
    --backend) backend=${2:-}; [[ $backend == cuda || $backend == cpu ]] || { echo "gpu-decode-ab: --backend takes cuda or cpu" >&2; exit 2; } ;;
    *) echo "gpu-decode-ab: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
if (($# < 3)); then
  echo "usage: scripts/gpu-decode-ab.sh [--passes N] [--batch LIST] [--model M] [--backend B] BUNDLE VAR VALUE..." >&2
  exit 2
fi
bundle=$1 var=$2
shift 2
[[ $var =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "gpu-decode-ab: '$var' is not a variable name" >&2; exit 2; }
results=${OUT:-gpu-decode-ab-results}
script=gpu-decode-ab
# shellcheck source=scripts/bundle-open.sh
source scripts/bundle-open.sh
# shellcheck disable=SC1091
source "$bundle/env"
mkdir -p "$results"
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
status=0
summary=$results/ab-summary.txt
: >"$summary"
n=0
for ((p = 1; p <= passes; p++)); do
  for value in "$@"; do
    n=$((n + 1))
    json=$work/run$n.json log=$work/run$n.txt
    if ! env "$var=$value" timeout 300 eep-bench decode --backend "$backend" --model "$model" \
      --batch "$batch" --context 256 --steps 32 --json "$json" >"$log" 2>&1; then
      echo "$var=$value pass $p: FAILED (tail of its log:)" | tee -a "$summary"
      tail -5 "$log" | tee -a "$summary"
      status=1
      continue
    fi
    printf '%s\n%s\n' "$var=$value" "$p" >"$work/run$n.tag"
    python3 - "$json" "$var=$value" "$p" <<'PY' | tee -a "$summary"
import json, sys
d = json.load(open(sys.argv[1]))
runs = " ".join(f"b{r['batch']}={r['ms_per_step']:.3f}" for r in d["results"])
print(f"{sys.argv[2]} pass {sys.argv[3]}: {runs}")
PY
  done
done
# Every run that finished, in run order, as one file.
python3 - "$work" "$n" "$results/ab.json" <<'PY'
import json, os, sys
work, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = []
for i in range(1, n + 1):
    tag = os.path.join(work, f"run{i}.tag")
    if os.path.exists(tag):
        setting, p = open(tag).read().split("\n")[:2]
        runs.append({"setting": setting, "pass": int(p),
                     "result": json.load(open(os.path.join(work, f"run{i}.json")))})
json.dump({"runs": runs}, open(out, "w"), indent=1)
PY
echo "== mean ms per step"
python3 - "$summary" <<'PY'
import collections, sys
acc = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if " pass " not in line or ": FAILED" in line:
        continue  # a failed run and its log lines
    setting, _, runs = line.partition(" pass ")
    for item in runs.split(":", 1)[1].split():
        b, ms = item.split("=")
        acc[(setting, int(b[1:]))].append(float(ms))
for (setting, b), v in sorted(acc.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"b{b:<4} {setting:<32} {sum(v) / len(v):.3f} ms  ({len(v)} runs)")
PY
exit $status
