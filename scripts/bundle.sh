#!/usr/bin/env bash
# Packs eep's programs from a build directory, with the shared libraries a bare GPU machine lacks
# (ZeroMQ, Gloo, spdlog, fmt and their dependencies), into one relocatable directory:
#   scripts/bundle.sh [--archive] [BUILD_DIR] [DEST]     (defaults: build, .carry/bundle)
# DEST/bin holds stripped eep-* tools and any GPU test binaries; DEST/lib the libraries, with the
# CUDA plugin and the kernel tracer (libeep_kernel_trace.so, with libcupti) where built; DEST/env
# sets PATH and LD_LIBRARY_PATH (`. DEST/env`). The GPU machines have glibc, libstdc++, CUDA, cuBLAS
# and NCCL, so those are left out (the machine's own are newer than this one's). --archive also
# writes DEST.tgz (~20 MB against ~67 MB unpacked with every GPU test: the device tool carries
# 64 MiB with the working tree), which scripts/gpu-{all,serve,two}.sh take in place of DEST.
# Exit 2: usage.
set -euo pipefail
cd "$(dirname "$0")/.."
archive=0
if [[ ${1:-} == --archive ]]; then
  archive=1
  shift
fi
if [[ ${1:-} == -* ]]; then
  echo "bundle: unknown option $1 (usage: scripts/bundle.sh [--archive] [BUILD_DIR] [DEST])" >&2
  exit 2
fi
build=${1:-build}
dest=${2:-.carry/bundle}
[[ -x $build/tools/eep-engine/eep-engine ]] || { echo "bundle: no $build/tools/eep-engine/eep-engine; build first" >&2; exit 2; }
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
bins=("$build"/tools/eep-*/eep-*)
for extra in "$build"/tests/gpu/*; do
  [[ -f $extra && -x $extra && $extra != *.so ]] && bins+=("$extra")
done
for b in "${bins[@]}"; do
  [[ -f $b && -x $b ]] || continue
  strip -o "$dest/bin/$(basename "$b")" "$b"
done
# Libraries the machine provides: the C runtime, the compiler runtime, the CUDA stack.
keep_out='^(libc|libm|libdl|librt|libpthread|libresolv|ld-linux-x86-64|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia-.*)\.so'
# The CUDA plugin (CUDA builds): the programs find it in ../lib of their directory.
if [[ -f $build/lib/libeep_cuda.so ]]; then
  strip -o "$dest/lib/libeep_cuda.so" "$build/lib/libeep_cuda.so"
fi
# The kernel tracer (CUDA_INJECTION64_PATH; tests/gpu/kernel_trace.cc), where CUPTI was found.
if [[ -f $build/tests/gpu/libeep_kernel_trace.so ]]; then
  strip -o "$dest/lib/libeep_kernel_trace.so" "$build/tests/gpu/libeep_kernel_trace.so"
fi
for b in "$dest"/bin/* "$dest"/lib/libeep_cuda.so "$dest"/lib/libeep_kernel_trace.so; do
  [[ -f $b ]] || continue
  ldd "$b" | awk '/=>/ && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  base=$(basename "$lib")
  [[ $base =~ $keep_out ]] && continue
  # The GPU tests link the plugin: keep the stripped copy made above (half the size).
  [[ $base == libeep_cuda.so ]] && continue
  cp -L "$lib" "$dest/lib/$base"
done
cat > "$dest/env" <<'ENV'
# Source me: puts the bundle's programs and libraries first.
eep_bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH=$eep_bundle/bin:$PATH
export LD_LIBRARY_PATH=$eep_bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# Elsewhere cuBLAS may be only in the toolkit's directory.
[[ -d /usr/local/cuda/lib64 ]] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
ENV
du -sh "$dest" | awk '{print "bundle: " $1 " in '"$dest"'"}'
if ((archive)); then
  tar czf "$dest.tgz" -C "$(dirname "$dest")" "$(basename "$dest")"
  du -sh "$dest.tgz" | awk '{print "bundle: " $1 " in '"$dest.tgz"'"}'
fi
ls "$dest/lib" | tr '\n' ' '; echo
