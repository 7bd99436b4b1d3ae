// The elastic slot interface of the CPU backend (backend.h): stage_experts builds the new slots
// beside the serving ones, commit_staged swaps them in and keeps the replaced ones, and
// restore_previous swaps those back (the engine's rollback after the switch, with no copy of
// the experts given up). Checked on the trained checkpoint through the logits of a fixed
// workload: the restored backend gives bitwise the logits it gave before the switch.
#include <gtest/gtest.h>

#include "eep/common.h"
#include "forward_agreement.h"
#include "store_test_server.h"

namespace {

using namespace eep::testing;

class CpuStaging : public ::testing::Test {
 protected:
  void SetUp() override {
    case_ = load_trained_case(test_data_dir() + "/qwen3-moe-trained");
    src_ = eep::open_weights(case_.dir);
    const auto& cfg = src_->config();
    // Rank 1 of two ranks with redundant slots, then rank 0 of one rank: the staged slots take
    // the experts this rank held plus the other rank's, given as received weights.
    two_ = with_replicas(cfg, 4, 2);
    one_ = all_local(cfg);
    cpu_ = eep::make_cpu_backend(cfg, options_for(case_.w));
    cpu_->load_dense(*src_);
    cpu_->load_experts(*src_, two_, 1);
  }

  // The experts rank 0 of one_ needs and this backend lacks, read from the checkpoint.
  std::map<std::pair<int, int>, std::vector<float>> missing() {
    const auto& cfg = src_->config();
    std::map<std::pair<int, int>, std::vector<float>> got;
    std::vector<float> buf;
    for (int l = 0; l < cfg.num_layers; ++l)
      for (int e = 0; e < cfg.num_experts; ++e)
        if (!cpu_->get_expert(l, e, buf)) {
          std::vector<float> w;
          for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
            const std::vector<float> t = src_->read(eep::tensor_name_expert(l, e, proj));
            w.insert(w.end(), t.begin(), t.end());
          }
          got[{l, e}] = std::move(w);
        }
    return got;
  }

  // Logits of the workload, this backend alone (a group of one routes every row locally, so
  // the backend must hold every expert: used after the switch to one rank).
  Points run_alone(const std::string& name) {
    auto g = group_of(server_.address(), name, 0, 1);
    const auto seqs = all_indices(case_.w.prompts.size());
    return drive(*cpu_, *g, case_.w, seqs, &case_.hf.tokens);
  }

  StoreTestServer server_;
  TrainedCase case_;
  std::unique_ptr<eep::WeightSource> src_;
  eep::Placement two_, one_;
  std::unique_ptr<eep::Backend> cpu_;
};

TEST_F(CpuStaging, CommitThenRestoreGivesTheOldSlotsBack) {
  std::vector<float> buf;
  const auto received = missing();
  ASSERT_FALSE(received.empty());
  cpu_->stage_experts(one_, 0, received);
  // Staging leaves the serving slots alone.
  EXPECT_FALSE(cpu_->get_expert(0, received.begin()->first.second, buf));
  cpu_->commit_staged();
  const Points after = run_alone("staging-after");
  Agreement a;
  a.add(case_.hf, all_indices(case_.w.prompts.size()), after);
  a.expect_within("cpu after the switch vs transformers", 1e-4, 1.0);

  // Back to rank 1 of two: the experts it gave up are its own again, and it serves as before.
  cpu_->restore_previous();
  for (const auto& [key, w] : received) EXPECT_FALSE(cpu_->get_expert(key.first, key.second, buf));
  std::vector<float> restored;
  auto fresh = eep::make_cpu_backend(src_->config(), options_for(case_.w));
  fresh->load_dense(*src_);
  fresh->load_experts(*src_, two_, 1);
  for (int l = 0; l < src_->config().num_layers; ++l)
    for (int e = 0; e < src_->config().num_experts; ++e) {
      const bool held = fresh->get_expert(l, e, buf);
      ASSERT_EQ(cpu_->get_expert(l, e, restored), held) << "layer " << l << " expert " << e;
      if (held) {
        EXPECT_EQ(restored, buf) << "layer " << l << " expert " << e;
      }
    }
  EXPECT_EQ(cpu_->expert_load()[0].size(), size_t(two_.num_slots));
  // Nothing is kept twice.
  EXPECT_THROW(cpu_->restore_previous(), eep::Error);
}

TEST_F(CpuStaging, ReleaseDropsThePreviousSlots) {
  cpu_->stage_experts(one_, 0, missing());
  cpu_->commit_staged();
  cpu_->release_previous();
  EXPECT_THROW(cpu_->restore_previous(), eep::Error);
  // Serving is unaffected.
  Agreement a;
  a.add(case_.hf, all_indices(case_.w.prompts.size()), run_alone("staging-released"));
  a.expect_within("cpu after release vs transformers", 1e-4, 1.0);
}

TEST_F(CpuStaging, RestoreWithoutACommitIsRefused) {
  EXPECT_THROW(cpu_->restore_previous(), eep::Error);
  cpu_->stage_experts(one_, 0, missing());
  cpu_->discard_staged();
  EXPECT_THROW(cpu_->restore_previous(), eep::Error);
}

}  // namespace
