#!/usr/bin/env bats
# scripts/pack-results.sh: a results folder as one archive for a device call's trip back
# (at most 8 files come back), without weights or large files; and scripts/results-dir.sh, which
# sends a GPU script's results there on a device call.

bats_require_minimum_version 1.5.0

setup() {
  T="$BATS_TEST_TMPDIR"
  S="$EEP_SRC/scripts/pack-results.sh"
  mkdir -p "$T/r/all/small/logs" "$T/r/all/small/ckpt"
  echo '{"a": 1}' >"$T/r/decode.json"
  echo "scale 1 -> 2" >"$T/r/all/small/logs/coord-scale.log"
  head -c 1000 /dev/urandom >"$T/r/all/small/ckpt/model.safetensors"
  head -c $((5 * 1024 * 1024)) /dev/zero >"$T/r/all/big.bin"
}

@test "packs every file, deep ones too, but weights and files over 4 MiB" {
  run -0 "$S" "$T/r" "$T/out/results.tgz"
  echo "$output"
  [[ "$output" == *"left out ./all/big.bin (over 4 MiB)"* ]]
  [[ "$output" == *"results.tgz, 2 files,"* ]]
  run -0 tar tzf "$T/out/results.tgz"
  [[ "$output" == *"./decode.json"* ]]
  [[ "$output" == *"./all/small/logs/coord-scale.log"* ]]
  [[ "$output" != *"safetensors"* ]]
  [[ "$output" != *"big.bin"* ]]
}

@test "usage errors exit 2" {
  run -2 "$S" "$T/r"
  [[ "$output" == *"usage:"* ]]
  run -2 "$S" "$T/none" "$T/x.tgz"
  [[ "$output" == *"no folder $T/none"* ]]
}

# A GPU script's RESULTS_DIR through scripts/results-dir.sh: a stand-in script that writes a deep
# file and exits with a status of its own.
write_stand_in() {
  mkdir -p "$T/repo/scripts"
  cp "$EEP_SRC/scripts/results-dir.sh" "$EEP_SRC/scripts/pack-results.sh" "$T/repo/scripts/"
  cat >"$T/repo/scripts/stand-in.sh" <<'SH'
#!/usr/bin/env bash
cd "$(dirname "$0")/.." || exit 2
results=${1:-}
script=stand-in
source scripts/results-dir.sh
mkdir -p "$results/a/b/c"
echo deep >"$results/a/b/c/log.txt"
echo "$results" >"$BATS_TEST_TMPDIR/where"
exit 3
SH
}

@test "results-dir.sh: on a device call, one archive in \$OUT and the temporary folder gone" {
  write_stand_in
  OUT="$T/out" run -3 bash "$T/repo/scripts/stand-in.sh"
  echo "$output"
  [ "$(ls "$T/out")" = "stand-in-results.tgz" ]
  run -0 tar tzf "$T/out/stand-in-results.tgz"
  [[ "$output" == *"./a/b/c/log.txt"* ]]
  [ ! -e "$(cat "$T/where")" ]
}

@test "results-dir.sh: a RESULTS_DIR, or no \$OUT, writes in place" {
  write_stand_in
  OUT="$T/out" run -3 bash "$T/repo/scripts/stand-in.sh" "$T/given"
  [ -f "$T/given/a/b/c/log.txt" ]
  [ ! -e "$T/out" ]
  run -3 env -u OUT bash "$T/repo/scripts/stand-in.sh"
  [ -f "$T/repo/stand-in-results/a/b/c/log.txt" ]
}
