#!/usr/bin/env bats
# scripts/gpu-decode-ab.sh: decode timed under alternated values of one environment variable,
# from a bundle. Run here on the CPU backend (the script is the same on a GPU machine).

bats_require_minimum_version 1.5.0

setup() {
  T="$BATS_TEST_TMPDIR"
  BUILD="$(dirname "$EEP_BIN")"
}

@test "two values, two passes: a line per run in alternation, then each value's mean" {
  "$EEP_SRC/scripts/bundle.sh" "$BUILD" "$T/b" >/dev/null
  OUT="$T/out" run -0 "$EEP_SRC/scripts/gpu-decode-ab.sh" --passes 2 --batch 1,2 \
    --model preset:tiny --backend cpu "$T/b" EEP_AB_TEST a b
  echo "$output"
  # Alternated: a, b, a, b.
  [[ "${lines[0]}" =~ ^EEP_AB_TEST=a\ pass\ 1:\ b1=[0-9.]+\ b2=[0-9.]+$ ]]
  [[ "${lines[1]}" =~ ^EEP_AB_TEST=b\ pass\ 1: ]]
  [[ "${lines[2]}" =~ ^EEP_AB_TEST=a\ pass\ 2: ]]
  [[ "${lines[3]}" =~ ^EEP_AB_TEST=b\ pass\ 2: ]]
  [ "${lines[4]}" = "== mean ms per step" ]
  # Four means (2 values x 2 batches), each over 2 runs, and the mean is of the runs above.
  [ "$(grep -c '(2 runs)$' <<<"$output")" -eq 4 ]
  local a1 a2 mean
  a1=$(sed -n 's/^EEP_AB_TEST=a pass 1: b1=\([0-9.]*\).*/\1/p' <<<"$output")
  a2=$(sed -n 's/^EEP_AB_TEST=a pass 2: b1=\([0-9.]*\).*/\1/p' <<<"$output")
  mean=$(sed -n 's/^b1 *EEP_AB_TEST=a *\([0-9.]*\) ms.*/\1/p' <<<"$output")
  python3 -c "import sys; a,b,m=map(float,sys.argv[1:]); sys.exit(abs((a+b)/2-m) > 0.0011)" \
    "$a1" "$a2" "$mean"
  # Two files whatever the number of runs: every run's JSON in ab.json, and the summary.
  [ "$(ls "$T/out" | sort | tr '\n' ' ')" = "ab-summary.txt ab.json " ]
  python3 - "$T/out/ab.json" "$a1" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
assert [(r["setting"], r["pass"]) for r in runs] == [
    ("EEP_AB_TEST=a", 1), ("EEP_AB_TEST=b", 1), ("EEP_AB_TEST=a", 2), ("EEP_AB_TEST=b", 2)], runs
first = runs[0]["result"]["results"]
assert [r["batch"] for r in first] == [1, 2], first
assert abs(first[0]["ms_per_step"] - float(sys.argv[2])) < 0.0011, (first, sys.argv[2])
PY
}

@test "a run that fails is reported and the exit is 1; the other values still run" {
  "$EEP_SRC/scripts/bundle.sh" "$BUILD" "$T/b" >/dev/null
  # PATH=/nonexistent: nothing the run needs is found there.
  OUT="$T/out" run -1 "$EEP_SRC/scripts/gpu-decode-ab.sh" --passes 1 --batch 1 \
    --model preset:tiny --backend cpu "$T/b" PATH /nonexistent "$T/b/bin:/usr/bin:/bin"
  echo "$output"
  [[ "${lines[0]}" == "PATH=/nonexistent pass 1: FAILED"* ]]
  [[ "$output" =~ PATH=[^[:space:]]+\ pass\ 1:\ b1=[0-9.]+ ]]
  # ab.json holds the run that finished only; the means skip the failed one.
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs']; sys.exit(len(r) != 1)" \
    "$T/out/ab.json"
  [ "$(grep -c '(1 runs)$' <<<"$output")" -eq 1 ]
}

@test "usage errors exit 2 and name the problem" {
  run -2 "$EEP_SRC/scripts/gpu-decode-ab.sh" --passes 0 b V 1
  [[ "$output" == *"--passes takes a count >= 1"* ]]
  run -2 "$EEP_SRC/scripts/gpu-decode-ab.sh" --batch 1,x b V 1
  [[ "$output" == *"--batch takes a list"* ]]
  run -2 "$EEP_SRC/scripts/gpu-decode-ab.sh" --backend tpu b V 1
  [[ "$output" == *"--backend takes cuda or cpu"* ]]
  run -2 "$EEP_SRC/scripts/gpu-decode-ab.sh" b V
  [[ "$output" == *"usage:"* ]]
  run -2 "$EEP_SRC/scripts/gpu-decode-ab.sh" b "1BAD" 1
  [[ "$output" == *"'1BAD' is not a variable name"* ]]
  run -2 "$EEP_SRC/scripts/gpu-decode-ab.sh" "$T/none" V 1
  [[ "$output" == *"no $T/none/env"* ]]
}
