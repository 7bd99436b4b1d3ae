// eep-bench subcommands implemented in libeep. Each takes the arguments after the subcommand
// name and returns an exit code (0 ok, 1 runtime failure, 2 usage or bad input).
#pragma once

namespace eep::bench {

// eep-bench replay [--coord ADDR] [FILE|-]: JSON-lines requests in, one JSON line per finished
// request out.
int run_replay(int argc, char** argv);

// eep-bench serve: load (Poisson or closed loop) with scaling/kill events; figures and plot.
int run_serve(int argc, char** argv);

// eep-bench moe: MoE layer throughput per backend (Backend::benchmark_moe) with FLOP/s and a
// memory-bandwidth floor.
int run_moe(int argc, char** argv);

// eep-bench decode: decode tokens/s of one engine through Backend::forward, against a
// memory-bandwidth floor.
int run_decode(int argc, char** argv);

// eep-bench transfer: the engine's weight-transfer bandwidth against the collective library's
// point-to-point figure in the same run.
int run_transfer(int argc, char** argv);

}  // namespace eep::bench
