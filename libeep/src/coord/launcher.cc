#include "coord/launcher.h"

#include <signal.h>
#include <unistd.h>

#include <boost/filesystem.hpp>
#include <boost/process.hpp>
#include <thread>

#include "eep/common.h"

namespace bp = boost::process;
namespace fs = boost::filesystem;

namespace eep {

struct Launcher::Impl {
  std::vector<bp::child> children;
};

namespace {
std::string find_engine(const std::string& explicit_bin, const std::string& argv0) {
  if (!explicit_bin.empty()) {
    EEP_CHECK(fs::exists(explicit_bin), ErrorCode::kInvalidArgument,
              "engine binary " + explicit_bin + " does not exist");
    return fs::absolute(explicit_bin).string();
  }
  if (!argv0.empty()) {
    fs::path self = fs::absolute(argv0).parent_path();
    for (fs::path candidate : {self / "eep-engine", self / ".." / "eep-engine" / "eep-engine"}) {
      if (fs::exists(candidate)) return fs::canonical(candidate).string();
    }
  }
  fs::path on_path = bp::search_path("eep-engine");
  EEP_CHECK(!on_path.empty(), ErrorCode::kInvalidArgument,
            "cannot find eep-engine (next to eep-coord or on PATH); give --engine-bin");
  return on_path.string();
}
}  // namespace

Launcher::Launcher(const std::string& engine_bin, const std::string& argv0)
    : impl_(std::make_unique<Impl>()), bin_(find_engine(engine_bin, argv0)) {}

Launcher::Launcher() : impl_(std::make_unique<Impl>()) {}

int Launcher::spawn_shell(const std::string& command,
                          const std::vector<std::pair<std::string, std::string>>& env) {
  bp::environment e = boost::this_process::environment();
  for (const auto& [k, v] : env) e[k] = v;
  impl_->children.emplace_back("/bin/sh", bp::args({"-c", command}), e);
  return impl_->children.back().id();
}

Launcher::~Launcher() { stop_all(std::chrono::milliseconds(2000)); }

int Launcher::spawn(const std::vector<std::string>& args) {
  impl_->children.emplace_back(bin_, bp::args(args));
  return impl_->children.back().id();
}

std::vector<int> Launcher::reap_exited() {
  std::vector<int> gone;
  for (auto it = impl_->children.begin(); it != impl_->children.end();) {
    std::error_code ec;
    if (!it->running(ec)) {
      gone.push_back(it->id());
      it->wait(ec);
      it = impl_->children.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

size_t Launcher::num_running() {
  reap_exited();
  return impl_->children.size();
}

void Launcher::stop_all(std::chrono::milliseconds grace) {
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (num_running() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (auto& c : impl_->children) ::kill(c.id(), SIGTERM);
  deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(2000);
  while (num_running() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (auto& c : impl_->children) {
    std::error_code ec;
    c.terminate(ec);  // SIGKILL
    c.wait(ec);
  }
  impl_->children.clear();
}

}  // namespace eep
