// The coordinator object: one event loop (coord_loop.cc) over engines (coord_engines.cc),
// requests (coord_requests.cc) and the store (coord_store.cc).
#pragma once

#include <deque>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "coord/coord_state.h"
#include "coord/launcher.h"
#include "coord/scale_placement.h"
#include "eep/common.h"
#include "eep/coord.h"
#include "eep/proto.h"

namespace eep {

using Ms = std::chrono::milliseconds;
using proto::Body;

// Printable form of a ZMQ routing id (binary) for logs.
std::string peer_name(const std::string& identity);


class Coordinator {
 public:
  explicit Coordinator(const CoordOptions& opts);
  int run();

 private:
  // Messaging.
  void send_to(const std::string& identity, const Body& body);
  void dispatch(const std::string& identity, const Body& msg);
  // Store.
  void on_store(const std::string& identity, const Body& msg);
  void poll_store();  // answers parked store waits that became answerable or timed out
  // Engines.
  void on_register(const std::string& identity, const Body& msg);
  void on_ready(const std::string& identity, const Body& msg);
  void on_heartbeat(const std::string& identity, const Body& msg);
  void on_outputs(const std::string& identity, const Body& msg);
  void on_engine_gone(const std::string& identity, const std::string& why);
  void form_group(std::vector<std::string> members);
  void check_liveness();
  // Clients.
  void on_submit(const std::string& identity, const Body& msg);
  void on_abort(const std::string& identity, const Body& msg);
  void on_status(const std::string& identity, const Body& msg);
  void on_stats(const std::string& identity, const Body& msg);
  void route_pending();
  void route(RequestInfo& req);
  void finish_request(const std::string& rid, const std::string& reason, ErrorCode code,
                      const std::string& error);
  void client_gone(const std::string& client);
  void wake_group();
  // Scaling (coord_scale.cc).
  void on_scale(const std::string& identity, const Body& msg);
  void on_scale_status(const std::string& identity, const Body& msg);
  void on_leave(const std::string& identity, const Body& msg);
  void start_scale(ScaleOp op, const Body& msg);
  void poll_planning();        // takes a finished background plan; starts prepare when due
  void maybe_begin_prepare();  // prepare once the plan is there and every new engine registered
  void begin_prepare();
  void on_prepared(const std::string& identity, const Body& msg);
  void on_prepare_failed(const std::string& identity, const Body& msg);
  void on_committed(const std::string& identity, const Body& msg);
  void on_left(const std::string& identity, const Body& msg);
  void maybe_finish_commit();
  void enter_phase(const std::string& phase);
  void fail_scale(const std::string& why);
  // Commit-phase failure: true when every old member can go back to the old group.
  bool roll_back_commit(const std::string& why);
  // Expert load per logical expert [layers][experts] recorded on the serving group.
  std::vector<std::vector<int64_t>> logical_load() const;
  void check_scale_deadline();
  Body scale_view(const ScaleOp& op) const;
  // Starts n local engines with devices first_device.. (Boost.Process); returns their pids.
  std::vector<int> spawn_engines(int first_device, int n);
  bool routable(const std::string& identity) const;
  std::optional<RequestLimits> limits() const;
  void shutdown_engines();

  CoordOptions opts_;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_{ctx_, zmq::socket_type::router};
  std::unique_ptr<Launcher> launcher_;
  StoreState store_;
  StoreWaiters waiters_;
  std::map<std::string, EngineInfo> engines_;
  GroupInfo group_;
  // The newest generation that lost a member (-1: none): heartbeat replies carry it, so members
  // blocked in that group's collectives end them instead of waiting out their timeout.
  int64_t dead_generation_ = -1;
  std::map<std::string, RequestInfo> requests_;
  std::deque<std::string> pending_;  // rids waiting for a serving group
  std::map<std::string, std::set<std::string>> client_requests_;
  std::set<std::string> gone_clients_;  // clients found unreachable, handled by the loop
  int64_t next_engine_id_ = 0;
  int64_t next_rid_ = 0;
  int expected_engines_ = 1;
  std::string model_, model_seed_;
  int model_layers_ = 0, model_experts_ = 0;
  bool stopping_ = false;
  std::optional<ScaleOp> op_;                 // the operation in progress, if any
  std::map<std::string, ScaleOp> past_ops_;   // finished operations by id (idempotent retries)
  int64_t next_op_ = 0;
  // The target placement of op planning_op_ being computed off the event loop (plan_scale).
  std::future<ScalePlacement> planning_;
  std::string planning_op_;
  Clock::time_point started_ = Clock::now();
};

}  // namespace eep
