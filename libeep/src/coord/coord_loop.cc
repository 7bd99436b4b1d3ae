// eep-coord's event loop: one ROUTER socket for clients, engines and tools; every message is
// handled to completion on this one thread, so no state here needs a lock.
#include "eep/coord.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <csignal>
#include <optional>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "coord/coordinator.h"
#include "eep/common.h"
#include "eep/proto.h"

namespace eep {

const char* engine_state_name(EngineState s) {
  switch (s) {
    case EngineState::kRegistered: return "registered";
    case EngineState::kConfiguring: return "configuring";
    case EngineState::kReady: return "ready";
    case EngineState::kDead: return "dead";
    case EngineState::kLeft: return "left";
  }
  return "?";
}

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

}  // namespace

Coordinator::Coordinator(const CoordOptions& opts) : opts_(opts), log_(logger("coord")) {
  expected_engines_ = opts.engines > 0 ? opts.engines : (opts.spawn > 0 ? opts.spawn : 1);
}

void Coordinator::send_to(const std::string& identity, const Body& body) {
  try {
    proto::send_to(sock_, identity, body);
  } catch (const Error& e) {
    // ROUTER_MANDATORY: the peer is gone. A client that vanished loses its requests (handled
    // from the loop: send_to runs inside request bookkeeping); an engine that vanished is
    // noticed by its missing heartbeats.
    if (e.code() == ErrorCode::kNotFound) {
      if (client_requests_.count(identity)) gone_clients_.insert(identity);
    } else {
      log_->warn("send to {} failed: {}", peer_name(identity), e.what());
    }
  }
}

int Coordinator::run() {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::router_mandatory, 1);
  sock_.set(zmq::sockopt::sndhwm, 0);
  sock_.set(zmq::sockopt::rcvhwm, 0);
  try {
    sock_.bind(opts_.bind);
  } catch (const zmq::error_t& e) {
    log_->error("cannot bind {}: {}", opts_.bind, e.what());
    return kExitRuntime;
  }
  log_->info("listening on {}; waiting for {} engine(s)", opts_.bind, expected_engines_);

  if (!opts_.launch_cmd.empty()) {
    launcher_ = std::make_unique<Launcher>();
  } else if (opts_.spawn > 0) {
    launcher_ = std::make_unique<Launcher>(opts_.engine_bin, opts_.argv0);
  }
  if (opts_.spawn > 0) spawn_engines(0, opts_.spawn);

  while (!g_stop && !stopping_) {
    zmq::pollitem_t items[] = {{sock_.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, Ms(20));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal: the loop condition sees it
    }
    if (items[0].revents & ZMQ_POLLIN) {
      // Drain what is there, bounded so timers still run under load.
      for (int i = 0; i < 1000; ++i) {
        std::vector<zmq::message_t> frames;
        auto got = zmq::recv_multipart(sock_, std::back_inserter(frames), zmq::recv_flags::dontwait);
        if (!got) break;
        if (frames.size() < 2) continue;
        std::string identity = frames.front().to_string();
        Body msg;
        try {
          msg = proto::decode(frames.back());
        } catch (const Error& e) {
          log_->warn("bad message from peer {}: {}", peer_name(identity), e.what());
          send_to(identity, proto::error_reply_undecodable(e.what()));
          continue;
        }
        try {
          dispatch(identity, msg);
        } catch (const Error& e) {
          log_->warn("{} from {}: {}", msg.value("type", "?"), peer_name(identity), e.what());
          send_to(identity, proto::error_reply(msg, e.code(), e.what()));
        } catch (const nlohmann::json::exception& e) {
          send_to(identity, proto::error_reply(msg, ErrorCode::kProtocol, e.what()));
        }
      }
    }
    poll_store();
    check_liveness();
    poll_planning();
    check_scale_deadline();
    route_pending();
    while (!gone_clients_.empty()) {
      std::string client = *gone_clients_.begin();
      gone_clients_.erase(gone_clients_.begin());
      client_gone(client);
    }
    if (!group_.serving && Clock::now() - started_ > opts_.start_timeout &&
        group_.generation == 0) {
      log_->error("engines did not become ready within {} ms", opts_.start_timeout.count());
      shutdown_engines();
      return kExitRuntime;
    }
  }
  log_->info("shutting down");
  shutdown_engines();
  return kExitOk;
}

std::string peer_name(const std::string& identity) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : identity) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace eep

