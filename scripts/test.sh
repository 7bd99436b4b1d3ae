#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test this machine can
# run (unit, cli, e2e; gpu tests skip with a reason where there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# Where nvcc is present the CUDA kernels and GPU tests are built too (they skip without a GPU,
# scripts/gpu-check.sh runs them on one); EEP_CMAKE_ARGS=-DEEP_WITH_CUDA=OFF leaves them out.
./scripts/build.sh
cd "${EEP_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "${EEP_TEST_JOBS:-2}" "$@"
