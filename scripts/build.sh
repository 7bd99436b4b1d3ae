#!/usr/bin/env bash
# Configures and builds eep into ./build (CPU-only unless nvcc is found). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${EEP_BUILD_DIR:-build}
jobs=${EEP_JOBS:-$(nproc)}
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S . -B "$build_dir" -G Ninja ${EEP_CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -j "$jobs"