namespace eep {

void Coordinator::dispatch(const std::string& identity, const Body& msg) {
  const std::string type = proto::get_string(msg, "type");
  // Engines.
  if (type == "register") return on_register(identity, msg);
  if (type == "ready") return on_ready(identity, msg);
  if (type == "heartbeat") return on_heartbeat(identity, msg);
  if (type == "outputs") return on_outputs(identity, msg);
  if (type == "wave_start") {
    // An engine got work while the group rests: wake every member for that wave.
    int64_t wave = proto::get_int(msg, "wave");
    if (wave >= group_.wave) {
      group_.wave = wave;
      group_.wave_running = false;
      wake_group();
    }
    return;
  }
  if (type == "wave_idle") {
    int64_t wave = proto::get_int(msg, "wave");
    if (msg.value("generation", int64_t{-1}) != group_.generation) return;  // an old group's
    if (wave > group_.wave) {
      group_.wave = wave;
      group_.wave_running = false;
    }
    return;
  }
  if (type == "group_failed") {
    log_->warn("engine {} reports its group failed: {}", peer_name(identity),
               msg.value("error", ""));
    // While committing, the old group must stay intact for a rollback to be possible.
    if (op_ && op_->phase == "committing" && msg.value("generation", int64_t{-1}) == group_.generation)
      op_->old_group_failed = true;
    return;  // the dead peer is found by heartbeat or process exit; then the group re-forms
  }
  if (type == "goodbye") {
    // From the main socket; find the engine by id in case it never registered this socket.
    return on_engine_gone(identity, "engine said goodbye");
  }
  if (type == "prepared") return on_prepared(identity, msg);
  if (type == "prepare_failed") return on_prepare_failed(identity, msg);
  if (type == "committed") return on_committed(identity, msg);
  if (type == "left") return on_left(identity, msg);
  if (type == "rolled_back") {
    log_->info("engine {} is back in generation {} as rank {}", msg.value("engine_id", int64_t{-1}),
               group_.generation, msg.value("rank", -1));
    return;
  }
  if (type == "scale") return on_scale(identity, msg);
  if (type == "leave") return on_leave(identity, msg);
  if (type == "scale_status") return on_scale_status(identity, msg);
  // Rendezvous store.
  if (type == "store") return on_store(identity, msg);
  // Clients and tools.
  if (type == "submit") return on_submit(identity, msg);
  if (type == "abort") return on_abort(identity, msg);
  if (type == "status") return on_status(identity, msg);
  if (type == "stats") return on_stats(identity, msg);
  if (type == "shutdown") {
    send_to(identity, proto::ok_reply(msg));
    stopping_ = true;
    return;
  }
  if (type == "ping") return send_to(identity, proto::ok_reply(msg, {{"version", kVersion}}));
  throw Error(ErrorCode::kProtocol, "unknown message type '" + type + "'");
}

std::vector<int> Coordinator::spawn_engines(int first_device, int n) {
  // Engines connect where we listen; a wildcard bind is reached on loopback.
  std::string coord = opts_.bind;
  for (const char* wildcard : {"tcp://*:", "tcp://0.0.0.0:"})
    if (coord.rfind(wildcard, 0) == 0) coord = "tcp://127.0.0.1:" + coord.substr(std::strlen(wildcard));
  std::vector<int> pids;
  for (int i = 0; i < n && !opts_.launch_cmd.empty(); ++i) {
    const std::string device = std::to_string(first_device + i);
    const std::vector<std::pair<std::string, std::string>> vars = {
        {"coord", coord}, {"model", opts_.model}, {"seed", std::to_string(opts_.seed)},
        {"backend", opts_.backend}, {"device", device}, {"index", device}};
    std::string cmd = opts_.launch_cmd;
    for (const auto& [k, v] : vars) {
      const std::string ph = "{" + k + "}";
      for (size_t at = cmd.find(ph); at != std::string::npos; at = cmd.find(ph, at + v.size()))
        cmd.replace(at, ph.size(), v);
    }
    pids.push_back(launcher_->spawn_shell(
        cmd, {{"EEP_COORD", coord}, {"EEP_MODEL", opts_.model},
              {"EEP_SEED", std::to_string(opts_.seed)}, {"EEP_BACKEND", opts_.backend},
              {"EEP_DEVICE", device}}));
    log_->info("launched engine through the template (pid {}): {}", pids.back(), cmd);
  }
  for (int i = 0; i < n && opts_.launch_cmd.empty(); ++i) {
    std::vector<std::string> args = {"--coord",   coord,         "--model",
                                     opts_.model, "--backend",   opts_.backend,
                                     "--seed",    std::to_string(opts_.seed),
                                     "--device",  std::to_string(first_device + i)};
    args.insert(args.end(), opts_.engine_args.begin(), opts_.engine_args.end());
    pids.push_back(launcher_->spawn(args));
    log_->info("spawned engine pid {}", pids.back());
  }
  return pids;
}

void Coordinator::shutdown_engines() {
  for (auto& [identity, e] : engines_)
    if (!is_gone(e.state)) send_to(identity, {{"type", "shutdown"}});
  // Requests still open fail clearly rather than wait forever.
  std::vector<std::string> open;
  for (auto& [rid, r] : requests_) open.push_back(rid);
  for (auto& rid : open)
    finish_request(rid, "error", ErrorCode::kUnavailable, "coordinator is shutting down");
  if (launcher_) launcher_->stop_all(Ms(5000));
}

int run_coord(const CoordOptions& opts) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  try {
    Coordinator c(opts);
    return c.run();
  } catch (const Error& e) {
    logger("coord")->error("{}", e.what());
    return e.code() == ErrorCode::kInvalidArgument ? kExitUsage : kExitRuntime;
  } catch (const std::exception& e) {
    logger("coord")->error("fatal: {}", e.what());
    return kExitRuntime;
  }
}

}  // namespace eep
