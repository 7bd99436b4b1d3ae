// msgpack <-> nlohmann::json codec with strict envelope validation (eep-protocol(7)).
//
// Decoding uses msgpack-c's visitor parser rather than msgpack::unpack: unpack allocates an
// object array sized by each header's element count before reading the elements, so a garbage
// length prefix could request gigabytes. The visitor sees the count first, and we refuse any
// count that the remaining bytes cannot possibly hold (every element takes at least one byte).
#include <cstring>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "eep/proto.h"

namespace eep::proto {

namespace {

using json = nlohmann::json;

constexpr size_t kMaxDepth = 32;  // nesting of arrays/maps; real bodies use 3 or 4

Error protocol_error(const std::string& message) { return Error(ErrorCode::kProtocol, message); }

// msgpack str must be UTF-8; we check because nlohmann::json::dump() throws on invalid UTF-8,
// and a body that is logged or re-encoded as JSON later must not blow up far from the socket.
// Arbitrary bytes belong in msgpack bin.
bool valid_utf8(const char* s, size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(s);
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    // Overlong encodings, surrogates and values past U+10FFFF are invalid.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

// ---- encoding ----

void pack_value(msgpack::packer<msgpack::sbuffer>& pk, const json& v, size_t depth) {
  if (depth > kMaxDepth) throw protocol_error("body nests deeper than " + std::to_string(kMaxDepth));
  switch (v.type()) {
    case json::value_t::null:
    case json::value_t::discarded:
      pk.pack_nil();
      break;
    case json::value_t::boolean:
      if (v.get<bool>()) pk.pack_true(); else pk.pack_false();
      break;
    case json::value_t::number_integer:
      pk.pack_int64(v.get<int64_t>());
      break;
    case json::value_t::number_unsigned:
      pk.pack_uint64(v.get<uint64_t>());
      break;
    case json::value_t::number_float:
      pk.pack_double(v.get<double>());
      break;
    case json::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      if (s.size() > UINT32_MAX) throw protocol_error("string field too large");
      pk.pack_str(static_cast<uint32_t>(s.size()));
      pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
      break;
    }
    case json::value_t::binary: {
      const auto& b = v.get_binary();
      if (b.size() > UINT32_MAX) throw protocol_error("binary field too large");
      pk.pack_bin(static_cast<uint32_t>(b.size()));
      pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
      break;
    }
    case json::value_t::array:
      if (v.size() > UINT32_MAX) throw protocol_error("array field too large");
      pk.pack_array(static_cast<uint32_t>(v.size()));
      for (const auto& e : v) pack_value(pk, e, depth + 1);
      break;
    case json::value_t::object:
      if (v.size() > UINT32_MAX) throw protocol_error("map field too large");
      pk.pack_map(static_cast<uint32_t>(v.size()));
      for (const auto& [k, e] : v.items()) {
        pk.pack_str(static_cast<uint32_t>(k.size()));
        pk.pack_str_body(k.data(), static_cast<uint32_t>(k.size()));
        pack_value(pk, e, depth + 1);
      }
      break;
  }
}

// ---- decoding: a visitor that builds the json value directly ----

class JsonBuilder : public msgpack::null_visitor {
 public:
  explicit JsonBuilder(size_t total_bytes) : total_(total_bytes) {}

  bool visit_nil() { return emit(json(nullptr)); }
  bool visit_boolean(bool v) { return emit(json(v)); }
  bool visit_positive_integer(uint64_t v) {
    return v <= static_cast<uint64_t>(INT64_MAX) ? emit(json(static_cast<int64_t>(v))) : emit(json(v));
  }
  bool visit_negative_integer(int64_t v) { return emit(json(v)); }
  bool visit_float32(float v) { return emit(json(static_cast<double>(v))); }
  bool visit_float64(double v) { return emit(json(v)); }
  bool visit_str(const char* v, uint32_t size) {
    if (!valid_utf8(v, size)) return fail("string is not valid UTF-8 (use bin for raw bytes)");
    return emit(json(std::string(v, size)));
  }
  bool visit_bin(const char* v, uint32_t size) {
    const auto* p = reinterpret_cast<const uint8_t*>(v);
    return emit(json::binary(std::vector<uint8_t>(p, p + size)));
  }
  bool visit_ext(const char*, uint32_t) { return fail("msgpack ext values are not allowed"); }

