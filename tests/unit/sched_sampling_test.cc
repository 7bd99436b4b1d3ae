#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "eep/common.h"
#include "eep/scheduler.h"

namespace eep {
namespace {

SamplingParams random_params(uint64_t seed = 7) {
  SamplingParams sp;
  sp.temperature = 1.0;
  sp.seed = seed;
  return sp;
}

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

TEST(Sampling, GreedyTakesLowestIdOnTies) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -5.0f};
  SamplingParams sp;  // temperature 0
  EXPECT_EQ(sample_token(logits.data(), 5, sp, 0), 1);
  EXPECT_EQ(sample_token(logits.data(), 5, sp, 12345), 1);
  std::vector<float> nan_first = {std::numeric_limits<float>::quiet_NaN(), -1.0f, 0.5f};
  EXPECT_EQ(sample_token(nan_first.data(), 3, sp, 0), 2);
}

TEST(Sampling, TopKOneEqualsGreedy) {
  std::vector<float> logits = {0.1f, 2.0f, 2.0f, 1.9f, -1.0f, 0.0f};
  SamplingParams sp = random_params();
  sp.top_k = 1;
  sp.temperature = 5.0;
  for (int64_t pos = 0; pos < 200; ++pos) {
    EXPECT_EQ(sample_token(logits.data(), 6, sp, pos), 1);
  }
}

TEST(Sampling, SameSeedAndPositionSameToken) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = static_cast<float>(std::sin(i * 0.7));
  SamplingParams a = random_params(42), b = random_params(42), c = random_params(43);
  int num_differ = 0;
  for (int64_t pos = 0; pos < 300; ++pos) {
    int32_t ta = sample_token(logits.data(), 50, a, pos);
    EXPECT_EQ(ta, sample_token(logits.data(), 50, b, pos));
    EXPECT_EQ(ta, sample_token(logits.data(), 50, a, pos));  // no hidden state
    num_differ += ta != sample_token(logits.data(), 50, c, pos);
  }
  EXPECT_GT(num_differ, 100);  // another seed is another stream
}

TEST(Sampling, FrequenciesMatchDistribution) {
  const std::vector<double> p = {0.1, 0.2, 0.3, 0.4};
  std::vector<float> logits = log_probs(p);
  SamplingParams sp = random_params(1234);
  const int n = 40000;
  std::vector<int> count(4, 0);
  for (int64_t pos = 0; pos < n; ++pos) ++count[sample_token(logits.data(), 4, sp, pos)];
  double chi2 = 0;
  for (int i = 0; i < 4; ++i) {
    double expected = n * p[i];
    chi2 += (count[i] - expected) * (count[i] - expected) / expected;
  }
  // 3 degrees of freedom: P(chi2 > 16.27) = 0.001. Deterministic, so this cannot flake.
  EXPECT_LT(chi2, 16.27) << count[0] << " " << count[1] << " " << count[2] << " " << count[3];
}

TEST(Sampling, TemperatureSharpens) {
  std::vector<float> logits = log_probs({0.1, 0.2, 0.3, 0.4});
  SamplingParams sp = random_params(5);
  sp.temperature = 0.25;  // p^4: 0.4 dominates (~0.70)
  int n = 10000, top = 0;
  for (int64_t pos = 0; pos < n; ++pos) top += sample_token(logits.data(), 4, sp, pos) == 3;
  double expected = std::pow(0.4, 4) / (std::pow(0.1, 4) + std::pow(0.2, 4) + std::pow(0.3, 4) +
                                        std::pow(0.4, 4));
  EXPECT_NEAR(static_cast<double>(top) / n, expected, 0.02);
}

