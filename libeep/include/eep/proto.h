// The wire protocol (man/eep-protocol.7): ZMQ frames whose last frame is a msgpack map
// {"v": kProtocolVersion, "type": "...", ...fields}. In memory a body is an nlohmann::json value;
// on the wire it is msgpack. Every reply carries "status": "ok"|"error" and, on error, "code"
// (error_code_name) and "message".
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "eep/common.h"

namespace eep::proto {

inline constexpr int kProtocolVersion = 1;
inline constexpr size_t kMaxBodyBytes = 64 << 20;  // larger bodies are refused as malformed

using Body = nlohmann::json;

// Encodes a body to msgpack (adds "v" when missing).
std::string encode(const Body& body);
// Decodes and validates the envelope: a msgpack map with an integer "v" equal to
// kProtocolVersion and a string "type". Throws Error(kProtocol, "...") naming the problem.
Body decode(const void* data, size_t size);
inline Body decode(const zmq::message_t& m) { return decode(m.data(), m.size()); }

// Reply bodies. `to` is the request: its "type" + "_reply" becomes the reply type, and its
// "seq" (if any) is echoed so clients can match replies to requests.
Body ok_reply(const Body& to, Body fields = Body::object());
Body error_reply(const Body& to, ErrorCode code, const std::string& message);
// Error reply for bytes that could not be decoded at all (type "error").
Body error_reply_undecodable(const std::string& message);
// Throws Error(code from reply, message) if reply["status"] == "error".
void throw_if_error(const Body& reply);

// Typed field access for validation: throws Error(kProtocol or kInvalidArgument) naming the
// field when it is missing or of the wrong type.
int64_t get_int(const Body& b, const char* field);
std::optional<int64_t> get_opt_int(const Body& b, const char* field);
double get_number(const Body& b, const char* field);
std::string get_string(const Body& b, const char* field);
std::vector<int64_t> get_int_array(const Body& b, const char* field);

// Sends a body on a socket; for a ROUTER pass the peer identity.
void send(zmq::socket_t& sock, const Body& body);
void send_to(zmq::socket_t& sock, const std::string& identity, const Body& body);
// Receives one message from a DEALER socket (one or more frames, the last is the body).
// Returns nullopt on timeout. Throws Error(kProtocol) on a malformed body.
std::optional<Body> recv(zmq::socket_t& sock, std::chrono::milliseconds timeout);

}  // namespace eep::proto
