// eep-bench serve: the parsed pieces of its command line that need more than CLI11 checks:
// length distributions and timed events. Parsers throw Error(kInvalidArgument, message) with a
// message that names the flag and the problem, so the tool can stop before any load is sent.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace eep::bench {

// A distribution of token counts: fixed:N, uniform:A:B, normal:MEAN:STD, lognormal:MU:SIGMA.
// Samples are rounded and clamped to [1, kMaxLength].
struct LengthDist {
  enum class Kind { kFixed, kUniform, kNormal, kLognormal };
  static constexpr int kMaxLength = 1 << 20;
  Kind kind = Kind::kFixed;
  double a = 1, b = 0;
  std::string text;  // as given, for the report

  int sample(std::mt19937_64& rng) const;
};

// Whole-string integer parsing: "12x", " 4" and "" are errors, not 12, 4 and 0.
bool to_int(const std::string& s, int64_t& out);

// flag: the option name for messages ("--prompt-len").
LengthDist parse_length_dist(const std::string& flag, const std::string& text);

struct ServeEvent {
  enum class Kind { kScale, kKill };
  Kind kind = Kind::kScale;
  double at_s = 0;
  int value = 0;     // scale: the new size; kill: the rank
  std::string text;  // as given
};

// "T:N" for --scale-at (N >= 1) and "T:RANK" for --kill-at (RANK >= 0); 0 <= T < duration.
ServeEvent parse_event(ServeEvent::Kind kind, const std::string& text, double duration_s);

}  // namespace eep::bench
