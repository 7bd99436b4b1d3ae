# shellcheck shell=bash
# Sourced by the GPU scripts once `script` (the caller's name) is set and `results` holds the
# RESULTS_DIR argument, perhaps empty. On a device call ($OUT set) without a RESULTS_DIR the
# results go to a temporary folder, packed when the script exits into one file,
# $OUT/$script-results$results_suffix.tgz (scripts/pack-results.sh): a call brings back at most
# 8 files, two folders deep, and these scripts write dozens. Otherwise the default is
# ./$script-results. Sets `results`.
if [[ -z $results && -n ${OUT:-} ]]; then
  results=$(mktemp -d "/tmp/${script:?}.XXXXXX") || exit 2
  results_archive=$OUT/$script-results${results_suffix:-}.tgz
  trap 'bash scripts/pack-results.sh "$results" "$results_archive"; rm -rf "$results"' EXIT
fi
results=${results:-$script-results}