TEST(Sampling, TopPExcludesTail) {
  // Sorted probs 0.5, 0.3, 0.15, 0.05: top_p 0.8 keeps {0.5, 0.3} exactly.
  std::vector<float> logits = log_probs({0.15, 0.5, 0.05, 0.3});
  SamplingParams sp = random_params(9);
  sp.top_p = 0.8;
  std::vector<int> count(4, 0);
  const int n = 20000;
  for (int64_t pos = 0; pos < n; ++pos) ++count[sample_token(logits.data(), 4, sp, pos)];
  EXPECT_EQ(count[0], 0);
  EXPECT_EQ(count[2], 0);
  EXPECT_NEAR(static_cast<double>(count[1]) / n, 0.5 / 0.8, 0.02);
  // top_p 0.81 needs the third token too.
  sp.top_p = 0.81;
  bool saw_third = false;
  for (int64_t pos = 0; pos < n && !saw_third; ++pos) {
    saw_third = sample_token(logits.data(), 4, sp, pos) == 0;
  }
  EXPECT_TRUE(saw_third);
}

TEST(Sampling, TopKKeepsLargestWithTiesByLowerId) {
  // Ids 1, 2 and 3 tie; top_k 2 keeps 0 (largest) and 1 (lowest id of the tie).
  std::vector<float> logits = {2.0f, 1.0f, 1.0f, 1.0f};
  SamplingParams sp = random_params(3);
  sp.top_k = 2;
  std::vector<int> count(4, 0);
  for (int64_t pos = 0; pos < 5000; ++pos) ++count[sample_token(logits.data(), 4, sp, pos)];
  EXPECT_GT(count[0], 0);
  EXPECT_GT(count[1], 0);
  EXPECT_EQ(count[2], 0);
  EXPECT_EQ(count[3], 0);
}

TEST(Sampling, DegenerateLogits) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> all_neg_inf = {-inf, -inf, -inf};
  SamplingParams sp = random_params();
  EXPECT_EQ(sample_token(all_neg_inf.data(), 3, sp, 0), 0);
  std::vector<float> pos_inf = {0.0f, inf, 1.0f, inf};
  for (int64_t pos = 0; pos < 100; ++pos) {
    int32_t t = sample_token(pos_inf.data(), 4, sp, pos);
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

TEST(Sampling, ValidationErrors) {
  std::vector<float> logits = {0.0f, 1.0f};
  auto expect_invalid = [&](SamplingParams sp) {
    try {
      sample_token(logits.data(), 2, sp, 0);
      FAIL() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
    EXPECT_THROW(validate_sampling(sp), Error);
  };
  SamplingParams sp;
  sp.temperature = -0.1;
  expect_invalid(sp);
  sp.temperature = std::nan("");
  expect_invalid(sp);
  sp = SamplingParams{};
  sp.top_p = 0.0;
  expect_invalid(sp);
  sp.top_p = 1.5;
  expect_invalid(sp);
  sp = SamplingParams{};
  sp.top_k = -1;
  expect_invalid(sp);
  sp = SamplingParams{};
  sp.max_tokens = 0;
  expect_invalid(sp);
  EXPECT_THROW(sample_token(logits.data(), 0, SamplingParams{}, 0), Error);
}

TEST(Sampling, ValidateTokensNamesIdAndPosition) {
  validate_tokens({0, 5, 9}, 10);
  try {
    validate_tokens({0, 5, 10, -1}, 10);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    std::string msg = e.what();
    EXPECT_NE(msg.find("token id 10"), std::string::npos) << msg;
    EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
  }
  EXPECT_THROW(validate_tokens({-1}, 10), Error);
}

TEST(Sampling, FinishReasonNames) {
  EXPECT_STREQ(finish_reason_name(FinishReason::kNone), "");
  EXPECT_STREQ(finish_reason_name(FinishReason::kLength), "length");
  EXPECT_STREQ(finish_reason_name(FinishReason::kStop), "stop");
  EXPECT_STREQ(finish_reason_name(FinishReason::kAbort), "abort");
  EXPECT_STREQ(finish_reason_name(FinishReason::kError), "error");
}

}  // namespace
}  // namespace eep
