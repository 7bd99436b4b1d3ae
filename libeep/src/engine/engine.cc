// The engine's event loop: messages from the coordinator between steps, lockstep steps with the
// group, DP waves (pause when the whole group is idle), outputs streamed back per step.
#include "eep/engine.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <zmq.hpp>

#include "eep/backend.h"
#include "eep/comm.h"
#include "eep/common.h"
#include "eep/model.h"
#include "eep/placement.h"
#include "eep/proto.h"
#include "eep/scheduler.h"
#include "eep/store.h"
#include "eep/request.h"

namespace eep {

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

using Ms = std::chrono::milliseconds;

class Engine {
 public:
  explicit Engine(const EngineOptions& opts) : opts_(opts), log_(logger("engine")) {}
  int run();

 private:
  void send(proto::Body body) { proto::send(sock_, body); }
  void handle(const proto::Body& msg);
  void configure(const proto::Body& msg);
  void add_request(const proto::Body& msg);
  void step();
  void publish_snapshot();
  void heartbeat_loop();
  void fail_group(const std::string& why);

  EngineOptions opts_;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_{ctx_, zmq::socket_type::dealer};
  std::unique_ptr<WeightSource> weights_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Scheduler> sched_;
  std::unique_ptr<StoreClient> store_;
  std::unique_ptr<Group> group_;
  Placement placement_;
  int rank_ = -1;
  int64_t generation_ = -1;
  int64_t wave_ = 0;
  bool paused_ = true;      // between waves: no steps until work or a wake
  bool configured_ = false;
  bool shutdown_ = false;
  int64_t steps_ = 0;
  int64_t engine_id_ = -1;

