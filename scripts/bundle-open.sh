# shellcheck shell=bash
# Sourced by the GPU scripts: BUNDLE may be the directory scripts/bundle.sh made or its .tgz
# (scripts/bundle.sh --archive). The device tool carries at most 64 MiB with the working tree,
# and a bundle with every GPU test binary is ~67 MB unpacked, ~20 MB packed, so a run carries
# the archive and unpacks it here, beside it (ARCHIVE with .unpacked for .tgz). Sets `bundle`
# to the unpacked directory; exits 2 when there is none. Expects `bundle` and `script` (the
# caller's name, for messages) set.
[[ ! -e $bundle && -f $bundle.tgz ]] && bundle=$bundle.tgz  # the default, packed
if [[ -f $bundle && $bundle == *.tgz ]]; then
  unpacked=${bundle%.tgz}.unpacked  # beside the archive, replaced on every run
  if ! { rm -rf "$unpacked" && mkdir -p "$unpacked" && tar xzf "$bundle" -C "$unpacked"; }; then
    echo "${script:?}: cannot unpack $bundle" >&2
    exit 2
  fi
  bundle=$(find "$unpacked" -mindepth 2 -maxdepth 2 -name env -printf '%h\n' | head -1)
  [[ -n $bundle ]] || { echo "$script: $unpacked holds no bundle (no */env)" >&2; exit 2; }
fi
[[ -f $bundle/env ]] || {
  echo "$script: no $bundle/env (run scripts/bundle.sh first, or give its .tgz)" >&2
  exit 2
}
