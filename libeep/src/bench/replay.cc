// eep-bench replay: send JSON-lines requests concurrently, write one JSON line per finished
// request (id, tokens, finish_reason, ttft_ms, total_ms, and error/code when it failed).
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "eep/bench.h"
#include "eep/cli.h"
#include "eep/client.h"
#include "eep/common.h"
#include "eep/request.h"

namespace eep::bench {

namespace {

struct Pending {
  nlohmann::json body;  // the submit message
  std::string id;
  Clock::time_point sent;
  std::optional<Clock::time_point> first_token;
  std::vector<int32_t> tokens;
};

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Reads and checks every line before anything is sent: a bad line stops the run with exit 2.
std::vector<nlohmann::json> read_requests(std::istream& in, const std::string& name) {
  std::vector<nlohmann::json> out;
  std::set<std::string> ids;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::kInvalidArgument,
                  name + ":" + std::to_string(lineno) + ": not JSON: " + e.what());
    }
    if (!j.is_object())
      throw Error(ErrorCode::kInvalidArgument, name + ":" + std::to_string(lineno) + ": not an object");
    if (!j.contains("id")) j["id"] = std::to_string(lineno);
    if (j["id"].is_number()) j["id"] = j["id"].dump();
    if (!j["id"].is_string())
      throw Error(ErrorCode::kInvalidArgument, name + ":" + std::to_string(lineno) + ": id must be a string or number");
    if (!ids.insert(j["id"].get<std::string>()).second)
      throw Error(ErrorCode::kInvalidArgument, name + ":" + std::to_string(lineno) + ": duplicate id " + j["id"].dump());
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

int run_replay(int argc, char** argv) {
  std::string coord = "tcp://127.0.0.1:5555", file = "-";
  int concurrency = 0;
  int64_t timeout_ms = 300000;
  CLI::App app{"eep-bench replay: send JSON-lines requests, print one JSON line per result",
               "eep-bench replay"};
  eep::cli::add_version_flag(app);
  app.add_option("--coord", coord, "coordinator endpoint")->envname("EEP_COORD")->capture_default_str();
  app.add_option("--concurrency", concurrency, "requests in flight at once (0: all)")
      ->envname("EEP_CONCURRENCY")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "a request not finished by then fails")
      ->envname("EEP_TIMEOUT_MS")->check(CLI::Range(int64_t{1}, int64_t{86400000}))->capture_default_str();
  app.add_option("file", file, "requests as JSON lines ('-' = stdin)")->capture_default_str();
  if (auto code = cli::parse(app, argc, argv)) return *code;

  std::vector<nlohmann::json> reqs;
  try {
    if (file == "-") {
      reqs = read_requests(std::cin, "stdin");
    } else {
      std::ifstream in(file);
      if (!in) throw Error(ErrorCode::kInvalidArgument, "cannot read " + file);
      reqs = read_requests(in, file);
    }
  } catch (const Error& e) {
    std::cerr << "eep-bench replay: " << e.what() << "\n";
    return kExitUsage;
  }

  std::unique_ptr<Client> client_ptr;
  try {
    client_ptr = std::make_unique<Client>(coord);
  } catch (const Error& e) {
    std::cerr << "eep-bench replay: " << e.what() << "\n";
    return kExitUsage;
  }
  Client& client = *client_ptr;
  std::map<std::string, Pending> open;
  std::map<int64_t, std::string> id_of_seq;  // submit replies are matched by seq
  size_t next = 0, num_failed = 0;
  const size_t limit = concurrency > 0 ? static_cast<size_t>(concurrency) : reqs.size();
  auto emit = [&](Pending& p, const std::string& finish, const nlohmann::json& err) {
    auto now = Clock::now();
    nlohmann::json out = {{"id", p.id},
                          {"tokens", p.tokens},
                          {"finish_reason", finish},
                          {"ttft_ms", p.first_token ? ms_between(p.sent, *p.first_token) : -1.0},
                          {"total_ms", ms_between(p.sent, now)}};
    if (!err.is_null()) {
      out["code"] = err.value("code", "internal");
      out["error"] = err.value("error", err.value("message", "failed"));
      ++num_failed;
    }
    std::cout << out.dump() << "\n" << std::flush;
  };
  auto last_progress = Clock::now();
  while (next < reqs.size() || !open.empty()) {
    while (next < reqs.size() && open.size() < limit) {
      nlohmann::json body = reqs[next++];
      body["type"] = "submit";
      Pending p;
      p.id = body["id"].get<std::string>();
      p.sent = Clock::now();
      id_of_seq[client.send(body)] = p.id;
      open[p.id] = std::move(p);
    }
    auto msg = client.recv(std::chrono::milliseconds(200));
    auto now = Clock::now();
    if (msg) {
      last_progress = now;
      const std::string type = msg->value("type", "");
      std::string id = msg->value("id", "");
      if (type == "submit_reply") {
        auto s = id_of_seq.find(msg->value("seq", int64_t{-1}));
        if (s != id_of_seq.end()) {
          id = s->second;
          id_of_seq.erase(s);
        }
      }
      auto it = open.find(id);
      if (type == "submit_reply" && it != open.end() && msg->value("status", "") == "error") {
        emit(it->second, "error", {{"code", msg->value("code", "")}, {"error", msg->value("message", "")}});
        open.erase(it);
      } else if (type == "tokens" && it != open.end()) {
        Pending& p = it->second;
        auto toks = msg->value("tokens", std::vector<int32_t>{});
        if (!toks.empty() && !p.first_token) p.first_token = now;
        p.tokens.insert(p.tokens.end(), toks.begin(), toks.end());
        std::string finish = msg->value("finish", "");
        if (!finish.empty()) {
          nlohmann::json err;
          if (finish == "error" || msg->contains("error"))
            err = {{"code", msg->value("code", "internal")}, {"error", msg->value("error", "")}};
          emit(p, finish, err);
          open.erase(it);
        }
      } else if (type == "error") {
        std::cerr << "eep-bench replay: coordinator: " << msg->value("message", "") << "\n";
      }
    }
    // Requests past their deadline fail here rather than wait forever.
    for (auto it = open.begin(); it != open.end();) {
      if (ms_between(it->second.sent, now) > static_cast<double>(timeout_ms)) {
        client.send({{"type", "abort"}, {"id", it->first}});
        emit(it->second, "error", {{"code", "timeout"}, {"error", "no result within --timeout-ms"}});
        it = open.erase(it);
      } else {
        ++it;
      }
    }
    (void)last_progress;
  }
  return num_failed == 0 ? kExitOk : kExitRuntime;
}

}  // namespace eep::bench
