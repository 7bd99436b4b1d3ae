// Local engine launcher (eep-coord --spawn): starts eep-engine processes with Boost.Process and
// stops them on shutdown (shutdown message first, then SIGTERM, then SIGKILL).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace eep {

class Launcher {
 public:
  // engine_bin may be empty: then it is looked up next to argv0 (install layout and build tree),
  // then on PATH. Throws Error(kInvalidArgument) when no eep-engine can be found.
  Launcher(const std::string& engine_bin, const std::string& argv0);
  // A launcher for --launch-cmd only: no eep-engine binary needed here.
  Launcher();
  ~Launcher();

  const std::string& engine_bin() const { return bin_; }
  // Starts one engine with the given arguments; returns its pid.
  int spawn(const std::vector<std::string>& args);
  // Starts `command` through /bin/sh -c with extra environment variables (launch templates for
  // srun, systemd-run, ssh); returns the shell's pid.
  int spawn_shell(const std::string& command, const std::vector<std::pair<std::string, std::string>>& env);
  // Pids of children that have exited since the last call (reaped).
  std::vector<int> reap_exited();
  // Waits up to grace for every child to exit, then SIGTERM, then SIGKILL.
  void stop_all(std::chrono::milliseconds grace);
  size_t num_running();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string bin_;
};

}  // namespace eep
