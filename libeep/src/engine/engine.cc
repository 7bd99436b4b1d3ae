// The engine's event loop: messages from the coordinator between steps, lockstep steps with the
// group, DP waves (pause when the whole group is idle), outputs streamed back per step.
#include "eep/engine.h"

#include <unistd.h>

#include <csignal>

#include "eep/request.h"
#include "engine/engine_impl.h"

namespace eep {

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }
}  // namespace

Engine::~Engine() {
  hb_stop_ = true;
  if (hb_thread_.joinable()) hb_thread_.join();
  if (transition_ && transition_->worker.joinable()) transition_->worker.join();
  for (auto* list : {&abandoned_, &retiring_})
    for (auto& pt : *list)
      if (pt->worker.joinable()) pt->worker.join();
}

int Engine::run() {
  // Backend and model first: a bad --backend or --model fails before anything is registered.
  check_backend_available(opts_.backend);
  EEP_CHECK(opts_.data_comm == "gloo" || (opts_.data_comm == "nccl" && opts_.backend == "cuda"),
            ErrorCode::kInvalidArgument,
            "--data-comm " + opts_.data_comm + " needs --backend cuda (NCCL moves device buffers)");
  weights_ = open_weights(opts_.model, opts_.seed);
  if (opts_.num_kv_blocks == 0) {
    // Sized once here, before registering: a joining engine is told its peers' size instead.
    opts_.num_kv_blocks =
        opts_.backend == "cuda"
            ? cuda_kv_blocks_for_memory(weights_->config(), opts_.block_size, opts_.device,
                                        opts_.gpu_memory_fraction, opts_.min_ranks)
            : kCpuDefaultKvBlocks;
    log_->info("KV cache: {} blocks of {} tokens", opts_.num_kv_blocks, opts_.block_size);
  }

  sock_.set(zmq::sockopt::linger, 0);
  sock_.connect(opts_.coord);
  store_ = std::make_unique<StoreClient>(opts_.coord, opts_.collective_timeout);
  send_register();
  log_->info("registering with {} (model {})", opts_.coord, opts_.model);

  // The coordinator answers with our engine id and KV-cache size, or refuses us. A joining
  // engine is told to retry while another scale operation runs.
  auto deadline = Clock::now() + (opts_.join ? opts_.coord_timeout * 6 : opts_.coord_timeout);
  while (engine_id_ < 0) {
    if (g_stop) return kExitOk;
    if (register_retry_at_ != Clock::time_point{} && Clock::now() >= register_retry_at_) {
      register_retry_at_ = {};
      send_register();
    }
    if (Clock::now() > deadline)
      throw Error(ErrorCode::kUnavailable, "no answer from coordinator " + opts_.coord +
                                               " within " +
                                               std::to_string(opts_.coord_timeout.count()) + " ms");
    if (auto msg = proto::recv(sock_, Ms(100))) handle(*msg);
  }
  publish_snapshot();
  hb_thread_ = std::thread([this] { heartbeat_loop(); });

  while (!shutdown_ && !left_ && (!g_stop || graceful_leave())) {
    // Between steps: take every pending message; block briefly only while paused.
    Ms wait = (configured_ && !paused_) ? Ms(0) : Ms(20);
    while (auto msg = proto::recv(sock_, wait)) {
      handle(*msg);
      wait = Ms(0);
      if (shutdown_ || left_) break;
    }
    if (shutdown_ || left_ || (g_stop && !graceful_leave())) break;
    if (coord_lost_) {
      log_->error("lost the coordinator {} (silent for {} ms or it dropped this engine); exiting",
                  opts_.coord, opts_.coord_timeout.count());
      return kExitRuntime;
    }
    poll_transition();
    publish_snapshot();
    if (!configured_) continue;
    if (paused_ && (sched_->has_work() || (transition_ && transition_->commit_requested))) {
      // This engine has work while the group rests: ask the coordinator to wake everyone.
      send({{"type", "wave_start"}, {"wave", wave_}, {"rank", rank_}});
      paused_ = false;
    }
    if (!paused_) step();
  }
  if (g_stop) log_->info("signal received; leaving");
  if (!left_) send({{"type", "goodbye"}, {"engine_id", engine_id_}, {"rank", rank_}});
  return kExitOk;
}

