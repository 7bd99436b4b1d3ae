#!/usr/bin/env bash
# Packs a results folder into one .tgz for the trip back from a device call, which brings back at
# most 8 files of $OUT, each at most 16 MiB and at most two folders down (the GPU scripts write
# dozens of logs, JSON and plots, some deep in per-run folders):
#   scripts/pack-results.sh DIR ARCHIVE
# Leaves out model weights (*.safetensors: the checkpoints the scripts write for their engines
# can be written again) and any other file over 4 MiB (named on stderr), so that the archive
# stays under the limit. Prints the archive's size and file count.
# Exit: 0 packed, 1 tar failed or the archive is over 16 MiB, 2 usage.
set -uo pipefail
if (($# != 2)); then
  echo "usage: scripts/pack-results.sh DIR ARCHIVE" >&2
  exit 2
fi
dir=$1 archive=$2
[[ -d $dir ]] || { echo "pack-results: no folder $dir" >&2; exit 2; }
list=$(mktemp) || exit 1
trap 'rm -f "$list"' EXIT
# Paths relative to DIR, NUL-separated, without weights and large files.
(cd "$dir" && find . -type f ! -name '*.safetensors' -size -4097k -print0) >"$list"
(cd "$dir" && find . -type f ! -name '*.safetensors' -size +4096k -printf '%p\n') |
  while read -r big; do echo "pack-results: left out $big (over 4 MiB)" >&2; done
mkdir -p "$(dirname "$archive")"
tar czf "$archive" -C "$dir" --null -T "$list" || { echo "pack-results: tar failed" >&2; exit 1; }
bytes=$(stat -c %s "$archive")
files=$(tr -cd '\0' <"$list" | wc -c)
echo "pack-results: $archive, $files files, $((bytes / 1024)) KiB"
((bytes <= 16 * 1024 * 1024)) || { echo "pack-results: $archive is over 16 MiB" >&2; exit 1; }
