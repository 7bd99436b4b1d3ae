// eep-engine: one engine core (one DP rank) on its device. It registers with the coordinator,
// receives its rank and expert placement, forms the collective group with its peers, and then
// steps in lockstep with them, serving the requests the coordinator routes to it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace eep {

inline constexpr int kCpuDefaultKvBlocks = 512;

struct EngineOptions {
  std::string coord = "tcp://127.0.0.1:5555";
  std::string model;              // preset:NAME or checkpoint directory
  uint64_t seed = 0;              // synthetic-weight seed (presets)
  std::string backend = "cpu";    // cpu | cuda
  int device = 0;
  int num_kv_blocks = 0;           // 0: cpu kCpuDefaultKvBlocks; cuda from the GPU's memory
  double gpu_memory_fraction = 0.9;  // cuda: share of the GPU this engine may use
  int min_ranks = 1;               // cuda: KV sized so the experts of this size still fit
  int block_size = 16;
  int max_num_seqs = 64;
  int max_tokens_per_step = 512;
  int max_model_len = 0;          // 0: the model's max_position_embeddings
  bool join = false;               // join a serving cluster: the coordinator folds this engine in
  std::chrono::milliseconds leave_timeout{30000};  // SIGTERM: hand requests over within this
  std::string comm_host = "127.0.0.1";  // address peers reach this engine's collectives on
  // The serving group's library: "gloo" (TCP through comm_host; host buffers) or "nccl" (cuda
  // backend, one engine per GPU: the MoE exchange on device buffers, no host staging). Weight
  // transfers of a transition stay on a Gloo group (they move host buffers).
  std::string data_comm = "gloo";
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds coord_timeout{10000};      // coordinator silent this long: exit 1
  std::chrono::milliseconds collective_timeout{30000};
  // Fault injection for tests: the prepare phase of a transition waits this long first, so a
  // test can kill or stop an engine mid-prepare deterministically.
  std::chrono::milliseconds test_prepare_delay{0};
};

// Runs the engine until the coordinator says shutdown (returns 0), a signal arrives (0), or a
// fatal error (1, logged).
int run_engine(const EngineOptions& opts);

}  // namespace eep
