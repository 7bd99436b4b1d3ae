#include "bench/serve_args.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "eep/common.h"

namespace eep::bench {

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::stringstream ss(s);
  while (std::getline(ss, item, sep)) out.push_back(item);
  if (!s.empty() && s.back() == sep) out.push_back("");
  return out;
}

// Whole-string number parsing: "12x" and "" are errors, not 12 and 0.
bool to_double(const std::string& s, double& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s.front()))) return false;
  try {
    size_t used = 0;
    out = std::stod(s, &used);
    return used == s.size() && std::isfinite(out);
  } catch (const std::exception&) {
    return false;
  }
}

[[noreturn]] void bad(const std::string& msg) { throw Error(ErrorCode::kInvalidArgument, msg); }

}  // namespace

bool to_int(const std::string& s, int64_t& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s.front()))) return false;
  try {
    size_t used = 0;
    out = std::stoll(s, &used);
    return used == s.size();
  } catch (const std::exception&) {
    return false;
  }
}

int LengthDist::sample(std::mt19937_64& rng) const {
  double v = a;
  switch (kind) {
    case Kind::kFixed: v = a; break;
    case Kind::kUniform:
      v = static_cast<double>(std::uniform_int_distribution<int64_t>(
          static_cast<int64_t>(a), static_cast<int64_t>(b))(rng));
      break;
    case Kind::kNormal: v = std::normal_distribution<double>(a, b)(rng); break;
    case Kind::kLognormal: v = std::lognormal_distribution<double>(a, b)(rng); break;
  }
  v = std::round(v);
  return static_cast<int>(std::clamp(v, 1.0, static_cast<double>(kMaxLength)));
}

LengthDist parse_length_dist(const std::string& flag, const std::string& text) {
  const std::string syntax = " (expected fixed:N, uniform:A:B, normal:MEAN:STD or lognormal:MU:SIGMA)";
  auto parts = split(text, ':');
  if (parts.empty()) bad(flag + ": empty distribution" + syntax);
  LengthDist d;
  d.text = text;
  const std::string& name = parts[0];
  auto want = [&](size_t n) {
    if (parts.size() != n + 1)
      bad(flag + ": '" + name + "' takes " + std::to_string(n) + " parameter(s), got '" + text + "'" + syntax);
  };
  if (name == "fixed") {
    want(1);
    int64_t n = 0;
    if (!to_int(parts[1], n) || n < 1 || n > LengthDist::kMaxLength)
      bad(flag + ": fixed:N needs an integer N >= 1, got '" + parts[1] + "'");
    d.kind = LengthDist::Kind::kFixed;
    d.a = static_cast<double>(n);
  } else if (name == "uniform") {
    want(2);
    int64_t lo = 0, hi = 0;
    if (!to_int(parts[1], lo) || !to_int(parts[2], hi) || lo < 1 || hi > LengthDist::kMaxLength)
      bad(flag + ": uniform:A:B needs integers 1 <= A <= B, got '" + text + "'");
    if (lo > hi) bad(flag + ": uniform:A:B needs A <= B, got '" + text + "'");
    d.kind = LengthDist::Kind::kUniform;
    d.a = static_cast<double>(lo);
    d.b = static_cast<double>(hi);
  } else if (name == "normal" || name == "lognormal") {
    want(2);
    double m = 0, s = 0;
    if (!to_double(parts[1], m) || !to_double(parts[2], s))
      bad(flag + ": " + name + " needs two numbers, got '" + text + "'");
    if (s < 0) bad(flag + ": " + name + ": the spread must be >= 0, got '" + parts[2] + "'");
    if (name == "lognormal" && m > std::log(static_cast<double>(LengthDist::kMaxLength)))
      bad(flag + ": lognormal: MU " + parts[1] + " gives lengths past " + std::to_string(LengthDist::kMaxLength));
    d.kind = name == "normal" ? LengthDist::Kind::kNormal : LengthDist::Kind::kLognormal;
    d.a = m;
    d.b = s;
  } else {
    bad(flag + ": unknown distribution '" + name + "'" + syntax);
  }
  return d;
}

ServeEvent parse_event(ServeEvent::Kind kind, const std::string& text, double duration_s) {
  const std::string flag = kind == ServeEvent::Kind::kScale ? "--scale-at" : "--kill-at";
  const std::string what = kind == ServeEvent::Kind::kScale ? "N" : "RANK";
  auto parts = split(text, ':');
  double t = 0;
  int64_t v = 0;
  if (parts.size() != 2 || !to_double(parts[0], t) || !to_int(parts[1], v))
    bad(flag + ": expected T:" + what + " (seconds:integer), got '" + text + "'");
  if (t < 0) bad(flag + ": event time " + parts[0] + " s is negative");
  if (t >= duration_s)
    bad(flag + ": event time " + parts[0] + " s is not before the end of --duration");
  if (kind == ServeEvent::Kind::kScale && v < 1)
    bad(flag + ": the new size must be at least 1, got " + parts[1]);
  if (kind == ServeEvent::Kind::kKill && v < 0) bad(flag + ": rank must be >= 0, got " + parts[1]);
  if (v > 1 << 20) bad(flag + ": " + parts[1] + " is too large");
  ServeEvent e;
  e.kind = kind;
  e.at_s = t;
  e.value = static_cast<int>(v);
  e.text = text;
  return e;
}

}  // namespace eep::bench