  bool start_array(uint32_t n) {
    if (n > total_) return fail("array length " + std::to_string(n) + " exceeds the body size");
    return open(json::array());
  }
  bool end_array() { return close(); }
  bool start_map(uint32_t n) {
    if (n > total_ / 2) return fail("map length " + std::to_string(n) + " exceeds the body size");
    return open(json::object());
  }
  bool start_map_key() {
    frames_.back().expecting_key = true;
    return true;
  }
  bool end_map_key() {
    frames_.back().expecting_key = false;
    return true;
  }
  bool end_map() { return close(); }

  void parse_error(size_t, size_t off) { fail("malformed msgpack at byte " + std::to_string(off)); }
  void insufficient_bytes(size_t, size_t off) {
    fail("truncated msgpack: body ends at byte " + std::to_string(off));
  }

  const std::string& error() const { return error_; }
  json take() { return std::move(root_); }

 private:
  struct Frame {
    json value;
    std::string key;
    bool expecting_key = false;
  };

  bool fail(const std::string& message) {
    if (error_.empty()) error_ = message;
    return false;
  }
  bool open(json container) {
    if (frames_.size() >= kMaxDepth) return fail("body nests deeper than " + std::to_string(kMaxDepth));
    frames_.push_back(Frame{std::move(container), {}, false});
    return true;
  }
  bool close() {
    json done = std::move(frames_.back().value);
    frames_.pop_back();
    return emit(std::move(done));
  }
  bool emit(json v) {
    if (frames_.empty()) {
      root_ = std::move(v);
      return true;
    }
    Frame& f = frames_.back();
    if (f.value.is_array()) {
      f.value.push_back(std::move(v));
    } else if (f.expecting_key) {
      if (!v.is_string()) return fail("map key is not a string");
      f.key = v.get<std::string>();
    } else {
      f.value[f.key] = std::move(v);
    }
    return true;
  }

  size_t total_;
  std::vector<Frame> frames_;
  json root_;
  std::string error_;
};

}  // namespace

std::string encode(const Body& body) {
  if (!body.is_object()) throw protocol_error("body must be a map, not " + std::string(body.type_name()));
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  if (body.contains("v")) {
    pack_value(pk, body, 0);
  } else {
    Body copy = body;
    copy["v"] = kProtocolVersion;
    pack_value(pk, copy, 0);
  }
  if (buf.size() > kMaxBodyBytes)
    throw protocol_error("encoded body of " + std::to_string(buf.size()) + " bytes exceeds " +
                         std::to_string(kMaxBodyBytes));
  return std::string(buf.data(), buf.size());
}

Body decode(const void* data, size_t size) {
  if (size == 0) throw protocol_error("empty body");
  if (size > kMaxBodyBytes)
    throw protocol_error("body of " + std::to_string(size) + " bytes exceeds " +
                         std::to_string(kMaxBodyBytes));
  const char* p = static_cast<const char*>(data);
  // Cheap check before building anything: the first byte must be a map header.
  auto first = static_cast<uint8_t>(p[0]);
  bool is_map = (first & 0xf0) == 0x80 || first == 0xde || first == 0xdf;
  if (!is_map) throw protocol_error("body is not a msgpack map");

  JsonBuilder builder(size);
  size_t off = 0;
  bool ok = false;
  try {
    ok = msgpack::parse(p, size, off, builder);
  } catch (const std::exception& e) {
    throw protocol_error(std::string("malformed msgpack: ") + e.what());
  }
  if (!ok) {
    throw protocol_error(builder.error().empty() ? "malformed msgpack" : builder.error());
  }
  if (off != size)
    throw protocol_error("trailing bytes after the body (" + std::to_string(size - off) + ")");
  Body body = builder.take();
  if (!body.is_object()) throw protocol_error("body is not a msgpack map");

  auto v = body.find("v");
  if (v == body.end()) throw protocol_error("body has no protocol version \"v\"");
  if (!v->is_number_integer()) throw protocol_error("protocol version \"v\" is not an integer");
  if (v->get<int64_t>() != kProtocolVersion)
    throw protocol_error("protocol version " + std::to_string(v->get<int64_t>()) + ", expected " +
                         std::to_string(kProtocolVersion));
  auto t = body.find("type");
  if (t == body.end()) throw protocol_error("body has no \"type\"");
  if (!t->is_string()) throw protocol_error("\"type\" is not a string");
  return body;
}

}  // namespace eep::proto
