#include <random>
#include <string>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "eep/proto.h"

namespace {

using eep::ErrorCode;
using eep::proto::Body;

// Decoding must throw Error(kProtocol); anything else (crash, other exception) fails the test.
void expect_protocol_error(const std::string& bytes, const std::string& contains = "") {
  try {
    eep::proto::decode(bytes.data(), bytes.size());
    FAIL() << "decode accepted " << bytes.size() << " bytes";
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kProtocol) << e.what();
    if (!contains.empty()) {
      EXPECT_NE(std::string(e.what()).find(contains), std::string::npos) << e.what();
    }
  }
}

std::string pack_map(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& fill, uint32_t n) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(n);
  fill(pk);
  return std::string(buf.data(), buf.size());
}

TEST(ProtoCodec, RoundTripsEveryType) {
  Body b = {{"type", "probe"},
            {"seq", 42},
            {"neg", -7},
            {"big", int64_t{1} << 62},
            {"huge", uint64_t{18446744073709551615ull}},
            {"pi", 3.25},
            {"yes", true},
            {"no", false},
            {"nothing", nullptr},
            {"text", "héllo"},
            {"list", {1, "two", 3.5, nullptr, {{"k", "v"}}}},
            {"map", {{"a", {1, 2, 3}}, {"b", Body::object()}, {"c", Body::array()}}}};
  b["blob"] = Body::binary({0, 1, 2, 0, 255});
  std::string wire = eep::proto::encode(b);
  Body d = eep::proto::decode(wire.data(), wire.size());
  EXPECT_EQ(d["v"], eep::proto::kProtocolVersion);  // added by encode
  d.erase("v");
  EXPECT_EQ(d, b);
  EXPECT_TRUE(d["blob"].is_binary());
  EXPECT_EQ(d["huge"].get<uint64_t>(), 18446744073709551615ull);
}

TEST(ProtoCodec, EmptyStringsAndBinary) {
  Body b = {{"type", "x"}, {"s", ""}};
  b["bin"] = Body::binary({});
  std::string wire = eep::proto::encode(b);
  Body d = eep::proto::decode(wire.data(), wire.size());
  EXPECT_EQ(d["s"], "");
  EXPECT_TRUE(d["bin"].is_binary());
  EXPECT_TRUE(d["bin"].get_binary().empty());
}

TEST(ProtoCodec, EncodeRefusesNonMap) {
  EXPECT_THROW(eep::proto::encode(Body::array()), eep::Error);
  EXPECT_THROW(eep::proto::encode(Body(3)), eep::Error);
}

TEST(ProtoCodec, WrongVersion) {
  std::string wire = eep::proto::encode({{"v", 2}, {"type", "x"}});
  expect_protocol_error(wire, "protocol version 2, expected 1");
  expect_protocol_error(eep::proto::encode({{"v", "1"}, {"type", "x"}}), "not an integer");
}

TEST(ProtoCodec, MissingOrBadType) {
  expect_protocol_error(eep::proto::encode({{"seq", 1}}), "no \"type\"");
  expect_protocol_error(eep::proto::encode({{"type", 5}}), "not a string");
  // No "v" at all (encode would add it, so pack by hand).
  expect_protocol_error(pack_map([](auto& pk) { pk.pack(std::string("type")); pk.pack(std::string("x")); }, 1),
                        "version");
}

TEST(ProtoCodec, NonMapTopLevel) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::vector<int>{1, 2, 3});
  expect_protocol_error(std::string(buf.data(), buf.size()), "not a msgpack map");
  expect_protocol_error(std::string("\xc0", 1));  // nil
  expect_protocol_error("");
}

TEST(ProtoCodec, NonStringKeyAndExt) {
  expect_protocol_error(pack_map([](auto& pk) { pk.pack(1); pk.pack(2); }, 1), "key");
  expect_protocol_error(pack_map(
      [](auto& pk) {
        pk.pack(std::string("e"));
        pk.pack_ext(2, 1);
        pk.pack_ext_body("ab", 2);
      },
      1));
}

TEST(ProtoCodec, StringsMustBeUtf8) {
  auto with_str = [](const std::string& v) {
    return pack_map(
        [&](auto& pk) {
          pk.pack(std::string("v"));
          pk.pack(1);
          pk.pack(std::string("type"));
          pk.pack(v);
        },
        2);
  };
  EXPECT_EQ(eep::proto::decode(with_str("h\xc3\xa9llo \xf0\x9f\x98\x80").data(),
                               with_str("h\xc3\xa9llo \xf0\x9f\x98\x80").size())["type"],
            "h\xc3\xa9llo \xf0\x9f\x98\x80");
  for (std::string bad : {"\xff", "\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x80" "b"})
    expect_protocol_error(with_str(bad), "UTF-8");
  // Every decoded body can be dumped as JSON (dump throws on invalid UTF-8).
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    for (int k = 0; k < 8; ++k) s += static_cast<char>(rng());
    std::string wire = with_str(s);
    try {
      auto b = eep::proto::decode(wire.data(), wire.size());
      EXPECT_NO_THROW(b.dump());
    } catch (const eep::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kProtocol);
    }
  }
}

TEST(ProtoCodec, TrailingBytes) {
  std::string wire = eep::proto::encode({{"type", "x"}});
  expect_protocol_error(wire + "\x01", "trailing");
}