  // Heartbeats come from their own thread and socket, so a long step or a blocking group
  // formation never looks like a dead engine. The main thread publishes what they carry.
  std::mutex snap_mu_;
  proto::Body snapshot_;
  std::atomic<bool> coord_lost_{false};
  std::atomic<bool> hb_stop_{false};
  std::thread hb_thread_;
};

int Engine::run() {
  // Model and device first: a bad --model fails before anything is registered.
  weights_ = open_weights(opts_.model, opts_.seed);
  const ModelConfig& cfg = weights_->config();
  BackendOptions bo;
  bo.num_kv_blocks = opts_.num_kv_blocks;
  bo.block_size = opts_.block_size;
  bo.device = opts_.device;
  backend_ = opts_.backend == "cuda" ? make_cuda_backend(cfg, bo) : make_cpu_backend(cfg, bo);
  backend_->load_dense(*weights_);
  SchedulerConfig sc;
  sc.num_blocks = opts_.num_kv_blocks;
  sc.block_size = opts_.block_size;
  sc.max_num_seqs = opts_.max_num_seqs;
  sc.max_tokens_per_step = opts_.max_tokens_per_step;
  sc.max_model_len = opts_.max_model_len > 0 ? opts_.max_model_len : cfg.max_position_embeddings;
  sched_ = std::make_unique<Scheduler>(sc);

  sock_.set(zmq::sockopt::linger, 0);
  sock_.connect(opts_.coord);
  store_ = std::make_unique<StoreClient>(opts_.coord, opts_.collective_timeout);
  send({{"type", "register"},
        {"pid", static_cast<int64_t>(getpid())},
        {"backend", backend_->name()},
        {"device", opts_.device},
        {"model", opts_.model},
        {"seed", opts_.seed},
        {"vocab_size", cfg.vocab_size},
        {"num_layers", cfg.num_layers},
        {"num_experts", cfg.num_experts},
        {"max_model_len", sc.max_model_len},
        {"num_kv_blocks", sc.num_blocks},
        {"block_size", sc.block_size},
        {"kv_bytes", static_cast<int64_t>(backend_->kv_bytes())}});
  log_->info("registering with {} (model {}, {} KV blocks)", opts_.coord, opts_.model,
             sc.num_blocks);

  // The coordinator answers registration with our engine id (or refuses us).
  auto deadline = Clock::now() + opts_.coord_timeout;
  while (engine_id_ < 0) {
    if (g_stop) return kExitOk;
    if (Clock::now() > deadline)
      throw Error(ErrorCode::kUnavailable, "no answer from coordinator " + opts_.coord + " within " +
                                               std::to_string(opts_.coord_timeout.count()) + " ms");
    if (auto msg = proto::recv(sock_, Ms(100))) handle(*msg);
  }
  publish_snapshot();
  hb_thread_ = std::thread([this] { heartbeat_loop(); });
  struct Joiner {
    Engine* e;
    ~Joiner() {
      e->hb_stop_ = true;
      if (e->hb_thread_.joinable()) e->hb_thread_.join();
    }
  } joiner{this};

  while (!shutdown_ && !g_stop) {
    // Between steps: take every pending message; block briefly only while paused.
    Ms wait = (configured_ && !paused_) ? Ms(0) : Ms(50);
    while (auto msg = proto::recv(sock_, wait)) {
      handle(*msg);
      wait = Ms(0);
      if (shutdown_) break;
    }
    if (shutdown_ || g_stop) break;
    if (coord_lost_) {
      log_->error("lost the coordinator {} (silent for {} ms or it dropped this engine); exiting",
                  opts_.coord, opts_.coord_timeout.count());
      return kExitRuntime;
    }
    publish_snapshot();
    if (!configured_) continue;
    if (paused_ && sched_->has_work()) {
      // This engine has work while the group rests: ask the coordinator to wake everyone.
      send({{"type", "wave_start"}, {"wave", wave_}, {"rank", rank_}});
      paused_ = false;
    }
    if (!paused_) step();
  }
  if (g_stop) log_->info("signal received; leaving");
  send({{"type", "goodbye"}, {"rank", rank_}});
  return kExitOk;
}

void Engine::publish_snapshot() {
  proto::Body hb = {{"type", "heartbeat"},
                    {"engine_id", engine_id_},
                    {"rank", rank_},
                    {"generation", generation_},
                    {"num_waiting", sched_->num_waiting()},
                    {"num_running", sched_->num_running()},
                    {"free_blocks", sched_->allocator().num_free()},
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

void Engine::handle(const proto::Body& msg) {
  const std::string type = msg.value("type", "");
  try {
    if (type == "add") {
      add_request(msg);
    } else if (type == "abort") {
      sched_->abort(proto::get_string(msg, "rid"));
    } else if (type == "wake") {
      if (paused_ && configured_ && proto::get_int(msg, "wave") == wave_) paused_ = false;
    } else if (type == "configure") {
      configure(msg);
    } else if (type == "shutdown") {
      shutdown_ = true;
    } else if (type == "register_reply") {
      proto::throw_if_error(msg);
      engine_id_ = proto::get_int(msg, "engine_id");
    } else {
      log_->warn("ignoring message of unknown type '{}'", type);
    }
  } catch (const Error& e) {
    if (type == "register_reply") throw;  // refused by the coordinator: fatal
    log_->warn("{}: {}", type, e.what());
  }
}

void Engine::configure(const proto::Body& msg) {
  int64_t gen = proto::get_int(msg, "generation");
  int rank = static_cast<int>(proto::get_int(msg, "rank"));
  int size = static_cast<int>(proto::get_int(msg, "size"));
  const ModelConfig& cfg = weights_->config();
  Placement p = Placement::from_json(msg.at("placement"), cfg.num_experts);
  EEP_CHECK(p.num_ranks == size, ErrorCode::kInvalidArgument, "placement size mismatch");
  log_->info("configure: generation {} rank {}/{}", gen, rank, size);
  group_.reset();  // old communicators go before new ones are made
  backend_->load_experts(*weights_, p, rank);
  GlooGroupOptions go;
  go.name = "eep/g" + std::to_string(gen);
  go.rank = rank;
  go.size = size;
  go.host = opts_.comm_host;
  go.timeout = opts_.collective_timeout;
  group_ = make_gloo_group(*store_, go);
  placement_ = std::move(p);
  rank_ = rank;
  generation_ = gen;
  wave_ = proto::get_int(msg, "wave");
  paused_ = true;
  configured_ = true;
  send({{"type", "ready"}, {"generation", gen}, {"rank", rank}});
}

void Engine::add_request(const proto::Body& msg) {
  Sequence seq = decode_add(msg);
  std::string rid = seq.id;
  try {
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

void Engine::step() {
  std::vector<ScheduledChunk> chunks = sched_->schedule();
  int64_t active[1] = {sched_->has_work() ? 1 : 0};
  try {
    group_->allreduce_sum(active, 1);
  } catch (const Error& e) {
    fail_group(e.what());
    return;
  }
  if (active[0] == 0) {
    // The whole group is idle: end the wave. Rank 0 tells the coordinator.
    ++wave_;
    paused_ = true;
    if (rank_ == 0) send({{"type", "wave_idle"}, {"wave", wave_}});
    return;
  }
  // Flatten the chunks into one batch.
  StepBatch batch;
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
  std::vector<float> logits;
  try {
    backend_->forward(batch, *group_, logits);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kInternal) throw;
    fail_group(e.what());
    return;
  }
  ++steps_;
  const int vocab = weights_->config().vocab_size;
  std::vector<int32_t> sampled;
  size_t li = 0;
  for (const ScheduledChunk& c : chunks) {
    if (!c.sample) continue;
    int64_t position = c.seq->total_len();  // index of the token being generated
    sampled.push_back(sample_token(&logits[li * vocab], vocab, c.seq->params, position));
    ++li;
  }
  // Stream what this step produced before completing (complete() moves finished sequences out).
  std::map<std::string, proto::Body> items;
  {
    size_t si = 0;
    for (const ScheduledChunk& c : chunks) {
      if (!c.sample) continue;
      items[c.seq->id] = {{"rid", c.seq->id}, {"tokens", {sampled[si++]}}, {"finish", ""}};
    }
  }
  for (Sequence& done : sched_->complete(chunks, sampled)) {
    auto it = items.find(done.id);
    if (it == items.end()) continue;
    it->second["finish"] = finish_reason_name(done.finish);
  }
  if (!items.empty()) {
    proto::Body arr = proto::Body::array();
    for (auto& [id, item] : items) arr.push_back(std::move(item));
    send({{"type", "outputs"}, {"rank", rank_}, {"items", std::move(arr)}});
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

}  // namespace

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
