// Token sampling. Everything is a pure function of (logits, params, position): no generator
// state lives anywhere, so a request moved to another engine or preempted and recomputed draws
// exactly the tokens it would have drawn had it stayed put.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "eep/common.h"
#include "eep/scheduler.h"

namespace eep {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Counter-based uniform in [0, 1): the top 53 bits of a mixed (seed, position) pair. Hashing the
// position first keeps seeds that differ in low bits from producing shifted copies of one stream.
double uniform(uint64_t seed, int64_t position) {
  uint64_t bits = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(position)));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// NaN logits never win; they are treated as -inf.
double clean(float x) { return std::isnan(x) ? -std::numeric_limits<double>::infinity() : x; }

int32_t argmax(const float* logits, int vocab) {
  int32_t best = 0;
  double best_v = clean(logits[0]);
  for (int i = 1; i < vocab; ++i) {
    double v = clean(logits[i]);
    if (v > best_v) {  // strict: the lowest id wins ties
      best_v = v;
      best = i;
    }
  }
  return best;
}

}  // namespace

void validate_sampling(const SamplingParams& sp) {
  EEP_CHECK(sp.max_tokens >= 1, ErrorCode::kInvalidArgument,
            "max_tokens must be >= 1, got " + std::to_string(sp.max_tokens));
  EEP_CHECK(!std::isnan(sp.temperature) && sp.temperature >= 0, ErrorCode::kInvalidArgument,
            "temperature must be >= 0, got " + std::to_string(sp.temperature));
  EEP_CHECK(!std::isnan(sp.top_p) && sp.top_p > 0 && sp.top_p <= 1, ErrorCode::kInvalidArgument,
            "top_p must be in (0, 1], got " + std::to_string(sp.top_p));
  EEP_CHECK(sp.top_k >= 0, ErrorCode::kInvalidArgument,
            "top_k must be >= 0, got " + std::to_string(sp.top_k));
}

void validate_tokens(const std::vector<int32_t>& tokens, int vocab) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    EEP_CHECK(tokens[i] >= 0 && tokens[i] < vocab, ErrorCode::kInvalidArgument,
              "token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
}

int32_t sample_token(const float* logits, int vocab, const SamplingParams& sp, int64_t position) {
  EEP_CHECK(vocab >= 1, ErrorCode::kInvalidArgument,
            "vocab must be >= 1, got " + std::to_string(vocab));
  validate_sampling(sp);
  if (sp.temperature == 0) return argmax(logits, vocab);

  // Candidates sorted by scaled logit, descending, lower id first on ties: this order defines
  // top-k, top-p and the inverse CDF, so it must be total and platform independent.
  std::vector<double> scaled(vocab);
  for (int i = 0; i < vocab; ++i) scaled[i] = clean(logits[i]) / sp.temperature;
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  auto before = [&](int32_t a, int32_t b) {
    return scaled[a] != scaled[b] ? scaled[a] > scaled[b] : a < b;
  };
  int num_kept = (sp.top_k > 0 && sp.top_k < vocab) ? sp.top_k : vocab;
  std::partial_sort(order.begin(), order.begin() + num_kept, order.end(), before);

  // Softmax over the kept tokens, relative to the largest so exp never overflows. An infinite
  // maximum would make every difference NaN, so the +inf tokens then share the mass equally;
  // an all -inf row degenerates to the first candidate (what greedy would pick).
  const double max_v = scaled[order[0]];
  if (max_v == -std::numeric_limits<double>::infinity()) return order[0];
  std::vector<double> weight(num_kept);
  double total = 0;
  for (int i = 0; i < num_kept; ++i) {
    double v = scaled[order[i]];
    weight[i] = std::isinf(max_v) ? (v == max_v ? 1.0 : 0.0) : std::exp(v - max_v);
    total += weight[i];
  }

  // Nucleus: the smallest prefix whose probability reaches top_p. Summing prefix weights in
  // sorted order and comparing against top_p * total avoids a separate normalisation pass.
  if (sp.top_p < 1) {
    const double target = sp.top_p * total;
    double cum = 0;
    int n = 0;
    while (n < num_kept) {
      cum += weight[n++];
      if (cum >= target) break;
    }
    num_kept = n;
    total = cum;
  }

  // Inverse CDF over the kept tokens in sorted order.
  const double u = uniform(sp.seed, position) * total;
  double cum = 0;
  for (int i = 0; i < num_kept; ++i) {
    cum += weight[i];
    if (u < cum) return order[i];
  }
  // Rounding can leave u == total; the last kept token with weight owns that edge.
  for (int i = num_kept - 1; i > 0; --i) {
    if (weight[i] > 0) return order[i];
  }
  return order[0];
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "";
}

}  // namespace eep