TEST(ProtoCodec, TruncatedAtEveryLength) {
  Body b = {{"type", "probe"}, {"list", {1, 2, {{"deep", "value"}}}}, {"s", std::string(100, 'x')}};
  std::string wire = eep::proto::encode(b);
  for (size_t n = 0; n < wire.size(); ++n) expect_protocol_error(wire.substr(0, n));
}

TEST(ProtoCodec, HugeLengthPrefixesDoNotAllocate) {
  // map32 claiming 4 billion pairs, array32/str32/bin32 claiming 4 GiB, inside a tiny body.
  expect_protocol_error(std::string("\xdf\xff\xff\xff\xff", 5));
  expect_protocol_error(std::string("\x81\xa1k\xdd\xff\xff\xff\xff", 8));
  expect_protocol_error(std::string("\x81\xa1k\xdb\xff\xff\xff\xff", 8));
  expect_protocol_error(std::string("\x81\xa1k\xc6\xff\xff\xff\xff", 8));
}

TEST(ProtoCodec, DeepNestingRefused) {
  std::string wire = "\x81\xa1k";
  for (int i = 0; i < 100000; ++i) wire += '\x91';  // array of one element, 100k deep
  wire += '\xc0';
  expect_protocol_error(wire, "deeper");
  Body deep = Body::array();
  for (int i = 0; i < 64; ++i) deep = Body::array({deep});
  EXPECT_THROW(eep::proto::encode({{"type", "x"}, {"d", deep}}), eep::Error);
}

TEST(ProtoCodec, OversizedBodyRefusedBeforeParsing) {
  std::string big(eep::proto::kMaxBodyBytes + 1, '\x80');
  expect_protocol_error(big, "exceeds");
}

TEST(ProtoCodec, RandomGarbageNeverCrashes) {
  std::mt19937 rng(12345);
  std::string valid = eep::proto::encode({{"type", "probe"}, {"x", {1, 2, 3}}, {"s", "abc"}});
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes;
    if (iter % 2 == 0) {
      size_t n = rng() % 64;
      for (size_t i = 0; i < n; ++i) bytes += static_cast<char>(rng());
      if (iter % 4 == 0 && !bytes.empty()) bytes[0] = static_cast<char>(0x80 | (rng() & 0x0f));
    } else {
      bytes = valid;  // flip a few bytes of a valid body
      for (int k = 0; k < 3; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    try {
      Body b = eep::proto::decode(bytes.data(), bytes.size());
      // Occasionally a mutation still decodes: it must then satisfy the envelope rules.
      EXPECT_TRUE(b.is_object());
      EXPECT_EQ(b["v"], 1);
      EXPECT_TRUE(b["type"].is_string());
    } catch (const eep::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kProtocol);
    }
  }
}

TEST(ProtoMessages, Replies) {
  Body req = {{"v", 1}, {"type", "store"}, {"seq", 9}};
  Body ok = eep::proto::ok_reply(req, {{"value", 3}});
  EXPECT_EQ(ok["type"], "store_reply");
  EXPECT_EQ(ok["seq"], 9);
  EXPECT_EQ(ok["status"], "ok");
  EXPECT_EQ(ok["value"], 3);
  EXPECT_NO_THROW(eep::proto::throw_if_error(ok));

  Body err = eep::proto::error_reply(req, ErrorCode::kConflict, "busy");
  EXPECT_EQ(err["status"], "error");
  EXPECT_EQ(err["code"], "conflict");
  EXPECT_EQ(err["message"], "busy");
  try {
    eep::proto::throw_if_error(err);
    FAIL();
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConflict);
    EXPECT_STREQ(e.what(), "busy");
  }
  Body bad = eep::proto::error_reply_undecodable("garbage");
  EXPECT_EQ(bad["type"], "error");
  EXPECT_EQ(bad["code"], "protocol");
  // Replies themselves encode and decode.
  std::string wire = eep::proto::encode(err);
  EXPECT_EQ(eep::proto::decode(wire.data(), wire.size()), err);
}

TEST(ProtoMessages, FieldAccess) {
  Body b = {{"i", 5}, {"f", 2.5}, {"s", "x"}, {"a", {1, 2}}, {"n", nullptr}, {"bad", {1, "x"}}};
  EXPECT_EQ(eep::proto::get_int(b, "i"), 5);
  EXPECT_EQ(eep::proto::get_opt_int(b, "i"), 5);
  EXPECT_EQ(eep::proto::get_opt_int(b, "missing"), std::nullopt);
  EXPECT_EQ(eep::proto::get_opt_int(b, "n"), std::nullopt);
  EXPECT_DOUBLE_EQ(eep::proto::get_number(b, "f"), 2.5);
  EXPECT_DOUBLE_EQ(eep::proto::get_number(b, "i"), 5.0);
  EXPECT_EQ(eep::proto::get_string(b, "s"), "x");
  EXPECT_EQ(eep::proto::get_int_array(b, "a"), (std::vector<int64_t>{1, 2}));
  EXPECT_THROW(eep::proto::get_int(b, "f"), eep::Error);
  EXPECT_THROW(eep::proto::get_int(b, "missing"), eep::Error);
  EXPECT_THROW(eep::proto::get_string(b, "i"), eep::Error);
  EXPECT_THROW(eep::proto::get_int_array(b, "bad"), eep::Error);
  try {
    eep::proto::get_int(b, "missing");
  } catch (const eep::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
}

}  // namespace
