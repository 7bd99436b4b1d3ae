// Internal: the two kinds of WeightSource behind open_weights().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "eep/model.h"

namespace eep::model {

// Seeded synthetic weights of the shapes of c (c.name keys the random streams).
std::unique_ptr<WeightSource> make_synthetic_source(const ModelConfig& c, uint64_t seed);
// A Hugging Face checkpoint directory: config.json + *.safetensors (+ index json).
std::unique_ptr<WeightSource> open_checkpoint_dir(const std::string& dir);

// Fills out[0..n) with the synthetic values of one tensor (exposed for tests and benchmarks).
void synthetic_fill(const std::string& preset, uint64_t seed, const std::string& tensor,
                    const std::vector<int64_t>& shape, float* out, size_t n);

}  // namespace eep::model
