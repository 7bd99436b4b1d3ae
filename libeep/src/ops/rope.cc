// Rotary position embedding, Hugging Face rotate_half (NeoX) layout: element i of a head is
// paired with element i + head_dim/2 and both are rotated by pos * theta^(-2i/head_dim).
#include <cmath>
#include <vector>

#include "eep/ops.h"

namespace eep::ops {

void rope(float* x, const int32_t* positions, int rows, int num_heads, int head_dim, float theta) {
  const int half = head_dim / 2;
  // Angles in double, rounded once to fp32 cos/sin: accurate at large positions and the same for
  // a position whichever row or batch it comes in.
  thread_local std::vector<double> inv_freq;
  thread_local std::vector<float> cos_v, sin_v;
  inv_freq.resize(half);
  cos_v.resize(half);
  sin_v.resize(half);
  for (int i = 0; i < half; ++i)
    inv_freq[i] = 1.0 / std::pow(double(theta), double(2 * i) / double(head_dim));
  for (int r = 0; r < rows; ++r) {
    const double pos = double(positions[r]);
    for (int i = 0; i < half; ++i) {
      double angle = pos * inv_freq[i];
      cos_v[i] = float(std::cos(angle));
      sin_v[i] = float(std::sin(angle));
    }
    float* row = x + size_t(r) * num_heads * head_dim;
    for (int h = 0; h < num_heads; ++h) {
      float* v = row + size_t(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_v[i] - b * sin_v[i];
        v[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

}  // namespace eep::ops
