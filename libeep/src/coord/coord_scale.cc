// Scaling orchestration (design.md §4): validate, launch or await new engines, prepare (weights
// move peer to peer while the old group serves), commit (all engines switch after the same step),
// finish (removed engines hand their requests back and exit). Any failure before commit rolls
// back: the old group never stopped serving.
#include <algorithm>

#include "coord/coordinator.h"

namespace eep {

namespace {
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
}  // namespace

bool Coordinator::routable(const std::string& identity) const {
  // Engines on their way out take no new requests from the moment the operation starts.
  return !(op_ && !op_->finished() &&
           std::find(op_->removing.begin(), op_->removing.end(), identity) != op_->removing.end());
}

Body Coordinator::scale_view(const ScaleOp& op) const {
  Body phases = Body::array();
  for (const auto& [name, ms] : op.phase_ms) phases.push_back({{"phase", name}, {"ms", ms}});
  Body v = {{"id", op.id}, {"from", op.from}, {"to", op.to}, {"phase", op.phase},
            {"phases", phases}, {"done", op.finished()}, {"elapsed_ms", op.finished()
                ? std::chrono::duration<double, std::milli>(op.phase_started - op.started).count()
                : ms_since(op.started)}};
  if (!op.error.empty()) v["error"] = op.error;
  return v;
}

void Coordinator::enter_phase(const std::string& phase) {
  auto now = Clock::now();
  if (!op_->phase.empty())
    op_->phase_ms.emplace_back(op_->phase,
                               std::chrono::duration<double, std::milli>(now - op_->phase_started).count());
  op_->phase = phase;
  op_->phase_started = now;
  log_->info("scale {}: {} ({} -> {})", op_->id, phase, op_->from, op_->to);
  if (op_->finished()) {
    past_ops_[op_->id] = *op_;
    op_.reset();
  }
}

void Coordinator::on_scale(const std::string& identity, const Body& msg) {
  std::string id = msg.contains("id") ? proto::get_string(msg, "id") : "";
  // Idempotent retries: the same id answers with the same operation, never scales twice.
  if (!id.empty()) {
    if (op_ && op_->id == id) return send_to(identity, proto::ok_reply(msg, scale_view(*op_)));
    auto past = past_ops_.find(id);
    if (past != past_ops_.end()) return send_to(identity, proto::ok_reply(msg, scale_view(past->second)));
  }
  if (op_)
    throw Error(ErrorCode::kConflict, "scale operation '" + op_->id + "' (" +
                                          std::to_string(op_->from) + " -> " +
                                          std::to_string(op_->to) + ") is in progress");
  const int size = static_cast<int>(group_.members.size());
  int given = (msg.contains("to") ? 1 : 0) + (msg.contains("up") ? 1 : 0) +
              (msg.contains("down") ? 1 : 0) + (msg.contains("placement") ? 1 : 0);
  if (given != 1)
    throw Error(ErrorCode::kInvalidArgument, "give exactly one of to, up, down, placement");
  ScaleOp op;
  op.id = id.empty() ? "op" + std::to_string(next_op_++) : id;
  op.from = size;
  if (msg.contains("to")) op.to = static_cast<int>(proto::get_int(msg, "to"));
  if (msg.contains("up")) {
    int64_t k = proto::get_int(msg, "up");
    if (k < 1) throw Error(ErrorCode::kInvalidArgument, "up: must be at least 1, got " + std::to_string(k));
    op.to = size + static_cast<int>(k);
  }
  if (msg.contains("down")) {
    int64_t k = proto::get_int(msg, "down");
    if (k < 1) throw Error(ErrorCode::kInvalidArgument, "down: must be at least 1, got " + std::to_string(k));
    op.to = size - static_cast<int>(k);
  }
  if (msg.contains("placement")) op.to = size;
  if (op.to < 1)
    throw Error(ErrorCode::kInvalidArgument, "the new size must be at least 1, got " + std::to_string(op.to));
  if (op.to > opts_.max_engines)
    throw Error(ErrorCode::kInvalidArgument, "the new size " + std::to_string(op.to) +
                                                 " is larger than the launcher can provide (--max-engines " +
                                                 std::to_string(opts_.max_engines) + ")");
  // Bad values are refused first (exit 2 in eep-scale); then whether scaling can happen now.
  if (!group_.serving || group_.generation == 0)
    throw Error(ErrorCode::kUnavailable, "the cluster is not serving; cannot scale now");
  // Which ranks leave: --ranks, else the highest.
  std::vector<int> leaving;
  if (msg.contains("ranks")) {
    for (int64_t r : proto::get_int_array(msg, "ranks")) {
      if (r < 0 || r >= size)
        throw Error(ErrorCode::kInvalidArgument, "ranks: rank " + std::to_string(r) +
                                                     " does not exist (size " + std::to_string(size) + ")");
      if (std::find(leaving.begin(), leaving.end(), r) != leaving.end())
        throw Error(ErrorCode::kInvalidArgument, "ranks: rank " + std::to_string(r) + " given twice");
      leaving.push_back(static_cast<int>(r));
    }
    if (static_cast<int>(leaving.size()) != size - op.to)
      throw Error(ErrorCode::kInvalidArgument, "ranks: " + std::to_string(leaving.size()) +
                                                   " rank(s) given for a change of " +
                                                   std::to_string(size) + " -> " + std::to_string(op.to));
  } else {
    for (int r = size - 1; r >= op.to; --r) leaving.push_back(r);
  }
  for (int r : leaving) op.removing.push_back(group_.members[r]);
  const std::string op_id = op.id;
  start_scale(std::move(op), msg);
  send_to(identity, proto::ok_reply(msg, scale_view(op_ ? *op_ : past_ops_.at(op_id))));
}

void Coordinator::on_leave(const std::string& identity, const Body& msg) {
  // An engine stopped with SIGTERM asks to be scaled out: a scale-down of its rank.
  int64_t engine_id = proto::get_int(msg, "engine_id");
  auto it = std::find_if(engines_.begin(), engines_.end(),
                         [&](const auto& kv) { return kv.second.id == engine_id; });
  if (it == engines_.end() || it->second.rank < 0)
    throw Error(ErrorCode::kNotFound, "engine " + std::to_string(engine_id) + " is not a member");
  Body req = {{"type", "leave"},
              {"id", "leave-" + std::to_string(engine_id)},
              {"down", 1},
              {"ranks", {it->second.rank}}};
  if (msg.contains("seq")) req["seq"] = msg["seq"];
  on_scale(identity, req);
}

void Coordinator::on_scale_status(const std::string& identity, const Body& msg) {
  std::string id = proto::get_string(msg, "id");
  if (op_ && op_->id == id) return send_to(identity, proto::ok_reply(msg, scale_view(*op_)));
  auto past = past_ops_.find(id);
  if (past == past_ops_.end()) throw Error(ErrorCode::kNotFound, "no scale operation '" + id + "'");
  send_to(identity, proto::ok_reply(msg, scale_view(past->second)));
}

void Coordinator::start_scale(ScaleOp op, const Body& msg) {
  const int size = static_cast<int>(group_.members.size());
  // The target placement. A plan from eep-eplb (apply) must fit the cluster before anything moves.
  Placement target;
  if (msg.contains("placement")) {
    target = Placement::from_json(msg["placement"], model_experts_);
    if (target.num_layers != model_layers_ || target.num_ranks != size)
      throw Error(ErrorCode::kInvalidArgument,
                  "placement: the plan is for " + std::to_string(target.num_ranks) + " GPUs and " +
                      std::to_string(target.num_layers) + " layers; the cluster has " +
                      std::to_string(size) + " engines and " + std::to_string(model_layers_) + " layers");
  } else {
    // Remaining engines keep their ranks' experts where they fit; new engines take the rest.
    int num_slots = (model_experts_ + opts_.redundant + op.to - 1) / op.to * op.to;
    std::vector<int> keep;
    for (int r = 0; r < size; ++r)
      if (std::find(op.removing.begin(), op.removing.end(), group_.members[r]) == op.removing.end())
        keep.push_back(r);
    while (static_cast<int>(keep.size()) < op.to) keep.push_back(-1);
    target = Placement::resize(group_.placement, keep, num_slots);
  }
  op.started = op.phase_started = Clock::now();
  op.deadline = op.started + opts_.scale_timeout;
  op.t.generation = group_.generation + 1;
  for (const auto& m : group_.members) op.t.old_members.push_back(engines_.at(m).id);
  op.t.old_placement = group_.placement;
  op.t.new_placement = target;
  op_ = std::move(op);
  if (op_->to == op_->from && !msg.contains("placement")) {
    enter_phase("done");
    return;
  }
  if (op_->to > op_->from) {
    op_->expected_new = op_->to - op_->from;
    enter_phase("launching");
    if (launcher_ && op_->spawn) op_->spawned_pids = spawn_engines(op_->from, op_->expected_new);
    // Without a launcher, engines started by the operator (eep-engine) join on their own.
    return;
  }
  begin_prepare();
}

void Coordinator::begin_prepare() {
  // New membership: remaining old members in old rank order, then the new engines.
  for (const auto& m : group_.members)
    if (std::find(op_->removing.begin(), op_->removing.end(), m) == op_->removing.end())
      op_->t.new_members.push_back(engines_.at(m).id);
  for (const auto& m : op_->new_engines) op_->t.new_members.push_back(engines_.at(m).id);
  enter_phase("preparing");
  Body prepare = {{"type", "prepare"},
                  {"generation", op_->t.generation},
                  {"old_members", op_->t.old_members},
                  {"new_members", op_->t.new_members},
                  {"old_placement", op_->t.old_placement.to_json()},
                  {"new_placement", op_->t.new_placement.to_json()},
                  {"wave", 0}};
  store_.erase_prefix("eep/g" + std::to_string(op_->t.generation) + "/");
  for (const auto& m : group_.members) send_to(m, prepare);
  for (const auto& m : op_->new_engines) send_to(m, prepare);
}

void Coordinator::on_prepared(const std::string& identity, const Body& msg) {
  if (!op_ || op_->phase != "preparing" || proto::get_int(msg, "generation") != op_->t.generation)
    return;
  op_->prepared.insert(proto::get_int(msg, "engine_id"));
  if (op_->prepared.size() < op_->t.union_members().size()) return;
  enter_phase("committing");
  Body commit = {{"type", "commit"}, {"generation", op_->t.generation}};
  for (const auto& m : group_.members) send_to(m, commit);
  for (const auto& m : op_->new_engines) send_to(m, commit);
}

void Coordinator::on_prepare_failed(const std::string& identity, const Body& msg) {
  if (!op_ || proto::get_int(msg, "generation") != op_->t.generation) return;
  fail_scale("engine " + std::to_string(proto::get_int(msg, "engine_id")) +
             " could not prepare: " + msg.value("error", "unknown error"));
}

void Coordinator::fail_scale(const std::string& why) {
  log_->error("scale {} failed in {}: {}", op_->id, op_->phase, why);
  if (op_->phase == "committing") {
    // Some engines may have switched already: the only safe state left is a fresh group of the
    // engines that are alive, from the model source.
    op_->error = why;
    enter_phase("failed");
    std::vector<std::string> alive;
    for (const auto& [identity, e] : engines_)
      if (!is_gone(e.state)) alive.push_back(identity);
    std::sort(alive.begin(), alive.end(),
              [&](const auto& a, const auto& b) { return engines_[a].id < engines_[b].id; });
    if (!alive.empty()) form_group(alive);
    return;
  }
  // Before commit the old group kept serving: tell everyone to drop what they prepared and stop
  // the engines that were started for this operation.
  Body abort = {{"type", "abort_transition"}, {"generation", op_->t.generation}, {"error", why}};
  for (const auto& m : group_.members) send_to(m, abort);
  for (const auto& m : op_->new_engines) {
    send_to(m, abort);
    send_to(m, {{"type", "shutdown"}});
    engines_.at(m).state = EngineState::kLeft;
  }
  op_->error = why;
  enter_phase("failed");
}

void Coordinator::on_committed(const std::string& identity, const Body& msg) {
  if (!op_ || op_->phase != "committing" || proto::get_int(msg, "generation") != op_->t.generation)
    return;
  op_->committed.insert(proto::get_int(msg, "engine_id"));
  maybe_finish_commit();
}

void Coordinator::on_left(const std::string& identity, const Body& msg) {
  auto it = engines_.find(identity);
  if (it == engines_.end()) return;
  it->second.state = EngineState::kLeft;
  it->second.rank = -1;
  // Its requests continue on the remaining engines with the tokens generated so far.
  for (auto& [rid, r] : requests_) {
    if (r.engine != identity) continue;
    r.engine.clear();
    pending_.push_front(rid);
  }
  it->second.num_assigned = 0;
  if (op_ && op_->phase == "committing") {
    op_->left.insert(it->second.id);
    maybe_finish_commit();
  }
}

void Coordinator::maybe_finish_commit() {
  if (op_->committed.size() < op_->t.new_members.size() || op_->left.size() < op_->removing.size())
    return;
  // Every engine switched after the same step: route with the new group from here on.
  std::vector<std::string> members;
  for (int64_t id : op_->t.new_members)
    for (const auto& [identity, e] : engines_)
      if (e.id == id) members.push_back(identity);
  group_.generation = op_->t.generation;
  group_.members = members;
  group_.placement = op_->t.new_placement;
  group_.wave = 0;
  group_.wave_running = true;  // members step on after commit until they find the group idle
  group_.serving = true;
  for (size_t r = 0; r < members.size(); ++r) {
    EngineInfo& e = engines_.at(members[r]);
    e.rank = static_cast<int>(r);
    e.state = EngineState::kReady;
    e.load.clear();
  }
  store_.erase_prefix("eep/g" + std::to_string(op_->t.generation - 1) + "/");
  enter_phase("done");
  route_pending();
}

void Coordinator::check_scale_deadline() {
  if (!op_) return;
  if (Clock::now() > op_->deadline)
    fail_scale("timed out after " + std::to_string(opts_.scale_timeout.count()) + " ms in " + op_->phase);
}

}  // namespace eep
