// eep's CPU forward against an implementation eep did not write: transformers' Qwen3-MoE
// (Qwen3MoeForCausalLM, eager attention, fp32) on a small model trained on a synthetic language
// (scripts/train-tiny-moe.py; tests/data/qwen3-moe-trained holds the checkpoint, its prompts,
// transformers' greedy continuations and logits at every sampling point). Both compute in fp32
// from the same bf16 weights, so they differ only by summation order: this pins eep's reading
// of the architecture (q/k norms, rotary, GQA, softmax-top-k-renormalised routing, SwiGLU
// experts, paged KV, chunked prefill) to the reference's, on one rank and with the experts
// split over two ranks.
#include <gtest/gtest.h>

#include "forward_agreement.h"
#include "store_test_server.h"

namespace {

using namespace eep::testing;

class HfReference : public ::testing::Test {
 protected:
  void SetUp() override { case_ = load_trained_case(test_data_dir() + "/qwen3-moe-trained"); }
  StoreTestServer server_;
  TrainedCase case_;
};

// fp32 against fp32 over 4 layers: summation order alone moves logits by ~1e-6 of their norm.
constexpr double kMaxError = 1e-4;

TEST_F(HfReference, OneRankMatchesTransformers) {
  auto src = eep::open_weights(case_.dir);
  auto cpu = eep::make_cpu_backend(src->config(), options_for(case_.w));
  cpu->load_dense(*src);
  cpu->load_experts(*src, all_local(src->config()), 0);
  auto g = group_of(server_.address(), "hf1", 0, 1);
  const auto seqs = all_indices(case_.w.prompts.size());
  Agreement a;
  a.add(case_.hf, seqs, drive(*cpu, *g, case_.w, seqs, &case_.hf.tokens));
  a.expect_within("cpu vs transformers, one rank", kMaxError, 1.0);
}

// Redundant slots on two ranks: rows cross ranks through a Gloo group, and a replicated
// expert's tokens are split between its replicas.
TEST_F(HfReference, TwoRanksMatchTransformers) {
  auto src = eep::open_weights(case_.dir);
  const auto& cfg = src->config();
  const eep::Placement two = with_replicas(cfg, 4, 2);
  std::unique_ptr<eep::Backend> cpu[2];
  for (int r = 0; r < 2; ++r) {
    cpu[r] = eep::make_cpu_backend(cfg, options_for(case_.w));
    cpu[r]->load_dense(*src);
    cpu[r]->load_experts(*src, two, r);
  }
  const auto mine = alternate(case_.w.prompts.size());
  const auto got = drive_over_gloo(server_.address(), "hf2", cpu, case_.w, mine, &case_.hf.tokens);
  Agreement a;
  for (int r = 0; r < 2; ++r) a.add(case_.hf, mine[r], got[r]);
  a.expect_within("cpu vs transformers, two ranks", kMaxError, 1.0);
}

// The comparison can fail: the same run with the final norm's weights moved by 1% (every other
// one) must not pass (guards against a harness that compares a run with itself).
TEST_F(HfReference, PerturbedWeightsAreCaught) {
  auto src = eep::open_weights(case_.dir);
  auto cpu = eep::make_cpu_backend(src->config(), options_for(case_.w));
  cpu->load_dense(*src);
  cpu->load_experts(*src, all_local(src->config()), 0);
  const std::string name = eep::tensor_name_final_norm();
  std::vector<float> w;
  cpu->get_dense(name, w);
  for (size_t i = 0; i < w.size(); i += 2) w[i] *= 1.01f;
  cpu->set_dense(name, w);
  auto g = group_of(server_.address(), "hf-perturbed", 0, 1);
  const auto seqs = all_indices(case_.w.prompts.size());
  Agreement a;
  a.add(case_.hf, seqs, drive(*cpu, *g, case_.w, seqs, &case_.hf.tokens));
  a.print("cpu with a perturbed final norm vs transformers");
  EXPECT_GT(a.overall(), 10 * kMaxError);
}

}  // namespace
