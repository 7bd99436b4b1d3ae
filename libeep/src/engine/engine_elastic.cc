// Engine side of elastic transitions (design.md §4). Prepare runs on a worker thread while the
// old group keeps serving: join a transfer group over old+new members, move weights peer to peer
// (plan_transfers), stage the new expert slots, build the new group. Commit happens between
// steps at the step whose all-reduce first carries a commit flag, the same step on every member.
#include <algorithm>

#include "elastic/weight_move.h"
#include "engine/engine_impl.h"

namespace eep {

namespace {
std::vector<int64_t> id_list(const proto::Body& msg, const char* field) {
  return msg.at(field).get<std::vector<int64_t>>();
}
}  // namespace

void Engine::reap_abandoned() {
  for (auto* list : {&abandoned_, &retiring_}) {
    for (auto it = list->begin(); it != list->end();) {
      if ((*it)->done) {
        (*it)->worker.join();
        it = list->erase(it);
      } else {
        ++it;
      }
    }
  }
}

void Engine::on_prepare(const proto::Body& msg) {
  const int64_t gen = proto::get_int(msg, "generation");
  reap_abandoned();
  if (transition_ || committed_ || !abandoned_.empty()) {
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

    const int new_size = static_cast<int>(t.new_members.size());
    // Device path: GPU weights over NCCL, when everyone who sends or receives is in the new
    // group (scale-up, re-placement), which then carries the transfers (and is warmed up by
    // them). Every member decides the same way: the same transition, flags and backend kind.
    const bool device_path = opts_.data_comm == "nccl" && backend_->device_weights() &&
                             all.size() == t.new_members.size() && pt->new_rank >= 0;
    MovedWeights moved;
    if (device_path) {
      pt->standby = make_serving_group(base, pt->new_rank, new_size);
      std::vector<int> group_rank(all.size());
      for (size_t u = 0; u < all.size(); ++u) group_rank[u] = t.new_rank_of(all[u]);
      moved = move_weights_device(*backend_, *pt->standby, t, me, group_rank, pt->new_rank,
                                  &pt->cancelled);
    } else {
      // A transfer group over everyone who sends or receives; the weights through the host,
      // peer to peer, in the plan's global order (deadlock-free with blocking calls).
      GlooGroupOptions xo;
      xo.name = base + "/xfer";
      xo.rank = me;
      xo.size = static_cast<int>(all.size());
      xo.host = opts_.comm_host;
      xo.timeout = opts_.collective_timeout;
      auto xfer = make_gloo_group(*store_, xo);
      moved = move_weights(*backend_, *xfer, t, me, &pt->cancelled);
      xfer->barrier();  // nobody tears the transfer group down under a peer still receiving
    }
    if (pt->is_new) dense_loaded_ = true;
    log_->info("generation {}: weights moved ({} MB in, {} MB out{})", t.generation,
               moved.bytes_in >> 20, moved.bytes_out >> 20,
               device_path ? ", device to device over NCCL" : "");

    // Stage the new slots (the device path has staged them) and make the new group (members
    // of the new group only).
    if (pt->new_rank >= 0 && !pt->cancelled) {
      if (!device_path) backend_->stage_experts(t.new_placement, pt->new_rank, moved.received);
      if (!pt->standby) pt->standby = make_serving_group(base, pt->new_rank, new_size);
      pt->standby->warm_up();  // its first step would otherwise pause serving (NCCL connects)
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
  if (committed_ && committed_->new_rank < 0 && Clock::now() > committed_->linger_deadline) {
    log_->warn("generation {}: no finish within {} ms of leaving; exiting", committed_->t.generation,
               opts_.collective_timeout.count());
    committed_.reset();
    left_ = true;
  }
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
  if (pt->rollback_requested) {
    // Rolled back before this step: every old member leaves the old group after this same step
    // and goes back to it at once, so staying in it is the same thing.
    backend_->discard_staged();
    log_->warn("generation {}: rolled back at the commit step; staying in generation {}", gen,
               generation_);
    send({{"type", "rolled_back"}, {"generation", gen}, {"engine_id", engine_id_}, {"rank", rank_}});
    return;
  }
  // The old group, rank and wave stay until "finish": a commit-phase failure goes back to them.
  pt->old_group = std::move(group_);
  pt->old_rank = rank_;
  pt->old_generation = generation_;
  pt->old_wave = wave_;
  if (pt->new_rank < 0) {
    // Removed: hand every request back; the coordinator continues them on the remaining engines
    // with the tokens generated so far. Exit on "finish" (or rejoin the old group on a rollback).
    std::vector<Sequence> seqs = sched_->drain();
    proto::Body rids = proto::Body::array();
    for (const Sequence& s : seqs) rids.push_back(s.id);
    log_->info("generation {}: removed; handing back {} request(s)", gen, seqs.size());
    send({{"type", "left"}, {"generation", gen}, {"engine_id", engine_id_}, {"rids", rids}});
    configured_ = false;
    pt->linger_deadline = Clock::now() + opts_.collective_timeout;
    committed_ = std::move(pt);
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
  if (pt->is_new) {
    backend_->release_previous();  // a new engine has nothing to go back to
    return;
  }
  committed_ = std::move(pt);
}

void Engine::abort_transition(const std::string& why) {
  if (committed_) return roll_back_commit(why);
  if (!transition_) return;
  if (transition_->commit_requested) {
    // The old group switches at its next step whatever this engine does (peers may carry the
    // flag already): take that step, then stay (switch_to_new_group).
    log_->warn("transition to generation {} rolled back before the commit step: {}",
               transition_->t.generation, why);
    transition_->rollback_requested = true;
    return;
  }
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

void Engine::roll_back_commit(const std::string& why) {
  std::unique_ptr<PendingTransition> pt = std::move(committed_);
  log_->warn("generation {} rolled back after the switch: {}; back to generation {} as rank {}",
             pt->t.generation, why, pt->old_generation, pt->old_rank);
  group_.reset();  // the new group (already gone if it failed)
  if (pt->new_rank >= 0) backend_->restore_previous();  // the old slots, kept since the switch
  group_ = std::move(pt->old_group);
  placement_ = pt->t.old_placement;
  rank_ = pt->old_rank;
  generation_ = pt->old_generation;
  wave_ = pt->old_wave;
  configured_ = true;
  paused_ = false;  // every old member steps on from the same point of the old group
  send({{"type", "rolled_back"}, {"generation", pt->t.generation}, {"engine_id", engine_id_},
        {"rank", rank_}});
}

void Engine::on_finish(const proto::Body& msg) {
  const int64_t gen = proto::get_int(msg, "generation");
  if (!committed_ || committed_->t.generation != gen) return;
  const bool removed = committed_->new_rank < 0;
  // The slots given up are freed here, between steps (cudaFree waits for the device). The old
  // group goes on the transition's (joined) worker thread, so that serving on the new group does
  // not wait for the communicator's teardown.
  if (!removed) backend_->release_previous();
  PendingTransition* pt = committed_.get();
  pt->done = false;
  pt->worker = std::thread([pt] {
    pt->old_group.reset();
    pt->done = true;
  });
  retiring_.push_back(std::move(committed_));
  log_->info("generation {}: finished{}", gen, removed ? "; leaving" : "");
  if (removed) left_ = true;
}

void Engine::supersede_transitions() {
  if (committed_ && committed_->new_rank >= 0) backend_->release_previous();
  committed_.reset();
  if (!transition_) return;
  transition_->commit_requested = false;  // nothing to switch to: drop it now
  abort_transition("superseded by a new configuration");
}

}  // namespace eep
