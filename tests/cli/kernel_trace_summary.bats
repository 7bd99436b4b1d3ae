#!/usr/bin/env bats
# scripts/kernel-trace-summary.py: where a window of GPU time goes, from a kernel trace (what
# tests/gpu/kernel_trace.cc writes). A trace written by hand, with overlap and idle time whose
# figures are known.

bats_require_minimum_version 1.5.0

setup() {
  T="$BATS_TEST_TMPDIR"
  S="$EEP_SRC/scripts/kernel-trace-summary.py"
  # a: 1-3 us, b: 2.5-6 us (overlaps a by 0.5), idle 6-8, a again: 8-9 us.
  cat >"$T/trace.csv" <<'CSV'
start_ns,end_ns,stream,grid,block,registers,name
1000,3000,7,1,32,20,void eep::kernels::detail::a_kernel<64, 32>(int, float*)
2500,6000,7,132,256,40,void eep::kernels::detail::b_kernel(int)
8000,9000,7,1,32,20,void eep::kernels::detail::a_kernel<64, 32>(int, float*)
CSV
}

@test "wall, busy and idle time; per kernel: count, mean, adds, gap and idle after" {
  run -0 "$S" "$T/trace.csv"
  echo "$output"
  [ "${lines[0]}" = "window: 3 kernels, wall 8.0 us, a kernel running 6.0 us (75.0%), idle 2.0 us" ]
  # b runs 3.5 us but adds 3.0 (its first 0.5 overlaps a); a adds 2.0 + 1.0. Equal adds: the
  # longer total duration (b) first. Names without namespace or arguments.
  [[ "${lines[2]}" =~ ^b_kernel\ +1\ +3\.50\ +3\.00\ +3\.0\ +37\.5\ +-0\.50\ +2\.0$ ]]
  [[ "${lines[3]}" =~ ^a_kernel\<64,32\>\ +2\ +1\.50\ +1\.50\ +3\.0\ +37\.5\ +1\.00\ +0\.0$ ]]
}

@test "namespaces go from template arguments too; the arguments tell instances apart" {
  printf '9500,9600,7,1,32,20,void eep::k::g_kernel<eep::k::Config<32, 16>, true>(int)\n' >>"$T/trace.csv"
  printf '9700,9900,7,1,32,20,void eep::k::g_kernel<eep::k::Config<64, 16>, false>(int)\n' >>"$T/trace.csv"
  run -0 "$S" "$T/trace.csv"
  echo "$output"
  [[ "$output" == *$'\ng_kernel<Config<64,16>,false> '* ]]
  [[ "$output" == *$'\ng_kernel<Config<32,16>,true> '* ]]
}

@test "sorted by what a kernel adds, not by its duration" {
  # c starts with b and ends inside it: 2 us long, adds nothing.
  printf '2600,4600,7,1,32,20,void c_kernel(int)\n' >>"$T/trace.csv"
  run -0 "$S" "$T/trace.csv"
  echo "$output"
  [ "${lines[0]}" = "window: 4 kernels, wall 8.0 us, a kernel running 6.0 us (75.0%), idle 2.0 us" ]
  [[ "${lines[4]}" =~ ^c_kernel\ +1\ +2\.00\ +0\.00\ +0\.0\ +0\.0\  ]]
}

@test "--last N keeps the last N kernels by start time" {
  run -0 "$S" --last 2 "$T/trace.csv"
  echo "$output"
  [ "${lines[0]}" = "window: 2 kernels, wall 6.5 us, a kernel running 4.5 us (69.2%), idle 2.0 us" ]
}

@test "a malformed line is named, exit 1; a missing file and bad flags exit 2" {
  printf '1,2,3\n' >>"$T/trace.csv"
  run -1 "$S" "$T/trace.csv"
  [[ "$output" == *"trace.csv:5: malformed"* ]]
  printf 'start_ns,end_ns,stream,grid,block,registers,name\n9,3,1,1,1,1,k\n' >"$T/bad.csv"
  run -1 "$S" "$T/bad.csv"
  [[ "$output" == *"bad.csv:2: malformed (end >= start)"* ]]
  run -2 "$S" "$T/none.csv"
  [[ "$output" == *"cannot read"* ]]
  run -2 "$S" --last -1 "$T/trace.csv"
  [[ "$output" == *"--last must be >= 0"* ]]
}

@test "--against: per kernel, what it adds in each trace and the difference, largest first" {
  # B: a takes 1 us longer each launch (adds 3.0 then 2.0), b the same, c only in B.
  cat >"$T/b.csv" <<'CSV'
start_ns,end_ns,stream,grid,block,registers,name
1000,4000,7,1,32,20,void eep::kernels::detail::a_kernel<64, 32>(int, float*)
3500,7000,7,132,256,40,void eep::kernels::detail::b_kernel(int)
9000,11000,7,1,32,20,void eep::kernels::detail::a_kernel<64, 32>(int, float*)
11000,11500,7,1,32,20,void c_kernel(int)
CSV
  run -0 "$S" --against "$T/b.csv" "$T/trace.csv"
  echo "$output"
  [[ "${lines[0]}" == "window A: 3 kernels,"* ]]
  [[ "${lines[1]}" == "window B: 4 kernels,"* ]]
  # a: A adds (2.0 + 1.0) / 2 = 1.50, B (3.0 + 2.0) / 2 = 2.50: +1.00 over 2 launches weighs 2;
  # c: +0.50 over 1; b: 3.00 in both (3.5 - 0.5 overlap; B 3.5 - 0.5 overlap): 0.
  [[ "${lines[3]}" =~ ^a_kernel\<64,32\>\ +2\ +2\ +1\.50\ +2\.50\ +\+1\.00$ ]]
  [[ "${lines[4]}" =~ ^c_kernel\ +0\ +1\ +0\.00\ +0\.50\ +\+0\.50$ ]]
  [[ "${lines[5]}" =~ ^b_kernel\ +1\ +1\ +3\.00\ +3\.00\ +\+0\.00$ ]]
  run -2 "$S" --against "$T/none.csv" "$T/trace.csv"
  [[ "$output" == *"cannot read"* ]]
}
