// Engine registry and the serving group: registration, group formation, readiness, heartbeats,
// death and re-formation.
#include <algorithm>

#include "coord/coordinator.h"

namespace eep {

void Coordinator::on_register(const std::string& identity, const Body& msg) {
  EngineInfo e;
  e.identity = identity;
  e.pid = static_cast<int>(proto::get_int(msg, "pid"));
  e.backend = proto::get_string(msg, "backend");
  e.device = static_cast<int>(proto::get_int(msg, "device"));
  e.limits.vocab_size = static_cast<int>(proto::get_int(msg, "vocab_size"));
  e.limits.max_model_len = static_cast<int>(proto::get_int(msg, "max_model_len"));
  e.num_kv_blocks = static_cast<int>(proto::get_int(msg, "num_kv_blocks"));
  e.block_size = static_cast<int>(proto::get_int(msg, "block_size"));
  e.limits.kv_tokens = e.num_kv_blocks * e.block_size;
  e.kv_bytes = msg.value("kv_bytes", int64_t{0});
  e.last_seen = Clock::now();
  std::string model = proto::get_string(msg, "model");
  std::string seed = std::to_string(proto::get_int(msg, "seed"));
  // Every engine of a deployment must serve the same weights.
  if (model_.empty()) {
    model_ = model;
    model_seed_ = seed;
    model_layers_ = static_cast<int>(proto::get_int(msg, "num_layers"));
    model_experts_ = static_cast<int>(proto::get_int(msg, "num_experts"));
  } else if (model != model_ || seed != model_seed_) {
    throw Error(ErrorCode::kInvalidArgument, "engine serves model " + model + " seed " + seed +
                                                 ", the deployment serves " + model_ + " seed " +
                                                 model_seed_);
  }
  if (group_.generation > 0 && group_.serving && !op_ && msg.value("join", false)) {
    if (static_cast<int>(group_.members.size()) + 1 > opts_.max_engines)
      throw Error(ErrorCode::kInvalidArgument,
                  "the cluster is at --max-engines " + std::to_string(opts_.max_engines));
    // An engine started by the operator (eep-engine --join): fold it in with a scale-up by one.
    ScaleOp op;
    op.id = "join-" + std::to_string(next_engine_id_);
    op.from = static_cast<int>(group_.members.size());
    op.to = op.from + 1;
    op.spawn = false;
    start_scale(std::move(op), Body::object());
  }
  const bool joining = op_ && op_->phase == "launching" && op_->expected_new > 0;
  if (!joining && (group_.generation > 0 || engines_.size() >= static_cast<size_t>(expected_engines_))) {
    // Folding a late engine into a running group is a scaling operation (eep-scale up).
    throw Error(ErrorCode::kConflict,
                op_ ? "scale operation '" + op_->id + "' is in progress; retry when it is done"
                    : "the cluster already has its engines; start this engine with --join or "
                      "run 'eep-scale up' first");
  }
  e.id = next_engine_id_++;  // only engines that are accepted get an id
  Body reply = {{"engine_id", e.id}};
  if (joining) {
    // Weights come from peers; the KV cache is the smallest the serving engines have, so a
    // request fits wherever it is routed (no profiling on the joining engine).
    int min_blocks = e.num_kv_blocks;
    for (const auto& m : group_.members) min_blocks = std::min(min_blocks, engines_.at(m).num_kv_blocks);
    e.num_kv_blocks = min_blocks;
    e.limits.kv_tokens = min_blocks * e.block_size;
    reply["load_weights"] = false;
    reply["num_kv_blocks"] = min_blocks;
  }
  log_->info("engine {} registered (pid {}, {} backend, {} KV blocks){}", e.id, e.pid, e.backend,
             e.num_kv_blocks, joining ? ", joining" : "");
  engines_[identity] = e;
  send_to(identity, proto::ok_reply(msg, reply));
  if (joining) {
    op_->new_engines.push_back(identity);
    --op_->expected_new;
    maybe_begin_prepare();
    return;
  }
  if (engines_.size() == static_cast<size_t>(expected_engines_)) {
    std::vector<std::string> members;
    for (auto& [id, info] : engines_) members.push_back(id);
    std::sort(members.begin(), members.end(), [&](const std::string& a, const std::string& b) {
      return engines_[a].id < engines_[b].id;
    });
    form_group(members);
  }
}

void Coordinator::form_group(std::vector<std::string> members) {
  group_.generation += 1;
  group_.members = std::move(members);
  group_.serving = false;
  group_.wave_running = false;
  const int size = static_cast<int>(group_.members.size());
  const int num_layers = model_layers_;
  const int num_experts = model_experts_;
  int num_slots = num_experts + opts_.redundant;
  // Round slots up to a multiple of the group size so every rank holds the same number.
  num_slots = (num_slots + size - 1) / size * size;
  group_.placement = Placement::round_robin(num_layers, num_experts, num_slots, size);
  log_->info("forming group generation {} with {} engine(s), {} slots", group_.generation, size,
             num_slots);
  store_.erase_prefix("eep/g" + std::to_string(group_.generation - 1) + "/");
  for (int r = 0; r < size; ++r) {
    EngineInfo& e = engines_.at(group_.members[r]);
    e.rank = r;
    e.state = EngineState::kConfiguring;
    send_to(e.identity, {{"type", "configure"},
                         {"generation", group_.generation},
                         {"rank", r},
                         {"size", size},
                         {"wave", group_.wave},
                         {"placement", group_.placement.to_json()}});
  }
}

void Coordinator::on_ready(const std::string& identity, const Body& msg) {
  auto it = engines_.find(identity);
  if (it == engines_.end()) throw Error(ErrorCode::kNotFound, "ready from an unregistered engine");
  if (proto::get_int(msg, "generation") != group_.generation) return;  // stale
  it->second.state = EngineState::kReady;
  for (const auto& m : group_.members)
    if (engines_.at(m).state != EngineState::kReady) return;
  group_.serving = true;
  log_->info("group generation {} serving with {} engine(s)", group_.generation,
             group_.members.size());
  route_pending();
}

void Coordinator::on_heartbeat(const std::string& identity, const Body& msg) {
  // Heartbeats come from the engine's own heartbeat socket: find the engine by id.
  int64_t engine_id = proto::get_int(msg, "engine_id");
  auto it = std::find_if(engines_.begin(), engines_.end(),
                         [&](const auto& kv) { return kv.second.id == engine_id; });
  if (it == engines_.end() || is_gone(it->second.state)) {
    send_to(identity, proto::error_reply(msg, ErrorCode::kNotFound, "unknown engine"));
    return;
  }
  EngineInfo& e = it->second;
  e.last_seen = Clock::now();
  e.reported_waiting = static_cast<int>(msg.value("num_waiting", 0));
  e.reported_running = static_cast<int>(msg.value("num_running", 0));
  e.free_blocks = static_cast<int>(msg.value("free_blocks", 0));
  e.steps = msg.value("steps", int64_t{0});
  e.paused = msg.value("paused", true);
  if (msg.contains("load") && msg.value("generation", int64_t{-1}) == group_.generation)
    e.load = msg["load"].get<std::vector<std::vector<int64_t>>>();
  send_to(identity, dead_generation_ >= 0
                        ? proto::ok_reply(msg, {{"dead_generation", dead_generation_}})
                        : proto::ok_reply(msg));
}

void Coordinator::check_liveness() {
  auto now = Clock::now();
  std::vector<std::string> dead;
  for (auto& [identity, e] : engines_)
    if (!is_gone(e.state) && now - e.last_seen > opts_.heartbeat_timeout)
      dead.push_back(identity);
  if (launcher_) {
    for (int pid : launcher_->reap_exited()) {
      for (auto& [identity, e] : engines_)
        if (e.pid == pid && !is_gone(e.state)) dead.push_back(identity);
      // A new engine that dies before it even registers fails its scale-up.
      if (op_ && op_->phase == "launching" &&
          std::find(op_->spawned_pids.begin(), op_->spawned_pids.end(), pid) !=
              op_->spawned_pids.end())
        fail_scale("new engine pid " + std::to_string(pid) + " exited before it registered");
    }
  }
  for (const auto& identity : dead) on_engine_gone(identity, "no heartbeat or process exited");
}

void Coordinator::on_engine_gone(const std::string& identity, const std::string& why) {
  auto it = engines_.find(identity);
  if (it == engines_.end() || is_gone(it->second.state)) return;
  EngineInfo& e = it->second;
  log_->warn("engine {} (rank {}, pid {}) is gone: {}", e.id, e.rank, e.pid, why);
  const bool was_member =
      std::find(group_.members.begin(), group_.members.end(), identity) != group_.members.end();
  e.state = EngineState::kDead;
  e.rank = -1;
  const int64_t generation = group_.generation;
  if (op_ && op_->phase == "committing" && op_->left.count(e.id)) {
    // A removed engine that already switched and handed its requests back: the new group does
    // not need it (it was leaving anyway); only a rollback would, and that is no longer possible.
    log_->warn("removed engine {} died after it switched; the operation goes on", e.id);
    op_->old_group_failed = true;
    return;
  }
  if (was_member) dead_generation_ = std::max(dead_generation_, generation);
  if (op_) {
    const auto& ne = op_->new_engines;
    if (was_member || std::find(ne.begin(), ne.end(), identity) != ne.end())
      fail_scale("engine " + std::to_string(e.id) + " died: " + why);
  }
  // Its requests continue elsewhere with the tokens generated so far (the client sees one
  // stream); they wait in the queue until the re-formed group serves.
  for (auto& [rid, r] : requests_) {
    if (r.engine != identity) continue;
    r.engine.clear();
    r.num_retries += 1;
    pending_.push_front(rid);
  }
  // A failed commit re-forms the group itself (fail_scale).
  if (!was_member || group_.generation != generation) return;
  std::vector<std::string> survivors;
  for (const auto& m : group_.members)
    if (!is_gone(engines_.at(m).state)) survivors.push_back(m);
  if (survivors.empty()) {
    group_.members.clear();
    group_.serving = false;
    log_->error("no engine left");
    std::vector<std::string> open(pending_.begin(), pending_.end());
    for (const auto& rid : open)
      finish_request(rid, "error", ErrorCode::kUnavailable, "no engine left to serve the request");
    return;
  }
  form_group(survivors);
}

}  // namespace eep
