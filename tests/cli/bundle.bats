#!/usr/bin/env bats
# scripts/bundle.sh and scripts/bundle-open.sh: the relocatable bundle that GPU machines without
# eep's dependencies run from, as a directory and as a .tgz (the device tool's carry limit).

bats_require_minimum_version 1.5.0

setup() {
  T="$BATS_TEST_TMPDIR"
  BUILD="$(dirname "$EEP_BIN")"
}

# Opens BUNDLE as the GPU scripts do, then runs eep-engine --version from what it opened.
open_and_run() {
  bash -c 'bundle=$1; script=t; cd "$2"; source scripts/bundle-open.sh || exit;
           echo "opened $bundle"; source "$bundle/env"; command -v eep-engine; eep-engine --version' \
    _ "$1" "$EEP_SRC"
}

@test "--archive writes the directory and a .tgz that the GPU scripts open" {
  run -0 "$EEP_SRC/scripts/bundle.sh" --archive "$BUILD" "$T/b"
  [ -x "$T/b/bin/eep-engine" ]
  [ -f "$T/b/env" ]
  [ -f "$T/b.tgz" ]
  rm -rf "$T/b"  # only the archive is left, as on the GPU machine
  run -0 open_and_run "$T/b.tgz"
  [[ "${lines[0]}" == "opened $T/b.unpacked/b" ]]
  [[ "${lines[1]}" == "$T/b.unpacked/b/bin/eep-engine" ]]
  [[ "${lines[2]}" == eep-engine* ]]
}

@test "a missing directory falls back to its .tgz beside it" {
  run -0 "$EEP_SRC/scripts/bundle.sh" --archive "$BUILD" "$T/b"
  rm -rf "$T/b"
  run -0 open_and_run "$T/b"
  [[ "${lines[0]}" == "opened $T/b.unpacked/b" ]]
}

@test "the directory itself opens without unpacking" {
  run -0 "$EEP_SRC/scripts/bundle.sh" "$BUILD" "$T/b"
  [ ! -e "$T/b.tgz" ]
  run -0 open_and_run "$T/b"
  [[ "${lines[0]}" == "opened $T/b" ]]
}

@test "a corrupt archive: exit 2, named" {
  echo "not gzip" >"$T/bad.tgz"
  run -2 --separate-stderr open_and_run "$T/bad.tgz"
  [[ "$stderr" == *"t: cannot unpack $T/bad.tgz"* ]]
}

@test "an archive without a bundle in it: exit 2, named" {
  mkdir -p "$T/empty/x"
  tar czf "$T/empty.tgz" -C "$T/empty" x
  run -2 --separate-stderr open_and_run "$T/empty.tgz"
  [[ "$stderr" == *"holds no bundle"* ]]
}

@test "no bundle at all: exit 2, named" {
  run -2 --separate-stderr open_and_run "$T/nothing"
  [[ "$stderr" == *"t: no $T/nothing/env"* ]]
}

@test "bundle.sh: an unknown option or a build without tools: exit 2" {
  run -2 --separate-stderr "$EEP_SRC/scripts/bundle.sh" --zip "$BUILD" "$T/b"
  [[ "$stderr" == "bundle: unknown option --zip"* ]]
  mkdir -p "$T/nobuild"
  run -2 --separate-stderr "$EEP_SRC/scripts/bundle.sh" "$T/nobuild" "$T/b"
  [[ "$stderr" == *"no $T/nobuild/tools/eep-engine/eep-engine"* ]]
}
