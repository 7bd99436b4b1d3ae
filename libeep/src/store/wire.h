// Field helpers shared by the store server (handler, waiters) and client.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eep/store.h"

namespace eep::store_wire {

// Server-side default and cap for "timeout_ms" of get/wait.
inline constexpr std::chrono::milliseconds kDefaultWaitTimeout = std::chrono::seconds(30);
inline constexpr std::chrono::milliseconds kMaxWaitTimeout = std::chrono::hours(1);

Bytes get_bytes(const nlohmann::json& req, const char* name);  // bin or str
nlohmann::json to_bin(const Bytes& b);
std::vector<std::string> get_keys(const nlohmann::json& req);  // "keys" or ["key"]
std::chrono::milliseconds get_timeout(const nlohmann::json& req);
std::string describe(const nlohmann::json& req);  // "store wait a,b" for messages

}  // namespace eep::store_wire
