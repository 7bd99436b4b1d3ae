// Random test inputs shared by the unit tests: never zeros, seeded so a failure repeats.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace eep::testing {

inline std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace eep::testing