void Engine::send_register() {
  const ModelConfig& cfg = weights_->config();
  const int max_model_len =
      opts_.max_model_len > 0 ? opts_.max_model_len : cfg.max_position_embeddings;
  send({{"type", "register"},
        {"pid", static_cast<int64_t>(getpid())},
        {"backend", opts_.backend},
        {"device", opts_.device},
        {"model", opts_.model},
        {"seed", opts_.seed},
        {"join", opts_.join},
        {"vocab_size", cfg.vocab_size},
        {"num_layers", cfg.num_layers},
        {"num_experts", cfg.num_experts},
        {"max_model_len", max_model_len},
        {"num_kv_blocks", opts_.num_kv_blocks},
        {"block_size", opts_.block_size},
        // K and V for every layer of every block: fp32 on the CPU, bf16 on the GPU.
        {"kv_bytes", int64_t{2} * cfg.num_layers * opts_.num_kv_blocks * opts_.block_size *
                         cfg.num_kv_heads * cfg.head_dim *
                         (opts_.backend == "cuda" ? int64_t{2} : int64_t{sizeof(float)})}});
}

bool Engine::graceful_leave() {
  if (!configured_ || placement_.num_ranks < 2) return false;
  auto now = Clock::now();
  if (!leave_sent_) {
    leave_sent_ = true;
    leave_deadline_ = now + opts_.leave_timeout;
    leave_retry_at_ = now;
    log_->info("signal received: asking the coordinator to scale this engine out");
  }
  if (now > leave_deadline_) {
    log_->warn("not scaled out within {} ms; leaving anyway", opts_.leave_timeout.count());
    return false;
  }
  if (leave_retry_at_ != Clock::time_point{} && now >= leave_retry_at_) {
    leave_retry_at_ = {};
    send({{"type", "leave"}, {"engine_id", engine_id_}});
  }
  return true;
}

void Engine::handle(const proto::Body& msg) {
  const std::string type = msg.value("type", "");
  try {
    if (type == "add") {
      add_request(msg);
    } else if (type == "abort") {
      if (sched_) sched_->abort(proto::get_string(msg, "rid"));
    } else if (type == "wake") {
      if (paused_ && configured_ && proto::get_int(msg, "wave") == wave_) paused_ = false;
    } else if (type == "configure") {
      configure(msg);
    } else if (type == "prepare") {
      on_prepare(msg);
    } else if (type == "commit") {
      on_commit(msg);
    } else if (type == "finish") {
      on_finish(msg);
    } else if (type == "abort_transition") {
      abort_transition(msg.value("error", "aborted by the coordinator"));
    } else if (type == "shutdown") {
      shutdown_ = true;
    } else if (type == "register_reply") {
      if (opts_.join && msg.value("status", "") == "error" && msg.value("code", "") == "conflict") {
        log_->info("coordinator busy ({}); retrying", msg.value("message", ""));
        register_retry_at_ = Clock::now() + Ms(500);
        return;
      }
      on_register_reply(msg);
    } else if (type == "leave_reply") {
      if (msg.value("status", "") == "error") {
        log_->info("scale-out refused for now ({}); retrying", msg.value("message", ""));
        leave_retry_at_ = Clock::now() + Ms(500);
      }
    } else {
      log_->warn("ignoring message of unknown type '{}'", type);
    }
  } catch (const Error& e) {
    if (type == "register_reply") throw;  // refused by the coordinator: fatal
    log_->warn("{}: {}", type, e.what());
  }
}

void Engine::on_register_reply(const proto::Body& msg) {
  proto::throw_if_error(msg);
  engine_id_ = proto::get_int(msg, "engine_id");
  // KV-cache size: an engine joining a running group takes the smallest of its peers' (no
  // profiling); the first engines keep their own.
  const ModelConfig& cfg = weights_->config();
  BackendOptions bo;
  bo.num_kv_blocks = static_cast<int>(msg.value("num_kv_blocks", int64_t{opts_.num_kv_blocks}));
  bo.block_size = opts_.block_size;
  bo.device = opts_.device;
  backend_ = opts_.backend == "cuda" ? make_cuda_backend(cfg, bo) : make_cpu_backend(cfg, bo);
  SchedulerConfig sc;
  sc.num_blocks = bo.num_kv_blocks;
  sc.block_size = bo.block_size;
  sc.max_num_seqs = opts_.max_num_seqs;
  sc.max_tokens_per_step = opts_.max_tokens_per_step;
  sc.max_model_len = opts_.max_model_len > 0 ? opts_.max_model_len : cfg.max_position_embeddings;
  sched_ = std::make_unique<Scheduler>(sc);
  // A joining engine gets its weights from peers during the transition, not from disk.
  if (msg.value("load_weights", true)) {
    backend_->load_dense(*weights_);
    dense_loaded_ = true;
  }
  log_->info("registered as engine {} ({} KV blocks, weights from {})", engine_id_, sc.num_blocks,
             dense_loaded_ ? "the model source" : "peers");
}

