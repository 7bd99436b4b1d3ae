// Shared error type, exit codes and logging for every libeep subsystem and tool.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

#include <spdlog/logger.h>

namespace eep {

// Stable, documented exit codes of every tool (see the man pages).
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;  // runtime failure: peer gone, timeout, I/O error
inline constexpr int kExitUsage = 2;    // bad flags or bad input

inline constexpr const char* kVersion = EEP_VERSION;

using Clock = std::chrono::steady_clock;

// Error codes carried in exceptions and in protocol error replies (man/eep-protocol.7).
enum class ErrorCode {
  kInvalidArgument,    // the caller sent a value that can never work
  kNotFound,           // unknown key, request, rank
  kTimeout,            // a wait ran out
  kUnavailable,        // peer gone, no engine, cluster shutting down
  kResourceExhausted,  // does not fit (KV cache, slots)
  kProtocol,           // malformed message, unknown type, wrong version
  kAborted,            // cancelled by the client or by a rollback
  kConflict,           // a concurrent operation holds the resource
  kInternal,           // a bug: an invariant broke
};

const char* error_code_name(ErrorCode code);
// Parses the name error_code_name() returns; kInternal for anything unknown.
ErrorCode error_code_from_name(const std::string& name);

// The one exception type of libeep: a code plus a message that names the problem.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Throws Error(code, message) when cond is false.
#define EEP_CHECK(cond, code, message)                                    \
  do {                                                                    \
    if (!(cond)) throw ::eep::Error((code), (message));                  \
  } while (0)

// Logger of one subsystem ("store", "engine", "coord", ...), writing to stderr. The level comes
// from EEP_LOG_LEVEL (trace|debug|info|warn|error|off, default info); EEP_LOG_LEVEL may also list
// per-subsystem levels: "info,engine=debug,store=trace".
std::shared_ptr<spdlog::logger> logger(const std::string& subsystem);

}  // namespace eep
