// The engine object: event loop and steps (engine.cc), heartbeats (engine_heartbeat.cc) and
// elastic transitions (engine_elastic.cc).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "eep/backend.h"
#include "eep/comm.h"
#include "eep/common.h"
#include "eep/elastic.h"
#include "eep/engine.h"
#include "eep/model.h"
#include "eep/placement.h"
#include "eep/proto.h"
#include "eep/scheduler.h"
#include "eep/store.h"

namespace eep {

using Ms = std::chrono::milliseconds;

// Engine-side state of one elastic transition (design.md §4): prepared in the background while
// the old group serves, committed at one step all old members agree on.
struct PendingTransition {
  Transition t;
  int64_t wave = 0;
  int new_rank = -1;            // -1: this engine is removed by the transition
  bool is_new = false;          // not a member of the old group
  std::thread worker;           // builds groups and moves weights
  std::atomic<bool> done{false};
  std::atomic<bool> cancelled{false};  // rolled back: the worker stops early and discards
  std::string error;            // set by the worker before done, empty on success
  std::unique_ptr<Group> standby;  // the new group, built by the worker
  bool reported = false;        // "prepared" sent
  bool commit_requested = false;
  bool rollback_requested = false;  // rolled back before this engine's commit step: undo it then
  Clock::time_point started = Clock::now();
  // Kept from the switch until "finish" so a commit-phase failure can go back (rollback): the old
  // group, rank, generation and wave (the backend keeps the old expert slots: restore_previous).
  std::unique_ptr<Group> old_group;
  int old_rank = -1;
  int64_t old_generation = -1, old_wave = 0;
  Clock::time_point linger_deadline{};  // a removed engine exits when no "finish" came by then
};

class Engine {
 public:
  explicit Engine(const EngineOptions& opts) : opts_(opts), log_(logger("engine")) {}
  ~Engine();
  int run();

 private:
  void send(proto::Body body) { proto::send(sock_, body); }
  void handle(const proto::Body& msg);
  void on_register_reply(const proto::Body& msg);
  void configure(const proto::Body& msg);
  void add_request(const proto::Body& msg);
  void step();
  void fail_group(const std::string& why);
  // The group the engine steps in (flags all-reduce, MoE exchange): Gloo or NCCL per
  // --data-comm. `name` is unique per membership (the store keys its rendezvous by it).
  std::unique_ptr<Group> make_serving_group(const std::string& name, int rank, int size);
  void send_register();
  // True when a SIGTERM should leave gracefully (a member of a group of two or more).
  bool graceful_leave();
  // Heartbeats.
  void publish_snapshot();
  void heartbeat_loop();
  void arm_group_abort();                  // main thread, before a step's collectives
  void abort_dead_group(int64_t dead);     // heartbeat thread
  // Elastic transitions.
  void on_prepare(const proto::Body& msg);
  void prepare_worker(PendingTransition* pt);
  void poll_transition();
  void on_commit(const proto::Body& msg);
  void switch_to_new_group();
  void abort_transition(const std::string& why);  // before "finish": back to the old group
  void roll_back_commit(const std::string& why);   // after the switch: restore the old group
  void on_finish(const proto::Body& msg);          // the point of no return: drop the old group
  void supersede_transitions();                    // a new configuration replaces everything
  void reap_abandoned();  // joins rolled-back workers that have finished

  EngineOptions opts_;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_{ctx_, zmq::socket_type::dealer};
  std::unique_ptr<WeightSource> weights_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Scheduler> sched_;
  std::unique_ptr<StoreClient> store_;
  std::unique_ptr<Group> group_;
  std::unique_ptr<PendingTransition> transition_;
  std::unique_ptr<PendingTransition> committed_;  // switched, old state kept until "finish"
  std::vector<std::unique_ptr<PendingTransition>> abandoned_;  // rolled back, worker still running
  // Finished transitions whose old group is torn down on the worker thread: destroying an NCCL
  // communicator (finalize, destroy) takes 0.3-0.6 s, which on the serving thread was a pause
  // that long in serving. Joined when done (reap_abandoned) or at exit.
  std::vector<std::unique_ptr<PendingTransition>> retiring_;
  Placement placement_;
  int rank_ = -1;
  int64_t generation_ = -1;
  int64_t wave_ = 0;
  bool paused_ = true;      // between waves: no steps until work or a wake
  bool configured_ = false;
  bool dense_loaded_ = false;
  bool shutdown_ = false;
  bool left_ = false;       // removed by a transition: exit 0
  // SIGTERM while serving in a group: ask the coordinator to scale this engine out (requests are
  // handed over), retrying while another operation runs, until leave_timeout.
  bool leave_sent_ = false;
  Clock::time_point leave_deadline_{}, leave_retry_at_{};
  Clock::time_point register_retry_at_{};
  int64_t steps_ = 0;
  int64_t engine_id_ = -1;

  // Heartbeats come from their own thread and socket, so a long step or a blocking group
  // formation never looks like a dead engine. The main thread publishes what they carry.
  std::mutex snap_mu_;
  proto::Body snapshot_;
  std::atomic<bool> coord_lost_{false};
  std::atomic<bool> hb_stop_{false};
  std::thread hb_thread_;
  // The serving group's abort handle, for the heartbeat thread: a heartbeat reply naming a dead
  // generation at or above the armed one ends the group's blocked collectives (a killed peer
  // that the transport does not report would otherwise hold this engine for the collective
  // timeout after the coordinator has re-formed the group). Set by the main thread.
  std::mutex abort_mu_;
  std::shared_ptr<GroupAbort> armed_abort_;
  const Group* armed_group_ = nullptr;
  int64_t armed_generation_ = -1;
};

}  // namespace eep
