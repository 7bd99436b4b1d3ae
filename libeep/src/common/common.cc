#include "eep/common.h"

#include <malloc.h>

#include "eep/alloc.h"

#include <cstdlib>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace eep {

namespace {
constexpr const char* kErrorNames[] = {"invalid_argument", "not_found",  "timeout",
                                       "unavailable",      "resource_exhausted", "protocol",
                                       "aborted",          "conflict",   "internal"};

// Level for one subsystem from EEP_LOG_LEVEL ("info,engine=debug").
spdlog::level::level_enum level_for(const std::string& subsystem) {
  const char* env = std::getenv("EEP_LOG_LEVEL");
  spdlog::level::level_enum level = spdlog::level::info;
  if (env == nullptr) return level;
  std::stringstream ss(env);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto eq = item.find('=');
    if (eq == std::string::npos) {
      level = spdlog::level::from_str(item);
    } else if (item.substr(0, eq) == subsystem) {
      return spdlog::level::from_str(item.substr(eq + 1));
    }
  }
  return level;
}
}  // namespace

const char* error_code_name(ErrorCode code) { return kErrorNames[static_cast<int>(code)]; }

ErrorCode error_code_from_name(const std::string& name) {
  for (size_t i = 0; i < std::size(kErrorNames); ++i)
    if (name == kErrorNames[i]) return static_cast<ErrorCode>(i);
  return ErrorCode::kInternal;
}

std::shared_ptr<spdlog::logger> logger(const std::string& subsystem) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (auto existing = spdlog::get(subsystem)) return existing;
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto log = std::make_shared<spdlog::logger>(subsystem, sink);
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  log->set_level(level_for(subsystem));
  spdlog::register_logger(log);
  return log;
}

void keep_large_buffers_in_heap() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

}  // namespace eep
