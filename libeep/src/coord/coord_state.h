// The coordinator's bookkeeping: engines, the serving group, requests and clients.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eep/elastic.h"
#include "eep/placement.h"
#include "eep/request.h"
#include "eep/store.h"

namespace eep {

// kLeft: removed by a scale-down, exited on its own.
enum class EngineState { kRegistered, kConfiguring, kReady, kDead, kLeft };
const char* engine_state_name(EngineState s);
inline bool is_gone(EngineState s) { return s == EngineState::kDead || s == EngineState::kLeft; }

struct EngineInfo {
  std::string identity;  // ZMQ routing id of its main socket
  int64_t id = 0;        // registration order
  int pid = 0;
  int rank = -1;         // rank in the current group, -1 when not a member
  EngineState state = EngineState::kRegistered;
  std::string backend;
  int device = 0;
  RequestLimits limits;
  int64_t kv_bytes = 0;
  int num_kv_blocks = 0;
  int block_size = 0;
  Clock::time_point last_seen;
  int num_assigned = 0;          // requests routed here and not finished (waiting + running)
  int reported_waiting = 0, reported_running = 0, free_blocks = 0;
  int64_t steps = 0;
  bool paused = true;
  std::vector<std::vector<int64_t>> load;  // cumulative tokens per physical slot, from heartbeats
};

struct RequestInfo {
  std::string rid;          // coordinator-wide id
  std::string client;       // client identity
  std::string client_id;    // the id the client chose
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;  // streamed so far
  SamplingParams params;
  std::string engine;       // identity of the engine serving it ("" while queued)
  Clock::time_point arrival;
  int num_retries = 0;
};

struct GroupInfo {
  int64_t generation = 0;
  std::vector<std::string> members;  // engine identities by rank
  Placement placement;
  int64_t wave = 0;
  bool wave_running = false;
  bool serving = false;  // every member is ready in this generation
};

}  // namespace eep

namespace eep {

// One scaling (or rebalancing) operation, from the request to the new size serving.
struct ScaleOp {
  std::string id;                    // the client's --id, or generated
  int from = 0, to = 0;
  std::string phase;                 // launching, preparing, committing, done, failed
  std::string error;
  std::vector<std::pair<std::string, double>> phase_ms;  // finished phases and their duration
  Clock::time_point started, phase_started, deadline;
  int expected_new = 0;              // engines still to register for a scale-up
  std::vector<std::string> new_engines;   // identities of engines joining
  std::vector<std::string> removing;      // identities of engines leaving
  std::vector<int> spawned_pids;
  bool spawn = true;                 // false: the new engines join on their own (--join)
  Transition t;
  bool planned = false;              // t.new_placement is set (plan_scale may run in background)
  nlohmann::json placement_info;     // how the target was chosen (policy, balancedness, ...)
  std::set<int64_t> prepared, committed, left;
  Clock::time_point all_switched{};  // every engine reported committed/left (--test-commit-hold-ms)
  bool rolled_back = false;          // a commit-phase failure went back to the old group
  bool old_group_failed = false;     // an old member reported its old group broken while committing
  bool finished() const { return phase == "done" || phase == "failed"; }
};

}  // namespace eep
