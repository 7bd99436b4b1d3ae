#!/usr/bin/env bats
# scripts/pack-results.sh: a results folder as one archive for a device call's trip back
# (at most 8 files come back), without weights or large files.

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
