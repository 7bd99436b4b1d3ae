#!/usr/bin/env python3
"""torch._grouped_mm on the same groups as grouped_gemm_bench (reads DIR/counts_<tokens>.txt).

Same shapes (Qwen3-30B-A3B: hidden 2048, moe_intermediate 768, 128 experts), bf16, weights in
Linear layout [E][n][k] passed transposed (a [E][k][n] view), group ends as int32 offsets; cuda
event timing per call, 5 warm-ups, median of 30; before each timed call a 128 MB read evicts L2
and torch.cuda._sleep (~100 us) keeps the GPU busy while the host enqueues the call, as
grouped_gemm_bench does. Checks one result against per-expert matmuls.
"""
import statistics
import sys

import torch

HIDDEN, INTER, EXPERTS = 2048, 768, 128
WARMUP, REPEATS = 5, 30


def main() -> int:
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return 77
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    g = torch.Generator(device=dev).manual_seed(0)
    w_gu = (torch.rand(EXPERTS, 2 * INTER, HIDDEN, device=dev, generator=g) - 0.5).mul_(0.1).bfloat16()
    w_down = (torch.rand(EXPERTS, HIDDEN, INTER, device=dev, generator=g) - 0.5).mul_(0.1).bfloat16()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    flush = torch.ones(128 << 20, dtype=torch.uint8, device=dev)
    spin = 200000  # cycles: ~100 us at the H100's ~1.98 GHz
    for tokens in (1, 8, 32, 256, 2048, 8192):
        counts = [int(v) for v in open(f"{d}/counts_{tokens}.txt").read().split()]
        assert len(counts) == EXPERTS
        rows = sum(counts)
        used = sum(1 for c in counts if c > 0)
        offs = torch.tensor(counts, device=dev, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        for name, w, n, k in (("gate_up", w_gu, 2 * INTER, HIDDEN), ("down", w_down, HIDDEN, INTER)):
            x = (torch.rand(rows, k, device=dev, generator=g) - 0.5).mul_(2.0).bfloat16()
            wt = w.transpose(-2, -1)  # [E][k][n]
            call = lambda: torch._grouped_mm(x, wt, offs=offs)
            y = call()
            # Spot check against plain per-expert matmuls.
            ref = torch.cat([x[a:b].float() @ w[e].float().t()
                             for e, (a, b) in enumerate(zip([0] + offs.tolist()[:-1], offs.tolist()))])
            err = ((y.float() - ref).norm() / ref.norm()).item()
            for _ in range(WARMUP):
                call()
            ms = []
            for i in range(REPEATS):
                flush.sum()  # reads 128 MB: L2 holds clean lines of other data
                torch.cuda._sleep(spin)
                start.record()
                call()
                stop.record()
                stop.synchronize()
                ms.append(start.elapsed_time(stop))
            med = statistics.median(sorted(ms))
            flops = 2.0 * rows * n * k
            wbytes = 2.0 * used * n * k
            nbytes = wbytes + 2.0 * (rows * k + rows * n)
            print(f"RESULT impl=torch_grouped_mm tokens={tokens} gemm={name} rows={rows} used={used} n={n} k={k} "
                  f"ms={med:.5f} tflops={flops / (med * 1e-3) / 1e12:.2f} "
                  f"min_gbps={nbytes / (med * 1e-3) / 1e9:.0f} w_gbps={wbytes / (med * 1e-3) / 1e9:.0f} "
                  f"spread_ms={min(ms):.5f}..{max(ms):.5f} "
                  f"rel_err={err:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
