// Randomized simulation of the scheduler against a tight KV cache: arrivals, preemptions,
// aborts and drains to a fresh scheduler, with every invariant checked after every step.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "eep/common.h"
#include "eep/scheduler.h"

namespace eep {
namespace {

constexpr int32_t kStopToken = 0;
constexpr int32_t kNumTokenValues = 40;

// The "model": the token at a position is a fixed function of (request, position), so a
// sequence recomputed after a preemption or a move must produce the same output as one that
// never was.
int32_t model_token(int request, int position) {
  uint64_t x = (static_cast<uint64_t>(request) << 32) ^ static_cast<uint64_t>(position);
  x = (x ^ (x >> 31)) * 0x7fb5d329728ea185ULL;
  x = (x ^ (x >> 27)) * 0x81dadef4bc2dd44dULL;
  return static_cast<int32_t>((x ^ (x >> 33)) % kNumTokenValues);
}

struct Expected {
  std::vector<int32_t> output;
  FinishReason finish;
};

Expected expected_output(int request, int prompt_len, int max_tokens, bool stops) {
  Expected e{{}, FinishReason::kLength};
  for (int k = 0; k < max_tokens; ++k) {
    int32_t t = model_token(request, prompt_len + k);
    e.output.push_back(t);
    if (stops && t == kStopToken) {
      e.finish = FinishReason::kStop;
      break;
    }
  }
  return e;
}

void check_invariants(Scheduler& s, const std::set<std::string>& live,
                      const std::vector<ScheduledChunk>& chunks) {
  const SchedulerConfig& cfg = s.config();
  int num_tokens = 0;
  std::set<const Sequence*> scheduled;
  for (const auto& c : chunks) {
    ASSERT_TRUE(scheduled.insert(c.seq).second) << "sequence scheduled twice in one step";
    ASSERT_GE(c.num_tokens, 1);
    ASSERT_EQ(c.start, c.seq->num_computed) << c.seq->id;
    ASSERT_LE(c.start + c.num_tokens, c.seq->total_len()) << c.seq->id;
    ASSERT_EQ(c.sample, c.start + c.num_tokens == c.seq->total_len()) << c.seq->id;
    ASSERT_GE(static_cast<int>(c.seq->blocks.size()) * cfg.block_size, c.start + c.num_tokens);
    num_tokens += c.num_tokens;
  }
  ASSERT_LE(num_tokens, cfg.max_tokens_per_step);
  ASSERT_LE(s.num_running(), cfg.max_num_seqs);
  ASSERT_EQ(s.num_running() + s.num_waiting(), static_cast<int>(live.size()));

  std::set<int32_t> owned;
  for (const auto& id : live) {
    const Sequence* q = s.find(id);
    ASSERT_NE(q, nullptr) << id;
    ASSERT_LE(static_cast<int>(q->blocks.size()),
              (q->total_len() + cfg.block_size - 1) / cfg.block_size + 0)
        << "more blocks than tokens need";
    for (int32_t b : q->blocks) {
      ASSERT_GE(b, 0);
      ASSERT_LT(b, cfg.num_blocks);
      ASSERT_TRUE(owned.insert(b).second) << "block " << b << " owned twice";
    }
  }
  ASSERT_EQ(s.allocator().num_free() + static_cast<int>(owned.size()), cfg.num_blocks);
}

void simulate(uint32_t seed) {
  std::mt19937 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  SchedulerConfig cfg;
  cfg.block_size = uniform(1, 8);
  cfg.max_model_len = 96;
  cfg.num_blocks = (cfg.max_model_len + cfg.block_size - 1) / cfg.block_size + uniform(0, 10);
  cfg.max_num_seqs = uniform(1, 12);
  cfg.max_tokens_per_step = uniform(1, 64);
  auto sched = std::make_unique<Scheduler>(cfg);

  const int num_requests = 150;
  std::map<std::string, Expected> expected;
  std::map<std::string, int> prompt_len;
  std::set<std::string> live, aborted;
  std::map<std::string, Sequence> finished;
  int next_request = 0;
  int total_preemptions_seen = 0;

  for (int step = 0; step < 200000; ++step) {
    // Bursty arrivals keep the cache under pressure.
    int arrivals = uniform(0, 3) == 0 ? uniform(1, 6) : 0;
    for (int a = 0; a < arrivals && next_request < num_requests; ++a, ++next_request) {
      Sequence q;
      q.id = "r" + std::to_string(next_request);
      int plen = uniform(1, 48);
      for (int i = 0; i < plen; ++i) q.prompt.push_back(model_token(next_request, i));
      q.params.max_tokens = uniform(1, cfg.max_model_len - plen);
      bool stops = uniform(0, 1) == 1;
      if (stops) q.params.stop_token_ids = {kStopToken};
      expected[q.id] = expected_output(next_request, plen, q.params.max_tokens, stops);
      prompt_len[q.id] = plen;
      live.insert(q.id);
      sched->add(std::move(q));
    }
    if (!sched->has_work()) {
      if (next_request == num_requests) break;
      continue;
    }

    // Now and then: abort a random live request, or hand everything to a fresh scheduler.
    if (uniform(0, 150) == 0 && !live.empty()) {
      auto it = live.begin();
      std::advance(it, uniform(0, static_cast<int>(live.size()) - 1));
      ASSERT_TRUE(sched->abort(*it));
      aborted.insert(*it);
      live.erase(it);
    }
    if (uniform(0, 300) == 0) {
      auto moved = sched->drain();
      ASSERT_EQ(sched->allocator().num_free(), cfg.num_blocks);
      for (size_t i = 1; i < moved.size(); ++i) ASSERT_LT(moved[i - 1].arrival, moved[i].arrival);
      sched = std::make_unique<Scheduler>(cfg);
      for (auto& q : moved) sched->add(std::move(q));
    }
    if (!sched->has_work()) continue;

    auto chunks = sched->schedule();
    ASSERT_FALSE(chunks.empty()) << "no progress with work pending at step " << step;
    check_invariants(*sched, live, chunks);
    if (testing::Test::HasFatalFailure()) return;

    std::vector<int32_t> sampled;
    for (const auto& c : chunks) {
      if (!c.sample) continue;
      int request = std::stoi(c.seq->id.substr(1));
      sampled.push_back(model_token(request, c.seq->total_len()));
    }
    for (auto& f : sched->complete(chunks, sampled)) {
      total_preemptions_seen += f.num_preemptions;
      ASSERT_TRUE(f.blocks.empty());
      live.erase(f.id);
      std::string id = f.id;
      finished.emplace(id, std::move(f));
    }
    check_invariants(*sched, live, {});
    if (testing::Test::HasFatalFailure()) return;
  }

  ASSERT_EQ(next_request, num_requests);
  ASSERT_FALSE(sched->has_work()) << "simulation did not terminate";
  ASSERT_EQ(sched->allocator().num_free(), cfg.num_blocks);
  ASSERT_EQ(finished.size() + aborted.size(), static_cast<size_t>(num_requests));
  for (const auto& [id, f] : finished) {
    const Expected& e = expected.at(id);
    EXPECT_EQ(f.output, e.output) << id << " (seed " << seed << ")";
    EXPECT_EQ(f.finish, e.finish) << id;
    if (f.finish == FinishReason::kLength) {
      EXPECT_EQ(f.output.size(), size_t(f.params.max_tokens));
    } else {
      EXPECT_EQ(f.output.back(), kStopToken);
    }
  }
  testing::Test::RecordProperty("preemptions_seed_" + std::to_string(seed),
                                total_preemptions_seen);
}

TEST(SchedulerSim, RandomWorkloadsKeepInvariants) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    simulate(seed);
    if (HasFatalFailure()) return;
  }
}

