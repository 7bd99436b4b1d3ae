#!/usr/bin/env python3
"""Where a window of GPU time goes, kernel by kernel, from a kernel trace.

    scripts/kernel-trace-summary.py TRACE.csv [--last N] [--top K] [--against OTHER.csv]

TRACE.csv is what tests/gpu/kernel_trace.cc writes (CUDA_INJECTION64_PATH): a header, then
"start_ns,end_ns,stream,grid,block,registers,name" per kernel, and per memory copy or set
(named memcpy_HtoD, memcpy_DtoH, ..., memset; they count like kernels). The window is the last
N records by start time (all by default: for a decode benchmark, take about steps x kernels a
step, so that loading and warm-up fall outside). Prints the window's wall time, the time some
kernel runs (the union of the kernels' intervals) and the idle rest, then per kernel name
(demangled, namespaces dropped, template arguments kept, function arguments dropped): count, mean duration, and what the kernel adds, the time by
which it moves the latest end so far (on one stream, its share of the critical path: a kernel
launched early behind PDL and waiting for its predecessor has a long duration but adds only
what it runs after it); the adds sum to the busy time, and the list is sorted by their total.
Then the mean gap from the end of the kernel that started before it (negative: they
overlapped; the window's first kernel counts a gap of 0), and the idle time that follows each
kernel until the next one starts.
With --against, two builds or settings side by side (the same window rule for both): per kernel
name, the launches and the mean added time in each trace and their difference, the largest
changes (difference times launches) first; a kernel found in one trace only shows 0 in the other.
Exit: 0, 1 a malformed trace (the line is named) or an empty window, 2 usage.
"""
import argparse
import re
import sys
from collections import defaultdict


def short_name(name):
    """'void eep::detail::foo_kernel<eep::detail::Config<64, 32>, true>(int, ...)' ->
    'foo_kernel<Config<64,32>,true>': template arguments kept (they tell instances apart),
    namespaces dropped everywhere."""
    depth = 0
    cut = len(name)
    for i, c in enumerate(name):  # the argument list: the first '(' outside template brackets
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0:
            cut = i
            break
    name = name[:cut].strip()
    name = re.sub(r"^void\s+", "", name)
    name = re.sub(r"\b[A-Za-z_]\w*::", "", name)
    return name.replace(" ", "")


def read_trace(path):
    kernels = []
    try:
        f = open(path)
    except OSError as e:
        print(f"kernel-trace-summary: cannot read {path}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
    with f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if n == 1 and line.startswith("start_ns,"):
                continue
            if not line:
                continue
            parts = line.split(",", 6)
            try:
                if len(parts) != 7:
                    raise ValueError("7 fields")
                start, end = int(parts[0]), int(parts[1])
                if end < start:
                    raise ValueError("end >= start")
            except ValueError as e:
                print(f"kernel-trace-summary: {path}:{n}: malformed ({e}): {line[:120]}",
                      file=sys.stderr)
                sys.exit(1)
            kernels.append((start, end, short_name(parts[6])))
    return kernels


def window(path, last):
    """The last `last` records of a trace by start time (all for 0); exits 1 when empty."""
    kernels = sorted(read_trace(path))
    if last:
        kernels = kernels[-last:]
    if not kernels:
        print(f"kernel-trace-summary: no kernels in the window of {path}", file=sys.stderr)
        sys.exit(1)
    return kernels


def summarize(kernels):
    """(wall, busy, per name [count, total duration, total added, total gap, idle after])."""
    wall = max(e for _, e, _ in kernels) - kernels[0][0]
    busy = 0
    run_end = kernels[0][0]
    # Per kernel: its gap from the end of the one before (by start), and the idle time after it
    # (from the latest end so far to the next start, when positive).
    stats = defaultdict(lambda: [0, 0, 0, 0, 0])
    prev_end = None
    for i, (s, e, name) in enumerate(kernels):
        added = max(0, e - max(s, run_end))
        busy += added
        run_end = max(run_end, e)
        st = stats[name]
        st[0] += 1
        st[1] += e - s
        st[2] += added
        if prev_end is not None:
            st[3] += s - prev_end
        prev_end = e
        if i + 1 < len(kernels):
            st[4] += max(0, kernels[i + 1][0] - run_end)
    return wall, busy, stats


US = 1e-3


def window_line(label, kernels, wall, busy):
    return (f"{label}{len(kernels)} kernels, wall {wall * US:.1f} us, a kernel running "
            f"{busy * US:.1f} us ({100.0 * busy / wall if wall else 0:.1f}%), idle "
            f"{(wall - busy) * US:.1f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--last", type=int, default=0, help="only the last N kernels (0: all)")
    ap.add_argument("--top", type=int, default=30, help="kernel names to list")
    ap.add_argument("--against", metavar="OTHER",
                    help="compare with another trace: per kernel, what it adds in each")
    args = ap.parse_args()
    if args.last < 0 or args.top <= 0:
        ap.error("--last must be >= 0 and --top > 0")
    kernels = window(args.trace, args.last)
    wall, busy, stats = summarize(kernels)

    if args.against:
        other = window(args.against, args.last)
        wall_b, busy_b, stats_b = summarize(other)
        print(window_line("window A: ", kernels, wall, busy))
        print(window_line("window B: ", other, wall_b, busy_b))
        print(f"{'kernel':<60} {'count A':>7} {'count B':>7} {'adds A us':>9} "
              f"{'adds B us':>9} {'B - A us':>9}")
        names = set(stats) | set(stats_b)

        def mean_adds(st, name):
            return st[name][2] / st[name][0] * US if name in st else 0.0

        def weight(name):  # the change a launch makes, times how often it is launched
            count = max(stats[name][0] if name in stats else 0,
                        stats_b[name][0] if name in stats_b else 0)
            return abs(mean_adds(stats_b, name) - mean_adds(stats, name)) * count

        for name in sorted(names, key=lambda n: (-weight(n), n))[: args.top]:
            ca = stats[name][0] if name in stats else 0
            cb = stats_b[name][0] if name in stats_b else 0
            a, b = mean_adds(stats, name), mean_adds(stats_b, name)
            print(f"{name[:60]:<60} {ca:>7} {cb:>7} {a:>9.2f} {b:>9.2f} {b - a:>+9.2f}")
        return

    print(window_line("window: ", kernels, wall, busy))
    print(f"{'kernel':<60} {'count':>6} {'mean us':>9} {'adds us':>8} {'adds total':>10} "
          f"{'% wall':>7} {'gap us':>8} {'idle after':>10}")
    rows = sorted(stats.items(), key=lambda kv: (-kv[1][2], -kv[1][1]))
    for name, (count, total, added, gap, idle) in rows[: args.top]:
        print(f"{name[:60]:<60} {count:>6} {total / count * US:>9.2f} {added / count * US:>8.2f} "
              f"{added * US:>10.1f} {100.0 * added / wall if wall else 0:>7.1f} "
              f"{gap / count * US:>8.2f} {idle * US:>10.1f}")


if __name__ == "__main__":
    main()
