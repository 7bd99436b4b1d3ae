#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test this machine can
# run (unit, cli, e2e; gpu tests skip with a reason where there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# CI builds without CUDA: nvcc may be present but no GPU can run the result, and the CUDA build is
# checked by scripts/gpu-check.sh on a GPU machine.
EEP_CMAKE_ARGS="${EEP_CMAKE_ARGS:--DEEP_WITH_CUDA=OFF}" ./scripts/build.sh
cd "${EEP_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "${EEP_TEST_JOBS:-2}" "$@"
