// Engine side of elastic transitions (design.md §4). Prepare runs on a worker thread while the
// old group keeps serving: join a transfer group over old+new members, move weights peer to peer
// (plan_transfers), stage the new expert slots, build the new group. Commit happens between
// steps at the step whose all-reduce first carries a commit flag, the same step on every member.
#include "elastic/weight_move.h"
#include "engine/engine_impl.h"

namespace eep {

namespace {
std::vector<int64_t> id_list(const proto::Body& msg, const char* field) {
  return msg.at(field).get<std::vector<int64_t>>();
}
}  // namespace

void Engine::reap_abandoned() {
  for (auto it = abandoned_.begin(); it != abandoned_.end();) {
    if ((*it)->done) {
      (*it)->worker.join();
      it = abandoned_.erase(it);
    } else {
      ++it;
    }
  }
}

void Engine::on_prepare(const proto::Body& msg) {
  const int64_t gen = proto::get_int(msg, "generation");
  reap_abandoned();
  if (transition_ || !abandoned_.empty()) {
    send({{"type", "prepare_failed"}, {"generation", gen}, {"engine_id", engine_id_},
          {"error", "engine is still busy with an earlier transition"}});
    return;
  }
  const ModelConfig& cfg = weights_->config();
  auto pt = std::make_unique<PendingTransition>();
  pt->t.generation = gen;
  pt->t.old_members = id_list(msg, "old_members");
  pt->t.new_members = id_list(msg, "new_members");
  pt->t.old_placement = Placement::from_json(msg.at("old_placement"), cfg.num_experts);
  pt->t.new_placement = Placement::from_json(msg.at("new_placement"), cfg.num_experts);
  pt->wave = msg.value("wave", int64_t{0});
  pt->new_rank = pt->t.new_rank_of(engine_id_);
  pt->is_new = pt->t.old_rank_of(engine_id_) < 0;
  EEP_CHECK(pt->t.union_rank_of(engine_id_) >= 0, ErrorCode::kInvalidArgument,
            "prepare: this engine is not part of the transition");
  EEP_CHECK(!pt->is_new || pt->new_rank >= 0, ErrorCode::kInvalidArgument,
            "prepare: a new engine without a new rank");
  log_->info("prepare generation {}: {} -> {} engines, this engine {} -> {}", gen,
             pt->t.old_members.size(), pt->t.new_members.size(), rank_, pt->new_rank);
  PendingTransition* raw = pt.get();
  transition_ = std::move(pt);
  transition_->worker = std::thread([this, raw] { prepare_worker(raw); });
}

void Engine::prepare_worker(PendingTransition* pt) {
  try {
    if (opts_.test_prepare_delay.count() > 0) std::this_thread::sleep_for(opts_.test_prepare_delay);
    const Transition& t = pt->t;
    const auto all = t.union_members();
    const int me = t.union_rank_of(engine_id_);
    const std::string base = "eep/g" + std::to_string(t.generation);

    // 1. A transfer group over everyone who sends or receives.
    GlooGroupOptions xo;
    xo.name = base + "/xfer";
    xo.rank = me;
    xo.size = static_cast<int>(all.size());
    xo.host = opts_.comm_host;
    xo.timeout = opts_.collective_timeout;
    auto xfer = make_gloo_group(*store_, xo);

    // 2. Weights peer to peer, in the plan's global order (deadlock-free with blocking calls).
    MovedWeights moved = move_weights(*backend_, *xfer, t, me, &pt->cancelled);
    auto& received = moved.received;
    const size_t bytes_in = moved.bytes_in, bytes_out = moved.bytes_out;
    xfer->barrier();  // nobody tears the transfer group down under a peer still receiving
    xfer.reset();
    if (pt->is_new) dense_loaded_ = true;
    log_->info("generation {}: weights moved ({} MB in, {} MB out)", t.generation,
               bytes_in >> 20, bytes_out >> 20);

    // 3. Stage the new slots and build the new group (members of the new group only).
    if (pt->new_rank >= 0 && !pt->cancelled) {
      backend_->stage_experts(t.new_placement, pt->new_rank, received);
      GlooGroupOptions go;
      go.name = base;
      go.rank = pt->new_rank;
      go.size = static_cast<int>(t.new_members.size());
      go.host = opts_.comm_host;
      go.timeout = opts_.collective_timeout;
      pt->standby = make_gloo_group(*store_, go);
    }
    if (pt->cancelled) {
      backend_->discard_staged();
      pt->standby.reset();
    }
  } catch (const std::exception& e) {
    pt->error = e.what();
    backend_->discard_staged();
    pt->standby.reset();
  }
  pt->done = true;
}

void Engine::poll_transition() {
  reap_abandoned();
  if (!transition_ || !transition_->done || transition_->reported) return;
  PendingTransition& pt = *transition_;
  pt.reported = true;
  auto ms = std::chrono::duration_cast<Ms>(Clock::now() - pt.started).count();
  if (!pt.error.empty()) {
    log_->error("prepare of generation {} failed: {}", pt.t.generation, pt.error);
    send({{"type", "prepare_failed"}, {"generation", pt.t.generation},
          {"engine_id", engine_id_}, {"error", pt.error}});
    pt.worker.join();
    transition_.reset();
    return;
  }
  send({{"type", "prepared"}, {"generation", pt.t.generation}, {"engine_id", engine_id_},
        {"prepare_ms", ms}});
}

void Engine::on_commit(const proto::Body& msg) {
  const int64_t gen = proto::get_int(msg, "generation");
  EEP_CHECK(transition_ && transition_->t.generation == gen && transition_->done &&
                transition_->error.empty(),
            ErrorCode::kConflict, "commit of generation " + std::to_string(gen) +
                                      " without a prepared transition");
  if (transition_->is_new) {
    // Not in the old group: nothing to agree on; join the new group's next step.
    switch_to_new_group();
    return;
  }
  transition_->commit_requested = true;  // carried by the next step's all-reduce
}

void Engine::switch_to_new_group() {
  std::unique_ptr<PendingTransition> pt = std::move(transition_);
  if (pt->worker.joinable()) pt->worker.join();
  const int64_t gen = pt->t.generation;
  group_.reset();  // the old group: every member leaves it after this same step
  if (pt->new_rank < 0) {
    // Removed: hand every request back; the coordinator continues them on the remaining engines
    // with the tokens generated so far.
    std::vector<Sequence> seqs = sched_->drain();
    proto::Body rids = proto::Body::array();
    for (const Sequence& s : seqs) rids.push_back(s.id);
    log_->info("generation {}: removed; handing back {} request(s)", gen, seqs.size());
    send({{"type", "left"}, {"generation", gen}, {"engine_id", engine_id_}, {"rids", rids}});
    configured_ = false;
    left_ = true;
    return;
  }
  backend_->commit_staged();
  group_ = std::move(pt->standby);
  placement_ = pt->t.new_placement;
  rank_ = pt->new_rank;
  generation_ = gen;
  wave_ = pt->wave;
  configured_ = true;
  paused_ = false;  // step on: an idle group ends the wave at its first all-reduce
  log_->info("generation {}: committed as rank {}/{}", gen, rank_, placement_.num_ranks);
  send({{"type", "committed"}, {"generation", gen}, {"engine_id", engine_id_}, {"rank", rank_},
        {"step", steps_}});
}

void Engine::abort_transition(const std::string& why) {
  if (!transition_) return;
  log_->warn("transition to generation {} rolled back: {}", transition_->t.generation, why);
  transition_->cancelled = true;
  if (transition_->done) {
    transition_->worker.join();
    backend_->discard_staged();
  } else {
    abandoned_.push_back(std::move(transition_));  // joined by poll_transition when it ends
  }
  transition_.reset();
  if (!configured_) shutdown_ = true;  // a new engine has nothing to go back to
}

}  // namespace eep
