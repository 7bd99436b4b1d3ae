// Reply construction and typed field access shared by every protocol endpoint.
#include <string>
#include <vector>

#include "eep/proto.h"

namespace eep::proto {

namespace {

Body reply_base(const Body& to, const char* status) {
  Body r = Body::object();
  r["v"] = kProtocolVersion;
  // A request without a usable type still gets a well-formed reply rather than an exception:
  // the point of a reply is to tell the sender what went wrong.
  auto t = to.is_object() ? to.find("type") : to.end();
  r["type"] = (to.is_object() && t != to.end() && t->is_string())
                  ? t->get<std::string>() + "_reply"
                  : std::string("error");
  if (to.is_object()) {
    auto seq = to.find("seq");
    if (seq != to.end()) r["seq"] = *seq;
  }
  r["status"] = status;
  return r;
}

const Body& field(const Body& b, const char* name) {
  if (!b.is_object()) throw Error(ErrorCode::kProtocol, "body is not a map");
  auto it = b.find(name);
  if (it == b.end()) throw Error(ErrorCode::kProtocol, std::string("missing field \"") + name + "\"");
  return *it;
}

}  // namespace

Body ok_reply(const Body& to, Body fields) {
  Body r = reply_base(to, "ok");
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) {
      if (k == "v" || k == "type" || k == "seq" || k == "status") continue;  // envelope wins
      r[k] = std::move(v);
    }
  }
  return r;
}

Body error_reply(const Body& to, ErrorCode code, const std::string& message) {
  Body r = reply_base(to, "error");
  r["code"] = error_code_name(code);
  r["message"] = message;
  return r;
}

Body error_reply_undecodable(const std::string& message) {
  return error_reply(Body(), ErrorCode::kProtocol, message);
}

void throw_if_error(const Body& reply) {
  if (!reply.is_object()) throw Error(ErrorCode::kProtocol, "reply is not a map");
  auto s = reply.find("status");
  if (s == reply.end() || !s->is_string())
    throw Error(ErrorCode::kProtocol, "reply has no string \"status\"");
  if (*s == "ok") return;
  if (*s != "error")
    throw Error(ErrorCode::kProtocol, "reply status \"" + s->get<std::string>() + "\" is neither ok nor error");
  auto c = reply.find("code");
  auto m = reply.find("message");
  ErrorCode code = (c != reply.end() && c->is_string()) ? error_code_from_name(c->get<std::string>())
                                                        : ErrorCode::kInternal;
  std::string message = (m != reply.end() && m->is_string()) ? m->get<std::string>()
                                                             : std::string("error reply without message");
  throw Error(code, message);
}

int64_t get_int(const Body& b, const char* name) {
  const Body& v = field(b, name);
  if (!v.is_number_integer())
    throw Error(ErrorCode::kProtocol, std::string("field \"") + name + "\" is not an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    throw Error(ErrorCode::kInvalidArgument, std::string("field \"") + name + "\" is out of range");
  return v.get<int64_t>();
}

std::optional<int64_t> get_opt_int(const Body& b, const char* name) {
  if (!b.is_object()) throw Error(ErrorCode::kProtocol, "body is not a map");
  auto it = b.find(name);
  if (it == b.end() || it->is_null()) return std::nullopt;
  return get_int(b, name);
}

double get_number(const Body& b, const char* name) {
  const Body& v = field(b, name);
  if (!v.is_number())
    throw Error(ErrorCode::kProtocol, std::string("field \"") + name + "\" is not a number");
  return v.get<double>();
}

std::string get_string(const Body& b, const char* name) {
  const Body& v = field(b, name);
  if (!v.is_string())
    throw Error(ErrorCode::kProtocol, std::string("field \"") + name + "\" is not a string");
  return v.get<std::string>();
}

std::vector<int64_t> get_int_array(const Body& b, const char* name) {
  const Body& v = field(b, name);
  if (!v.is_array())
    throw Error(ErrorCode::kProtocol, std::string("field \"") + name + "\" is not an array");
  std::vector<int64_t> out;
  out.reserve(v.size());
  for (const auto& e : v) {
    if (!e.is_number_integer() ||
        (e.is_number_unsigned() && e.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)))
      throw Error(ErrorCode::kProtocol, std::string("field \"") + name + "\" has a non-integer element");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

}  // namespace eep::proto
