#!/usr/bin/env bats
# scripts/gpu-two.sh's checks before any GPU work (CI has no GPU): the parts list, and the GPUs
# the chosen parts need (two for 1-3, one for 4-5).

bats_require_minimum_version 1.5.0

setup() {
  T="$BATS_TEST_TMPDIR"
  BUILD="$(dirname "$EEP_BIN")"
  S="$EEP_SRC/scripts/gpu-two.sh"
}

@test "a bad parts list exits 2 and names the problem" {
  run -2 "$S" --parts 6 "$T/none"
  [[ "$output" == *"--parts takes a comma-separated list of 1-5"* ]]
  run -2 "$S" --parts 1,,2 "$T/none"
  [[ "$output" == *"--parts takes"* ]]
}

@test "parts 4,5 need one GPU, parts with 1-3 need two: exit 2, the need named" {
  if nvidia-smi -L >/dev/null 2>&1; then skip "this machine has a GPU"; fi
  "$EEP_SRC/scripts/bundle.sh" "$BUILD" "$T/b" >/dev/null
  run -2 env -u OUT "$S" --parts 4,5 "$T/b" "$T/r"
  [[ "$output" == *"parts 4,5 need 1 GPU(s), this machine has 0"* ]]
  run -2 env -u OUT "$S" --parts 3,4 "$T/b" "$T/r"
  [[ "$output" == *"parts 3,4 need 2 GPU(s)"* ]]
}
