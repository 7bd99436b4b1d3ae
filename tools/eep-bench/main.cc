// eep-bench: load generator and benchmarks. Subcommands: replay (JSON-lines requests), serve
// (load with scaling events), eplb (placement algorithms), and the micro-benchmarks moe (one
// MoE layer), decode (one engine's decode throughput) and transfer (weight-transfer bandwidth).
#include <cstdio>
#include <cstring>
#include <string>

#include "eep/bench.h"
#include "eep/alloc.h"
#include "eep/common.h"
#include "eep/eplb.h"

namespace {
const char* kUsage =
    "Usage: eep-bench SUBCOMMAND [OPTIONS]\n"
    "\n"
    "Subcommands:\n"
    "  replay   send JSON-lines requests to a cluster, print one JSON line per result\n"
    "  eplb     expert placement benchmark (time per plan, balancedness, moves)\n"
    "  serve    serving benchmark with scaling and kill events, JSON and SVG timelines\n"
    "  moe      MoE layer throughput per backend: FLOP/s and a memory-bandwidth floor\n"
    "  decode   decode tokens/s of one engine per batch size, against a memory-bandwidth floor\n"
    "  transfer weight-transfer bandwidth between engines vs the library's point-to-point\n"
    "\n"
    "Run 'eep-bench SUBCOMMAND --help' for its options.\n";
}

int main(int argc, char** argv) {
  eep::keep_large_buffers_in_heap();
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return eep::kExitUsage;
  }
  std::string sub = argv[1];
  if (sub == "--help" || sub == "-h") {
    std::fputs(kUsage, stdout);
    return eep::kExitOk;
  }
  if (sub == "--version") {
    std::printf("eep-bench %s\n", eep::kVersion);
    return eep::kExitOk;
  }
  if (sub == "replay") return eep::bench::run_replay(argc - 1, argv + 1);
  if (sub == "eplb") return eep::eplb::run_bench(argc - 1, argv + 1);
  if (sub == "serve") return eep::bench::run_serve(argc - 1, argv + 1);
  if (sub == "moe") return eep::bench::run_moe(argc - 1, argv + 1);
  if (sub == "decode") return eep::bench::run_decode(argc - 1, argv + 1);
  if (sub == "transfer") return eep::bench::run_transfer(argc - 1, argv + 1);
  std::fprintf(stderr, "eep-bench: unknown subcommand '%s'\n%s", sub.c_str(), kUsage);
  return eep::kExitUsage;
}
