// eep-scale: operate a running deployment: change its size (to/up/down), rebalance it to a plan
// (apply), show status and expert-load stats, shut it down.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "eep/cli.h"
#include "eep/client.h"
#include "eep/common.h"

namespace {

using Ms = std::chrono::milliseconds;

void print_status_table(const nlohmann::json& s) {
  std::printf("size %d  generation %lld  %s  wave %lld  open requests %lld (queued %lld)\n",
              s.value("size", 0), static_cast<long long>(s.value("generation", 0)),
              s.value("serving", false) ? "serving" : "not serving",
              static_cast<long long>(s.value("wave", 0)),
              static_cast<long long>(s.value("requests_open", 0)),
              static_cast<long long>(s.value("requests_queued", 0)));
  if (s.contains("scale")) {
    const auto& op = s["scale"];
    std::printf("scale %s: %d -> %d, phase %s\n", op.value("id", "").c_str(), op.value("from", 0),
                op.value("to", 0), op.value("phase", "").c_str());
  }
  std::printf("%-6s %-5s %-8s %-12s %-8s %-9s %-8s %-8s %s\n", "ENGINE", "RANK", "PID", "STATE",
              "BACKEND", "KV_BLOCKS", "FREE", "ASSIGNED", "STEPS");
  for (const auto& e : s.value("engines", nlohmann::json::array()))
    std::printf("%-6lld %-5d %-8d %-12s %-8s %-9d %-8d %-8d %lld\n",
                static_cast<long long>(e.value("engine_id", 0)), e.value("rank", -1),
                e.value("pid", 0), e.value("state", "").c_str(), e.value("backend", "").c_str(),
                e.value("num_kv_blocks", 0), e.value("free_blocks", 0), e.value("assigned", 0),
                static_cast<long long>(e.value("steps", 0)));
}

nlohmann::json strip(nlohmann::json j) {
  for (const char* k : {"v", "seq", "type", "status"}) j.erase(k);
  return j;
}

// Polls the operation (`st`: its state when accepted) until it is done or `deadline` passes,
// printing each phase as it completes.
int wait_for(eep::Client& client, nlohmann::json st, eep::Clock::time_point deadline, bool show) {
  const std::string id = st.value("id", "");
  size_t shown = 0;
  for (bool first = true;; first = false) {
    bool out_of_time = false;
    if (!first) {
      // Rounded up, so a poll bounded by the deadline does not end a fraction of a millisecond
      // before it (which once made a deadline-bound timeout look like a lost coordinator).
      const auto left = std::chrono::ceil<Ms>(deadline - eep::Clock::now());
      const auto poll = std::clamp(left, Ms(1), Ms(5000));
      try {
        st = client.call({{"type", "scale_status"}, {"id", id}}, poll);
      } catch (const eep::Error& e) {
        // A poll cut short by the deadline: report the last state known, below. A poll that
        // timed out with time to spare means the coordinator stopped answering: an error.
        if (e.code() != eep::ErrorCode::kTimeout || poll < left) throw;
        out_of_time = true;
      }
    }
    const auto& phases = st["phases"];
    for (; show && shown < phases.size(); ++shown)
      std::fprintf(stderr, "  %-12s %8.1f ms\n", phases[shown].value("phase", "").c_str(),
                   phases[shown].value("ms", 0.0));
    if (st.value("done", false)) {
      if (st.value("phase", "") == "failed") {
        std::fprintf(stderr, "eep-scale: operation %s failed: %s\n", id.c_str(),
                     st.value("error", "").c_str());
        return eep::kExitRuntime;
      }
      if (show)
        std::fprintf(stderr, "eep-scale: %d -> %d serving after %.1f ms\n", st.value("from", 0),
                     st.value("to", 0), st.value("elapsed_ms", 0.0));
      std::cout << strip(st).dump() << "\n";
      return eep::kExitOk;
    }
    if (out_of_time || eep::Clock::now() >= deadline) {
      std::fprintf(stderr, "eep-scale: operation %s still in phase %s after --timeout-ms; it "
                           "goes on in the coordinator (check with 'eep-scale status')\n",
                   id.c_str(), st.value("phase", "").c_str());
      return eep::kExitRuntime;
    }
    std::this_thread::sleep_for(Ms(20));
  }
}

nlohmann::json read_plan(const std::string& path) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) throw eep::Error(eep::ErrorCode::kInvalidArgument, "cannot read plan " + path);
    ss << in.rdbuf();
  }
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw eep::Error(eep::ErrorCode::kInvalidArgument, "plan " + path + " is not JSON: " + e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string coord = "tcp://127.0.0.1:5555", op_id, ranks, plan_path;
  int64_t timeout_ms = 120000;
  int count = 0;
  bool json = false, plan = false, wait = isatty(STDERR_FILENO), no_wait = false;
  CLI::App app{"eep-scale: operate a running eep deployment", "eep-scale"};
  eep::cli::add_version_flag(app);
  app.add_option("--coord", coord, "coordinator endpoint")->envname("EEP_COORD")->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "give up waiting after this")
      ->envname("EEP_TIMEOUT_MS")->check(CLI::Range(int64_t{1}, int64_t{86400000}))->capture_default_str();
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "show size, ranks, phase and engines");
  status->add_flag("--json", json, "print the raw status as JSON");
  status->add_flag("--plan", plan, "print the current placement plan as JSON (eep-eplb --current)");
  app.add_subcommand("stats", "dump recorded expert load as JSON (eep-eplb input)");
  app.add_subcommand("shutdown", "stop the coordinator and its spawned engines");
  auto add_scale = [&](const char* name, const char* help) {
    auto* s = app.add_subcommand(name, help);
    s->add_option("--id", op_id, "operation id: a retry with the same id does not scale twice")
        ->envname("EEP_OP_ID");
    s->add_flag("--wait", wait, "wait until done, showing phases (default on a terminal)");
    s->add_flag("--no-wait", no_wait, "return once the coordinator accepted the request");
    return s;
  };
  add_scale("to", "change the number of engines to N")
      ->add_option("N", count, "new number of engines")->required();
  add_scale("up", "add K engines")->add_option("K", count, "engines to add")->required();
  auto* down = add_scale("down", "remove K engines (the highest ranks unless --ranks)");
  down->add_option("K", count, "engines to remove")->required();
  down->add_option("--ranks", ranks, "comma-separated ranks to remove")->envname("EEP_RANKS");
  add_scale("apply", "rebalance to a placement plan from eep-eplb (same size)")
      ->add_option("PLAN", plan_path, "plan file, or - for stdin")->required();
  if (auto code = eep::cli::parse(app, argc, argv)) return *code;
  if (no_wait) wait = false;

  const std::string sub = app.get_subcommands().front()->get_name();
  try {
    eep::Client client(coord);
    auto timeout = Ms(timeout_ms);
    if (sub == "status") {
      auto s = client.call({{"type", "status"}}, timeout);
      if (plan) {
        if (!s.contains("placement"))
          throw eep::Error(eep::ErrorCode::kUnavailable, "no group has formed yet");
        std::cout << s["placement"].dump() << "\n";
      } else if (json) {
        std::cout << strip(s).dump() << "\n";
      } else {
        print_status_table(s);
      }
    } else if (sub == "stats") {
      std::cout << strip(client.call({{"type", "stats"}}, timeout)).dump() << "\n";
    } else if (sub == "shutdown") {
      client.call({{"type", "shutdown"}}, timeout);
    } else {
      nlohmann::json req = {{"type", "scale"}};
      if (!op_id.empty()) req["id"] = op_id;
      if (sub == "to") req["to"] = count;
      if (sub == "up") req["up"] = count;
      if (sub == "down") {
        req["down"] = count;
        if (!ranks.empty()) {
          nlohmann::json list = nlohmann::json::array();
          std::stringstream ss(ranks);
          std::string item;
          while (std::getline(ss, item, ',')) {
            try {
              size_t used = 0;
              int r = std::stoi(item, &used);
              if (used != item.size()) throw std::invalid_argument(item);
              list.push_back(r);
            } catch (const std::exception&) {
              throw eep::Error(eep::ErrorCode::kInvalidArgument, "--ranks: '" + item + "' is not a rank");
            }
          }
          req["ranks"] = list;
        }
      }
      if (sub == "apply") {
        nlohmann::json p = read_plan(plan_path);
        if (!p.is_object() || !p.contains("phy2log"))
          throw eep::Error(eep::ErrorCode::kInvalidArgument, "plan has no phy2log (is it eep-eplb output?)");
        req["placement"] = p;  // the coordinator checks it fits before anything moves
      }
      // --timeout-ms bounds the whole command: the answer to the request and, with --wait,
      // the operation.
      const auto deadline = eep::Clock::now() + timeout;
      auto accepted = client.call(req, timeout);
      if (!wait) {
        std::cout << strip(accepted).dump() << "\n";
        return eep::kExitOk;
      }
      return wait_for(client, accepted, deadline, true);
    }
  } catch (const eep::Error& e) {
    std::fprintf(stderr, "eep-scale: %s\n", e.what());
    return e.code() == eep::ErrorCode::kInvalidArgument ? eep::kExitUsage : eep::kExitRuntime;
  }
  return eep::kExitOk;
}
