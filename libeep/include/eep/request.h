// A generation request as it travels: client → coordinator ("submit"), coordinator → engine
// ("add"), and back as token streams. Shared validation so every hop rejects the same inputs
// with the same messages.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eep/scheduler.h"

namespace eep {

// Limits a request is checked against: the smallest of what the serving engines reported.
struct RequestLimits {
  int vocab_size = 0;
  int max_model_len = 0;
  int kv_tokens = 0;  // tokens one engine's KV cache can hold (blocks * block_size)
};

// Parses the sampling fields of a submit/add body (max_tokens, temperature, top_k, top_p, seed,
// stop) and rejects unknown fields, wrong types and out-of-range values with
// Error(kInvalidArgument, "<field>: <problem>").
SamplingParams parse_sampling(const nlohmann::json& body);
nlohmann::json sampling_to_json(const SamplingParams& sp);

// Parses "prompt" (array of token ids) and checks prompt and sampling against limits: empty
// prompt, ids outside the vocabulary, prompt + max_tokens past the context length, a prompt that
// the KV cache can never hold. Throws Error(kInvalidArgument or kResourceExhausted).
std::vector<int32_t> parse_prompt(const nlohmann::json& body);
void check_request(const std::vector<int32_t>& prompt, const SamplingParams& sp,
                   const RequestLimits& limits);

// The "add" body for an engine: rid, prompt, output so far (a continuation), sampling.
nlohmann::json encode_add(const std::string& rid, const std::vector<int32_t>& prompt,
                          const std::vector<int32_t>& output, const SamplingParams& sp);
Sequence decode_add(const nlohmann::json& body);

}  // namespace eep
