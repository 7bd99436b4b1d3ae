// eep-scale: operate a running deployment: status, expert-load stats, shutdown. Reconfigure
// (to/up/down) and apply come with the elastic-scaling work and say so.
#include <cstdio>
#include <iostream>

#include "eep/cli.h"
#include "eep/client.h"
#include "eep/common.h"

namespace {

void print_status_table(const nlohmann::json& s) {
  std::printf("size %d  generation %lld  %s  wave %lld  open requests %lld (queued %lld)\n",
              s.value("size", 0), static_cast<long long>(s.value("generation", 0)),
              s.value("serving", false) ? "serving" : "not serving",
              static_cast<long long>(s.value("wave", 0)),
              static_cast<long long>(s.value("requests_open", 0)),
              static_cast<long long>(s.value("requests_queued", 0)));
  std::printf("%-6s %-5s %-8s %-12s %-8s %-9s %-8s %-8s %s\n", "ENGINE", "RANK", "PID", "STATE",
              "BACKEND", "KV_BLOCKS", "FREE", "ASSIGNED", "STEPS");
  for (const auto& e : s.value("engines", nlohmann::json::array()))
    std::printf("%-6lld %-5d %-8d %-12s %-8s %-9d %-8d %-8d %lld\n",
                static_cast<long long>(e.value("engine_id", 0)), e.value("rank", -1),
                e.value("pid", 0), e.value("state", "").c_str(), e.value("backend", "").c_str(),
                e.value("num_kv_blocks", 0), e.value("free_blocks", 0), e.value("assigned", 0),
                static_cast<long long>(e.value("steps", 0)));
}

}  // namespace

int main(int argc, char** argv) {
  std::string coord = "tcp://127.0.0.1:5555";
  int64_t timeout_ms = 10000;
  bool json = false, plan = false;
  CLI::App app{"eep-scale: operate a running eep deployment", "eep-scale"};
  eep::cli::add_version_flag(app);
  app.add_option("--coord", coord, "coordinator endpoint")->envname("EEP_COORD")->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "give up waiting for the coordinator after this")
      ->envname("EEP_TIMEOUT_MS")->check(CLI::Range(int64_t{1}, int64_t{86400000}))->capture_default_str();
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "show size, ranks, phase and engines");
  status->add_flag("--json", json, "print the raw status as JSON");
  status->add_flag("--plan", plan, "print the current placement plan as JSON (eep-eplb --current)");
  app.add_subcommand("stats", "dump recorded expert load as JSON (eep-eplb input)");
  app.add_subcommand("shutdown", "stop the coordinator and its spawned engines");
  for (const char* name : {"to", "up", "down", "apply"}) {
    auto* s = app.add_subcommand(name, std::string(name) + " (not implemented yet in this version)");
    s->allow_extras();
  }
  if (auto code = eep::cli::parse(app, argc, argv)) return *code;

  const std::string sub = app.get_subcommands().front()->get_name();
  if (sub == "to" || sub == "up" || sub == "down" || sub == "apply") {
    std::fprintf(stderr, "eep-scale: '%s' is not implemented yet in this version\n", sub.c_str());
    return eep::kExitRuntime;
  }
  try {
    eep::Client client(coord);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    if (sub == "status") {
      auto s = client.call({{"type", "status"}}, timeout);
      if (plan) {
        if (!s.contains("placement")) throw eep::Error(eep::ErrorCode::kUnavailable, "no group has formed yet");
        std::cout << s["placement"].dump() << "\n";
      } else if (json) {
        s.erase("v");
        s.erase("seq");
        std::cout << s.dump() << "\n";
      } else {
        print_status_table(s);
      }
    } else if (sub == "stats") {
      auto s = client.call({{"type", "stats"}}, timeout);
      for (const char* k : {"v", "seq", "type", "status"}) s.erase(k);
      std::cout << s.dump() << "\n";
    } else if (sub == "shutdown") {
      client.call({{"type", "shutdown"}}, timeout);
    }
  } catch (const eep::Error& e) {
    std::fprintf(stderr, "eep-scale: %s\n", e.what());
    return e.code() == eep::ErrorCode::kInvalidArgument ? eep::kExitUsage : eep::kExitRuntime;
  }
  return eep::kExitOk;
}
