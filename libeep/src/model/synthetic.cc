// Seeded synthetic weights: every tensor is a pure function of (preset, seed, tensor name), so
// any engine can make any tensor on its own, in any order, without talking to anyone.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <cstring>
#include <unordered_map>

#include "eep/common.h"
#include "model/sources.h"

namespace eep::model {

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Uniform in (-1, 1) from the top 23 bits of a 32-bit word; exact in fp32, so the values do not
// depend on the compiler or the machine.
inline float unit_symmetric(uint32_t bits) {
  int32_t u = int32_t(bits >> 9) - (1 << 22);
  return (float(u) + 0.5f) * (1.0f / float(1 << 22));
}

// Values [begin, end) of the stream; begin is even. Word w (64 bits) gives values 2w and 2w+1.
void fill_range(uint64_t key, float center, float half_width, float* out, size_t begin,
                size_t end) {
  size_t i = begin;
  for (; i + 1 < end; i += 2) {
    uint64_t r = splitmix64(key + (uint64_t(i / 2) + 1) * kGolden);
    out[i] = center + half_width * unit_symmetric(uint32_t(r));
    out[i + 1] = center + half_width * unit_symmetric(uint32_t(r >> 32));
  }
  if (i < end) {
    uint64_t r = splitmix64(key + (uint64_t(i / 2) + 1) * kGolden);
    out[i] = center + half_width * unit_symmetric(uint32_t(r));
  }
}

}  // namespace

void synthetic_fill(const std::string& preset, uint64_t seed, const std::string& tensor,
                    const std::vector<int64_t>& shape, float* out, size_t n) {
  // Offset and half-width of the uniform distribution, by the tensor's role.
  float center = 0.0f, half_width;
  const bool is_norm = ends_with(tensor, "layernorm.weight") || ends_with(tensor, "q_norm.weight") ||
                       ends_with(tensor, "k_norm.weight") || tensor == tensor_name_final_norm();
  const float fan_in = shape.size() >= 2 ? float(shape.back()) : 1.0f;
  if (is_norm) {
    // Near 1, as trained RMSNorm weights are; the noise keeps channels distinguishable.
    center = 1.0f;
    half_width = 0.1f;
  } else if (tensor == tensor_name_embed()) {
    half_width = std::sqrt(3.0f);  // std 1: the residual stream starts at unit scale
  } else if (ends_with(tensor, "mlp.gate.weight")) {
    // Router logits of std ~2: routing is clearly non-uniform, so load balancing has work.
    half_width = 2.0f * std::sqrt(3.0f / fan_in);
  } else {
    half_width = std::sqrt(3.0f / fan_in);  // std 1/sqrt(fan_in)
  }

  const uint64_t key = splitmix64(splitmix64(fnv1a64(preset) ^ splitmix64(seed + kGolden)) ^
                                  fnv1a64(tensor));
  // Big tensors (real shapes: an expert is 1.5M values, the embedding 311M) are filled by several
  // threads; the stream is counter-based, so the split cannot change a value.
  constexpr size_t kChunk = size_t(1) << 21;  // even, so chunks start on a word boundary
  const size_t num_chunks = (n + kChunk - 1) / kChunk;
  const size_t num_threads =
      std::min<size_t>(num_chunks, std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
  if (num_threads <= 1) {
    fill_range(key, center, half_width, out, 0, n);
    return;
  }
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t c; (c = next.fetch_add(1)) < num_chunks;)
      fill_range(key, center, half_width, out, c * kChunk, std::min(n, (c + 1) * kChunk));
  };
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
}

namespace {

class SyntheticSource : public WeightSource {
 public:
  SyntheticSource(const ModelConfig& c, uint64_t seed) : config_(c), seed_(seed) {
    for (auto& [name, shape] : tensor_layout(c)) shapes_.emplace(name, shape);
  }

  const ModelConfig& config() const override { return config_; }

  bool has(const std::string& tensor) const override {
    return shapes_.count(resolve(tensor)) != 0;
  }

  std::vector<int64_t> shape(const std::string& tensor) const override {
    return lookup(tensor)->second;
  }

  void read(const std::string& tensor, std::vector<float>& out) const override {
    auto it = lookup(tensor);
    size_t n = 1;
    for (int64_t d : it->second) n *= size_t(d);
    out.resize(n);
    synthetic_fill(config_.name, seed_, it->first, it->second, out.data(), n);
  }

 private:
  // A tied lm_head is the embedding.
  std::string resolve(const std::string& tensor) const {
    if (config_.tie_word_embeddings && tensor == tensor_name_lm_head()) return tensor_name_embed();
    return tensor;
  }

  std::unordered_map<std::string, std::vector<int64_t>>::const_iterator lookup(
      const std::string& tensor) const {
    auto it = shapes_.find(resolve(tensor));
    EEP_CHECK(it != shapes_.end(), ErrorCode::kNotFound,
              "preset:" + config_.name + ": no tensor named '" + tensor + "'");
    return it;
  }

  ModelConfig config_;
  uint64_t seed_;
  std::unordered_map<std::string, std::vector<int64_t>> shapes_;
};

}  // namespace

std::unique_ptr<WeightSource> make_synthetic_source(const ModelConfig& c, uint64_t seed) {
  c.validate();
  return std::make_unique<SyntheticSource>(c, seed);
}

}  // namespace eep::model
