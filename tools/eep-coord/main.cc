// eep-coord: the coordinator (rendezvous store, engine registry, request routing, DP waves).
#include <unistd.h>

#include "eep/cli.h"
#include "eep/common.h"
#include "eep/coord.h"

int main(int argc, char** argv) {
  eep::CoordOptions o;
  o.argv0 = argv[0];
  CLI::App app{"eep-coord: coordinator of an eep deployment (store, registry, routing, waves)",
               "eep-coord"};
  eep::cli::add_version_flag(app);
  app.add_option("--bind", o.bind, "ZMQ endpoint to listen on")
      ->envname("EEP_BIND")->capture_default_str();
  app.add_option("--spawn", o.spawn, "start N local engines (needs --model)")
      ->envname("EEP_SPAWN")->check(CLI::Range(0, 1024));
  app.add_option("--engines", o.engines,
                 "engines to wait for before serving (default: --spawn, else 1)")
      ->envname("EEP_ENGINES")->check(CLI::Range(0, 1024));
  app.add_option("--model", o.model, "model for spawned engines: preset:NAME or a checkpoint dir")
      ->envname("EEP_MODEL");
  app.add_option("--backend", o.backend, "backend of spawned engines")
      ->envname("EEP_BACKEND")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--seed", o.seed, "synthetic-weight seed of spawned engines")
      ->envname("EEP_SEED")->capture_default_str();
  app.add_option("--engine-bin", o.engine_bin, "eep-engine binary to spawn")
      ->envname("EEP_ENGINE_BIN");
  app.add_option("--engine-arg", o.engine_args, "extra flag for spawned engines (repeatable)")
      ->envname("EEP_ENGINE_ARGS")->allow_extra_args(false);
  app.add_option("--launch-cmd", o.launch_cmd,
                 "start engines with this shell command template instead of eep-engine "
                 "({coord} {model} {seed} {backend} {device} {index})")
      ->envname("EEP_LAUNCH_CMD");
  app.add_option("--redundant", o.redundant, "redundant expert slots beyond the expert count")
      ->envname("EEP_REDUNDANT")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  app.add_option("--max-engines", o.max_engines, "largest size a scale-up may ask for")
      ->envname("EEP_MAX_ENGINES")->check(CLI::Range(1, 4096))->capture_default_str();
  int64_t hb_ms = o.heartbeat_timeout.count(), queue_ms = o.queue_timeout.count(),
          start_ms = o.start_timeout.count(), scale_ms = o.scale_timeout.count();
  app.add_option("--scale-timeout-ms", scale_ms, "a scale operation not done by then rolls back")
      ->envname("EEP_SCALE_TIMEOUT_MS")->check(CLI::Range(int64_t{100}, int64_t{86400000}))
      ->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", hb_ms, "an engine silent this long is dead")
      ->envname("EEP_HEARTBEAT_TIMEOUT_MS")->check(CLI::Range(int64_t{100}, int64_t{3600000}))
      ->capture_default_str();
  app.add_option("--queue-timeout-ms", queue_ms, "a request waits this long for an engine")
      ->envname("EEP_QUEUE_TIMEOUT_MS")->check(CLI::Range(int64_t{1}, int64_t{86400000}))
      ->capture_default_str();
  app.add_option("--start-timeout-ms", start_ms, "engines must be ready within this")
      ->envname("EEP_START_TIMEOUT_MS")->check(CLI::Range(int64_t{1}, int64_t{86400000}))
      ->capture_default_str();
  int64_t hold_ms = 0;
  app.add_option("--test-commit-hold-ms", hold_ms,
                 "tests only: hold each scale operation in phase committing this long after "
                 "every engine switched")
      ->check(CLI::Range(int64_t{0}, int64_t{600000}))->capture_default_str();
  if (auto code = eep::cli::parse(app, argc, argv)) return *code;
  o.test_commit_hold = std::chrono::milliseconds(hold_ms);
  if (o.spawn > 0 && o.model.empty() && o.launch_cmd.empty()) {
    std::fprintf(stderr, "eep-coord: --spawn needs --model\n");
    return eep::kExitUsage;
  }
  o.heartbeat_timeout = std::chrono::milliseconds(hb_ms);
  o.queue_timeout = std::chrono::milliseconds(queue_ms);
  o.start_timeout = std::chrono::milliseconds(start_ms);
  o.scale_timeout = std::chrono::milliseconds(scale_ms);
  return eep::run_coord(o);
}