// The tight-cache case on its own, with a check that preemption actually happens.
TEST(SchedulerSim, TightCachePreempts) {
  SchedulerConfig cfg;
  cfg.block_size = 4;
  cfg.max_model_len = 64;
  cfg.num_blocks = 16;
  cfg.max_num_seqs = 8;
  cfg.max_tokens_per_step = 32;
  Scheduler s(cfg);
  std::set<std::string> live;
  for (int r = 0; r < 8; ++r) {
    Sequence q;
    q.id = "r" + std::to_string(r);
    for (int i = 0; i < 8; ++i) q.prompt.push_back(model_token(r, i));
    q.params.max_tokens = 56;
    live.insert(q.id);
    s.add(std::move(q));
  }
  int preemptions = 0, steps = 0;
  while (s.has_work()) {
    ASSERT_LT(++steps, 10000);
    auto chunks = s.schedule();
    check_invariants(s, live, chunks);
    if (HasFatalFailure()) return;
    std::vector<int32_t> sampled;
    for (const auto& c : chunks) {
      if (c.sample) sampled.push_back(model_token(std::stoi(c.seq->id.substr(1)), c.seq->total_len()));
    }
    for (auto& f : s.complete(chunks, sampled)) {
      EXPECT_EQ(f.output.size(), 56u);
      EXPECT_EQ(f.output, expected_output(std::stoi(f.id.substr(1)), 8, 56, false).output);
      preemptions += f.num_preemptions;
      live.erase(f.id);
    }
  }
  EXPECT_TRUE(live.empty());
  EXPECT_GT(preemptions, 0);
}

}  // namespace
}  // namespace eep