void Engine::configure(const proto::Body& msg) {
  // A (re)formed group from the model source: first start, or recovery after a peer died.
  int64_t gen = proto::get_int(msg, "generation");
  int rank = static_cast<int>(proto::get_int(msg, "rank"));
  int size = static_cast<int>(proto::get_int(msg, "size"));
  const ModelConfig& cfg = weights_->config();
  Placement p = Placement::from_json(msg.at("placement"), cfg.num_experts);
  EEP_CHECK(p.num_ranks == size, ErrorCode::kInvalidArgument, "placement size mismatch");
  log_->info("configure: generation {} rank {}/{}", gen, rank, size);
  supersede_transitions();
  group_.reset();  // old communicators go before new ones are made
  if (!dense_loaded_) {
    backend_->load_dense(*weights_);
    dense_loaded_ = true;
  }
  backend_->load_experts(*weights_, p, rank);
  group_ = make_serving_group("eep/g" + std::to_string(gen), rank, size);
  placement_ = std::move(p);
  rank_ = rank;
  generation_ = gen;
  wave_ = proto::get_int(msg, "wave");
  paused_ = true;
  configured_ = true;
  send({{"type", "ready"}, {"generation", gen}, {"rank", rank}});
}

std::unique_ptr<Group> Engine::make_serving_group(const std::string& name, int rank, int size) {
  log_->info("group {}: {} over {}, rank {}", name, size, opts_.data_comm, rank);
  if (opts_.data_comm == "nccl") {
    NcclGroupOptions no;
    no.name = name;
    no.rank = rank;
    no.size = size;
    no.device = opts_.device;
    no.timeout = opts_.collective_timeout;
    return make_nccl_group(*store_, no);
  }
  GlooGroupOptions go;
  go.name = name;
  go.rank = rank;
  go.size = size;
  go.host = opts_.comm_host;
  go.timeout = opts_.collective_timeout;
  return make_gloo_group(*store_, go);
}

void Engine::add_request(const proto::Body& msg) {
  Sequence seq = decode_add(msg);
  std::string rid = seq.id;
  try {
    EEP_CHECK(sched_ != nullptr, ErrorCode::kUnavailable, "engine not registered yet");
    validate_tokens(seq.prompt, weights_->config().vocab_size);
    sched_->add(std::move(seq));
  } catch (const Error& e) {
    send({{"type", "outputs"},
          {"rank", rank_},
          {"items", proto::Body::array({{{"rid", rid},
                                         {"tokens", proto::Body::array()},
                                         {"finish", "error"},
                                         {"code", error_code_name(e.code())},
                                         {"error", e.what()}}})}});
  }
}

// Steps longer than this are logged with their breakdown (a serving pause worth knowing about).
constexpr auto kSlowStep = std::chrono::milliseconds(50);

