// Scaling orchestration (design.md §4): validate, plan the target placement (scale_placement.cc,
// off the event loop), launch or await new engines, prepare (weights move peer to peer while the
// old group serves), commit (all engines switch after the same step), finish (engines release the
// old group and weights, removed engines exit). A failure before finish rolls back to the old
// group: before commit it never stopped serving; during commit every engine still holds it
// (roll_back_commit) unless one of its members is gone, when the group is re-formed instead.
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
  if (!op.placement_info.is_null()) v["placement"] = op.placement_info;
  if (op.phase == "failed") v["rolled_back"] = op.rolled_back;
  if (op.phase == "committing") {
    // Engines that switched (new group members that committed, removed engines that left).
    v["switched"] = op.committed.size() + op.left.size();
    v["engines"] = op.t.new_members.size() + op.removing.size();
  }
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
    op.planned = true;
    op.placement_info = {{"policy", "plan"}};
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
  if (!op_->planned) {
    // The target for the new size: remaining engines keep their ranks' experts where they fit,
    // new engines take the rest; with recorded load, balanced by eplb's movement-aware mode.
    // That may take a second at large sizes, so it runs off the event loop (poll_planning),
    // alongside the launch of new engines.
    const int num_slots = (model_experts_ + opts_.redundant + op_->to - 1) / op_->to * op_->to;
    std::vector<int> keep;
    for (int r = 0; r < size; ++r)
      if (std::find(op_->removing.begin(), op_->removing.end(), group_.members[r]) ==
          op_->removing.end())
        keep.push_back(r);
    while (static_cast<int>(keep.size()) < op_->to) keep.push_back(-1);
    planning_ = std::async(std::launch::async, plan_scale, group_.placement, keep, num_slots,
                           logical_load());
    planning_op_ = op_->id;
  }
  if (op_->to > op_->from) {
    op_->expected_new = op_->to - op_->from;
    enter_phase("launching");
    if (launcher_ && op_->spawn) op_->spawned_pids = spawn_engines(op_->from, op_->expected_new);
    // Without a launcher, engines started by the operator (eep-engine) join on their own.
    return;
  }
  if (op_->planned) return begin_prepare();
  enter_phase("planning");
}

void Coordinator::poll_planning() {
  if (!planning_.valid() ||
      planning_.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    return;
  ScalePlacement sp;
  try {
    sp = planning_.get();
  } catch (const std::exception& e) {  // plan_scale falls back to resize; resize itself failed
    if (op_ && op_->id == planning_op_) fail_scale(std::string("no placement: ") + e.what());
    return;
  }
  if (!op_ || op_->id != planning_op_ || op_->finished()) return;  // that operation is over
  op_->t.new_placement = std::move(sp.placement);
  op_->planned = true;
  op_->placement_info = {{"policy", sp.policy},          {"plan_ms", sp.plan_ms},
                         {"moved_slots", sp.moved_slots}, {"num_slots", op_->t.new_placement.num_slots}};
  if (!sp.why.empty()) op_->placement_info["why"] = sp.why;
  if (sp.balancedness > 0) {
    op_->placement_info["balancedness"] = sp.balancedness;
    op_->placement_info["resize_balancedness"] = sp.resize_balancedness;
  }
  log_->info("scale {}: placement for {} engines by {} in {:.1f} ms ({} slot(s) rewritten{}{})",
             op_->id, op_->to, sp.policy, sp.plan_ms, sp.moved_slots,
             sp.balancedness > 0 ? fmt::format(", balancedness {:.4f}, resize's {:.4f}",
                                               sp.balancedness, sp.resize_balancedness)
                                 : std::string(),
             sp.why.empty() ? std::string() : "; " + sp.why);
  maybe_begin_prepare();
}

void Coordinator::maybe_begin_prepare() {
  if (!op_->planned || op_->expected_new > 0) return;
  if (op_->phase == "planning" || op_->phase == "launching") begin_prepare();
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
    if (roll_back_commit(why)) {
      op_->error = why + "; rolled back to the " + std::to_string(group_.members.size()) +
                   " engine(s) of generation " + std::to_string(group_.generation);
      enter_phase("failed");
      route_pending();
      return;
    }
    // An old member is gone or its old group broke: the only safe state left is a fresh group of
    // the engines that are alive, from the model source.
    op_->error = why + "; no rollback (an engine of the old group is gone or its group failed): "
                       "the group is re-formed from the model source";
    // The new group's generation is taken (its store keys may still be there): count on from it.
    store_.erase_prefix("eep/g" + std::to_string(group_.generation) + "/");
    group_.generation = std::max(group_.generation, op_->t.generation);
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

bool Coordinator::roll_back_commit(const std::string& why) {
  // Every old member keeps its old group, placement and the expert weights it gave up until
  // "finish" (engine_elastic.cc), so the old configuration comes back without the model source
  // as long as all of them are alive and that group never failed.
  if (op_->old_group_failed) return false;
  for (const auto& m : group_.members)
    if (is_gone(engines_.at(m).state)) return false;
  Body abort = {{"type", "abort_transition"}, {"generation", op_->t.generation}, {"error", why}};
  for (size_t r = 0; r < group_.members.size(); ++r) {
    EngineInfo& e = engines_.at(group_.members[r]);
    send_to(e.identity, abort);
    e.rank = static_cast<int>(r);
    e.state = EngineState::kReady;
  }
  for (const auto& m : op_->new_engines) {
    send_to(m, abort);
    send_to(m, {{"type", "shutdown"}});
    if (!is_gone(engines_.at(m).state)) engines_.at(m).state = EngineState::kLeft;
  }
  op_->rolled_back = true;
  group_.wave_running = true;  // the members step on in the old group until they find it idle
  log_->warn("scale {}: rolled back to generation {} ({} engines)", op_->id, group_.generation,
             group_.members.size());
  return true;
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
  // Its requests continue on the remaining engines with the tokens generated so far.
  for (auto& [rid, r] : requests_) {
    if (r.engine != identity) continue;
    r.engine.clear();
    pending_.push_front(rid);
  }
  it->second.num_assigned = 0;
  if (op_ && op_->phase == "committing") {
    // It stays (old group and weights kept) until "finish", in case the operation rolls back.
    op_->left.insert(it->second.id);
    maybe_finish_commit();
  } else {
    it->second.state = EngineState::kLeft;
    it->second.rank = -1;
  }
}

void Coordinator::maybe_finish_commit() {
  if (op_->committed.size() < op_->t.new_members.size() || op_->left.size() < op_->removing.size())
    return;
  if (opts_.test_commit_hold.count() > 0) {
    if (op_->all_switched == Clock::time_point{}) op_->all_switched = Clock::now();
    if (Clock::now() < op_->all_switched + opts_.test_commit_hold) return;  // check_scale_deadline
  }
  // Every engine switched after the same step. The point of no return: engines release the old
  // group and weights, removed engines exit, and requests go to the new group from here on.
  Body finish = {{"type", "finish"}, {"generation", op_->t.generation}};
  for (const auto& m : group_.members) send_to(m, finish);
  for (const auto& m : op_->new_engines) send_to(m, finish);
  for (const auto& m : op_->removing) {
    EngineInfo& e = engines_.at(m);
    e.rank = -1;
    if (!is_gone(e.state)) e.state = EngineState::kLeft;
  }
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
  if (op_->all_switched != Clock::time_point{}) maybe_finish_commit();  // --test-commit-hold-ms
  if (!op_) return;
  if (Clock::now() > op_->deadline)
    fail_scale("timed out after " + std::to_string(opts_.scale_timeout.count()) + " ms in " + op_->phase);
}

}  // namespace eep
