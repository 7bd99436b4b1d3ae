// eep-coord: the single control point of a deployment (design.md §2): rendezvous store, engine
// registry, request routing, DP waves, and (later) scaling orchestration.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace eep {

struct CoordOptions {
  std::string bind = "tcp://127.0.0.1:5555";
  int spawn = 0;              // engines to start locally (Boost.Process)
  int engines = 0;            // engines to wait for before serving (default: spawn, else 1)
  std::string model;          // for spawned engines
  std::string backend = "cpu";
  uint64_t seed = 0;
  std::string engine_bin;     // eep-engine to spawn; default: next to eep-coord, then PATH
  std::vector<std::string> engine_args;  // extra flags for spawned engines
  // Launch template for new engines instead of local eep-engine processes, run by /bin/sh -c.
  // Placeholders {coord} {model} {seed} {backend} {device} {index} are substituted; the same
  // values are in the environment as EEP_COORD, EEP_MODEL, EEP_SEED, EEP_BACKEND, EEP_DEVICE.
  std::string launch_cmd;
  int redundant = 0;          // redundant expert slots beyond num_experts
  std::chrono::milliseconds heartbeat_timeout{3000};  // engine silent this long: dead
  std::chrono::milliseconds queue_timeout{60000};     // request waits this long for an engine
  std::chrono::milliseconds start_timeout{120000};    // engines must all register/ready in this
  std::chrono::milliseconds scale_timeout{120000};    // a scale operation must finish in this
  int max_engines = 64;       // largest size a scale-up may ask for
  // Tests only: hold a scale operation in phase committing this long after every engine has
  // switched, before the old configuration is released (the window a commit-phase rollback covers).
  std::chrono::milliseconds test_commit_hold{0};
  std::string argv0;          // to find eep-engine next to eep-coord
};

// Runs until SIGINT/SIGTERM or a "shutdown" request; spawned engines are stopped before it
// returns. Returns 0; 1 when it cannot start (address in use, engines never became ready); 2 for
// bad options (no eep-engine binary to spawn).
int run_coord(const CoordOptions& opts);

}  // namespace eep