void Engine::step() {
  std::vector<ScheduledChunk> chunks = sched_->schedule();
  // One small all-reduce per step: is anyone busy, has anyone been told to commit a
  // transition, and how many rows does the step have over the group (a backend may size a
  // fixed-capacity exchange by it)? Every member sees the same sums, so all switch after the
  // same step.
  const bool commit_here = transition_ && transition_->commit_requested;
  int64_t rows_here = 0;
  for (const ScheduledChunk& c : chunks) rows_here += c.num_tokens;
  int64_t flags[3] = {sched_->has_work() ? 1 : 0, commit_here ? 1 : 0, rows_here};
  const auto t_sync = Clock::now();
  arm_group_abort();
  try {
    group_->allreduce_sum(flags, 3);
  } catch (const Error& e) {
    fail_group(e.what());
    return;
  }
  if (flags[1] > 0 && !transition_) {
    fail_group("a peer commits a transition this engine never prepared");
    return;
  }
  if (flags[0] > 0) {
    // Flatten the chunks into one batch.
    StepBatch batch;
    batch.group_rows = flags[2];
    for (const ScheduledChunk& c : chunks) {
      SeqSlice s;
      s.block_table = c.seq->blocks.data();
      s.num_blocks = static_cast<int>(c.seq->blocks.size());
      s.start = c.start;
      s.row_begin = batch.num_rows();
      s.num_rows = c.num_tokens;
      s.sample = c.sample;
      for (int i = 0; i < c.num_tokens; ++i) {
        batch.tokens.push_back(c.seq->token_at(c.start + i));
        batch.positions.push_back(c.start + i);
      }
      batch.seqs.push_back(s);
    }
    // Sampling parameters of the sampling chunks; position = index of the token being made.
    std::vector<const SamplingParams*> params;
    std::vector<int64_t> positions;
    for (const ScheduledChunk& c : chunks) {
      if (!c.sample) continue;
      params.push_back(&c.seq->params);
      positions.push_back(c.seq->total_len());
    }
    std::vector<int32_t> sampled;
    const auto t_forward = Clock::now();
    try {
      backend_->forward_tokens(batch, *group_, params, positions, sampled);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kInternal) throw;
      fail_group(e.what());
      return;
    }
    ++steps_;
    // A step this slow is a pause in serving: say where it went (the flags' all-reduce waits for
    // the slowest member; the forward holds the MoE exchanges).
    const auto t_end = Clock::now();
    if (t_end - t_sync > kSlowStep)
      log_->info("slow step {} ({} rows, group of {}): all-reduce {:.1f} ms, forward {:.1f} ms",
                 steps_, batch.num_rows(), group_->size(),
                 std::chrono::duration<double, std::milli>(t_forward - t_sync).count(),
                 std::chrono::duration<double, std::milli>(t_end - t_forward).count());
    // Stream what this step produced (complete() moves finished sequences out).
    std::map<std::string, proto::Body> items;
    size_t si = 0;
    for (const ScheduledChunk& c : chunks) {
      if (!c.sample) continue;
      items[c.seq->id] = {{"rid", c.seq->id}, {"tokens", {sampled[si++]}}, {"finish", ""}};
    }
    for (Sequence& done : sched_->complete(chunks, sampled)) {
      auto it = items.find(done.id);
      if (it != items.end()) it->second["finish"] = finish_reason_name(done.finish);
    }
    if (!items.empty()) {
      proto::Body arr = proto::Body::array();
      for (auto& [id, item] : items) arr.push_back(std::move(item));
      send({{"type", "outputs"}, {"rank", rank_}, {"items", std::move(arr)}});
    }
  } else if (!chunks.empty()) {
    // Cannot happen (this engine had chunks, so the sum is positive); keep the scheduler honest.
    throw Error(ErrorCode::kInternal, "scheduled work in an idle step");
  }
  if (flags[1] > 0) {
    switch_to_new_group();
    return;
  }
  if (flags[0] == 0) {
    // The whole group is idle: end the wave. Rank 0 tells the coordinator.
    ++wave_;
    paused_ = true;
    if (rank_ == 0) send({{"type", "wave_idle"}, {"wave", wave_}, {"generation", generation_}});
  }
}

void Engine::fail_group(const std::string& why) {
  // A peer is gone or stuck. Keep every request (their computed KV stays valid; a half-run step
  // is redone) and wait for the coordinator to configure a new group.
  log_->error("group {} failed: {}", group_ ? group_->name() : "?", why);
  group_.reset();
  configured_ = false;
  paused_ = true;
  send({{"type", "group_failed"}, {"rank", rank_}, {"generation", generation_}, {"error", why}});
}

int run_engine(const EngineOptions& opts) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  try {
    Engine engine(opts);
    return engine.run();
  } catch (const Error& e) {
    logger("engine")->error("{}", e.what());
    return e.code() == ErrorCode::kInvalidArgument ? kExitUsage : kExitRuntime;
  } catch (const std::exception& e) {
    logger("engine")->error("fatal: {}", e.what());
    return kExitRuntime;
  }
}

}  // namespace eep
