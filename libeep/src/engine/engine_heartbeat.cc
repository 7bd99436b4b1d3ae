// Heartbeats: a snapshot published by the main thread between steps, sent by a thread with its
// own socket every EngineOptions::heartbeat; a coordinator that stops answering (or that
// refuses this engine) makes the engine leave.
#include "engine/engine_impl.h"

namespace eep {

void Engine::publish_snapshot() {
  proto::Body hb = {{"type", "heartbeat"},
                    {"engine_id", engine_id_},
                    {"rank", rank_},
                    {"generation", generation_},
                    {"num_waiting", sched_ ? sched_->num_waiting() : 0},
                    {"num_running", sched_ ? sched_->num_running() : 0},
                    {"free_blocks", sched_ ? sched_->allocator().num_free() : 0},
                    {"steps", steps_},
                    {"paused", paused_}};
  if (configured_) hb["load"] = backend_->expert_load();
  std::lock_guard<std::mutex> lock(snap_mu_);
  snapshot_ = std::move(hb);
}

void Engine::heartbeat_loop() {
  zmq::socket_t hb(ctx_, zmq::socket_type::dealer);
  hb.set(zmq::sockopt::linger, 0);
  hb.connect(opts_.coord);
  auto last_answer = Clock::now();
  while (!hb_stop_) {
    proto::Body body;
    {
      std::lock_guard<std::mutex> lock(snap_mu_);
      body = snapshot_;
    }
    proto::send(hb, body);
    // Any reply proves the coordinator alive; an error reply means it no longer knows us.
    auto until = Clock::now() + opts_.heartbeat;
    while (!hb_stop_ && Clock::now() < until) {
      if (auto reply = proto::recv(hb, Ms(50))) {
        last_answer = Clock::now();
        if (reply->contains("dead_generation") && (*reply)["dead_generation"].is_number_integer())
          abort_dead_group((*reply)["dead_generation"].get<int64_t>());
        if (reply->value("status", "") == "error") {
          // The coordinator declared this engine dead and moved on without it: leave.
          log_->error("coordinator refused heartbeat: {}", reply->value("message", ""));
          coord_lost_ = true;
          return;
        }
      }
    }
    if (Clock::now() - last_answer > opts_.coord_timeout) {
      coord_lost_ = true;
      return;
    }
  }
}

void Engine::arm_group_abort() {
  if (group_.get() == armed_group_ && generation_ == armed_generation_) return;
  auto handle = group_ ? group_->abort_handle() : nullptr;
  std::lock_guard<std::mutex> lock(abort_mu_);
  armed_group_ = group_.get();
  armed_abort_ = std::move(handle);
  armed_generation_ = generation_;
}

void Engine::abort_dead_group(int64_t dead) {
  std::lock_guard<std::mutex> lock(abort_mu_);
  if (!armed_abort_ || armed_generation_ > dead) return;
  log_->warn("the coordinator declared group generation {} dead: ending its collectives", dead);
  armed_abort_->abort("the coordinator declared group generation " + std::to_string(dead) +
                      " dead (a member is gone)");
  armed_abort_.reset();
}

}  // namespace eep
