#include "eep/request.h"

#include <cmath>
#include <set>
#include <string>

#include "eep/common.h"

namespace eep {

namespace {
const std::set<std::string> kSamplingFields = {"max_tokens", "temperature", "top_k",
                                               "top_p",      "seed",        "stop"};
// Fields of a submit/add body that are not sampling fields.
const std::set<std::string> kEnvelopeFields = {"v", "type", "seq", "id", "rid", "prompt", "output"};

[[noreturn]] void bad(const std::string& field, const std::string& problem) {
  throw Error(ErrorCode::kInvalidArgument, field + ": " + problem);
}

std::vector<int32_t> token_array(const nlohmann::json& body, const char* field) {
  if (!body.contains(field)) return {};
  const auto& a = body[field];
  if (!a.is_array()) bad(field, "must be an array of token ids");
  std::vector<int32_t> out;
  out.reserve(a.size());
  for (const auto& t : a) {
    if (!t.is_number_integer()) bad(field, "token ids must be integers");
    int64_t v = t.get<int64_t>();
    if (v < 0 || v > INT32_MAX) bad(field, "token id " + std::to_string(v) + " is out of range");
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}
}  // namespace

SamplingParams parse_sampling(const nlohmann::json& body) {
  if (!body.is_object()) bad("request", "must be a map");
  for (const auto& [key, value] : body.items())
    if (!kSamplingFields.count(key) && !kEnvelopeFields.count(key))
      bad(key, "unknown field (known: max_tokens, temperature, top_k, top_p, seed, stop)");
  SamplingParams sp;
  if (body.contains("max_tokens")) {
    if (!body["max_tokens"].is_number_integer()) bad("max_tokens", "must be an integer");
    int64_t v = body["max_tokens"].get<int64_t>();
    if (v < 1 || v > INT32_MAX) bad("max_tokens", "must be at least 1, got " + std::to_string(v));
    sp.max_tokens = static_cast<int>(v);
  }
  if (body.contains("temperature")) {
    if (!body["temperature"].is_number()) bad("temperature", "must be a number");
    double t = body["temperature"].get<double>();
    if (!std::isfinite(t) || t < 0) bad("temperature", "must be a finite number >= 0");
    sp.temperature = t;
  }
  if (body.contains("top_k")) {
    if (!body["top_k"].is_number_integer()) bad("top_k", "must be an integer");
    int64_t k = body["top_k"].get<int64_t>();
    if (k < 0 || k > INT32_MAX) bad("top_k", "must be >= 0 (0 = whole vocabulary)");
    sp.top_k = static_cast<int>(k);
  }
  if (body.contains("top_p")) {
    if (!body["top_p"].is_number()) bad("top_p", "must be a number");
    double p = body["top_p"].get<double>();
    if (!std::isfinite(p) || p <= 0 || p > 1) bad("top_p", "must be in (0, 1]");
    sp.top_p = p;
  }
  if (body.contains("seed")) {
    if (!body["seed"].is_number_integer()) bad("seed", "must be an integer");
    sp.seed = body["seed"].is_number_unsigned() ? body["seed"].get<uint64_t>()
                                                : static_cast<uint64_t>(body["seed"].get<int64_t>());
  }
  sp.stop_token_ids = token_array(body, "stop");
  return sp;
}

nlohmann::json sampling_to_json(const SamplingParams& sp) {
  return {{"max_tokens", sp.max_tokens}, {"temperature", sp.temperature}, {"top_k", sp.top_k},
          {"top_p", sp.top_p},           {"seed", sp.seed},               {"stop", sp.stop_token_ids}};
}

std::vector<int32_t> parse_prompt(const nlohmann::json& body) {
  if (!body.contains("prompt")) bad("prompt", "missing");
  return token_array(body, "prompt");
}

void check_request(const std::vector<int32_t>& prompt, const SamplingParams& sp,
                   const RequestLimits& limits) {
  if (prompt.empty()) bad("prompt", "is empty");
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] >= limits.vocab_size)
      bad("prompt", "token id " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                        " is outside the vocabulary of " + std::to_string(limits.vocab_size));
  for (int32_t t : sp.stop_token_ids)
    if (t >= limits.vocab_size)
      bad("stop", "token id " + std::to_string(t) + " is outside the vocabulary");
  int64_t total = static_cast<int64_t>(prompt.size()) + sp.max_tokens;
  if (total > limits.max_model_len)
    bad("max_tokens", "prompt of " + std::to_string(prompt.size()) + " tokens + max_tokens " +
                          std::to_string(sp.max_tokens) + " exceeds the context length of " +
                          std::to_string(limits.max_model_len));
  if (static_cast<int64_t>(prompt.size()) > limits.kv_tokens)
    throw Error(ErrorCode::kResourceExhausted,
                "prompt: " + std::to_string(prompt.size()) +
                    " tokens can never fit the KV cache of " + std::to_string(limits.kv_tokens) +
                    " tokens");
  if (total > limits.kv_tokens)
    throw Error(ErrorCode::kResourceExhausted,
                "max_tokens: prompt + max_tokens = " + std::to_string(total) +
                    " tokens can never fit the KV cache of " + std::to_string(limits.kv_tokens) +
                    " tokens");
}

nlohmann::json encode_add(const std::string& rid, const std::vector<int32_t>& prompt,
                          const std::vector<int32_t>& output, const SamplingParams& sp) {
  nlohmann::json j = sampling_to_json(sp);
  j["type"] = "add";
  j["rid"] = rid;
  j["prompt"] = prompt;
  j["output"] = output;
  return j;
}

Sequence decode_add(const nlohmann::json& body) {
  Sequence s;
  if (!body.contains("rid") || !body["rid"].is_string()) bad("rid", "missing or not a string");
  s.id = body["rid"].get<std::string>();
  s.prompt = parse_prompt(body);
  s.output = token_array(body, "output");
  s.params = parse_sampling(body);
  return s;
}

}  // namespace eep
