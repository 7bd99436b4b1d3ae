#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eep/common.h"
#include "eep/scheduler.h"

namespace eep {
namespace {

Sequence make_seq(const std::string& id, int prompt_len, int max_tokens,
                  std::vector<int32_t> stops = {}) {
  Sequence s;
  s.id = id;
  for (int i = 0; i < prompt_len; ++i) s.prompt.push_back(100 + i);
  s.params.max_tokens = max_tokens;
  s.params.stop_token_ids = std::move(stops);
  return s;
}

SchedulerConfig make_cfg(int num_blocks, int block_size, int budget, int max_num_seqs = 64,
                         int max_model_len = 4096) {
  SchedulerConfig c;
  c.num_blocks = num_blocks;
  c.block_size = block_size;
  c.max_tokens_per_step = budget;
  c.max_num_seqs = max_num_seqs;
  c.max_model_len = max_model_len;
  return c;
}

// One token (`token`) per sampling chunk.
std::vector<int32_t> tokens_for(const std::vector<ScheduledChunk>& chunks, int32_t token = 1) {
  std::vector<int32_t> t;
  for (const auto& c : chunks) {
    if (c.sample) t.push_back(token);
  }
  return t;
}

void expect_chunk(const ScheduledChunk& c, const std::string& id, int start, int num_tokens,
                  bool sample) {
  ASSERT_NE(c.seq, nullptr);
  EXPECT_EQ(c.seq->id, id);
  EXPECT_EQ(c.start, start) << id;
  EXPECT_EQ(c.num_tokens, num_tokens) << id;
  EXPECT_EQ(c.sample, sample) << id;
}

ErrorCode add_error(Scheduler& s, Sequence seq, std::string* message = nullptr) {
  try {
    s.add(std::move(seq));
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  ADD_FAILURE() << "add() accepted the sequence";
  return ErrorCode::kInternal;
}

TEST(Scheduler, ChunkedPrefillBoundaries) {
  Scheduler s(make_cfg(64, 4, 8));
  s.add(make_seq("a", 20, 3));
  auto c = s.schedule();
  ASSERT_EQ(c.size(), 1u);
  expect_chunk(c[0], "a", 0, 8, false);
  EXPECT_EQ(c[0].seq->blocks.size(), 2u);
  EXPECT_TRUE(s.complete(c, tokens_for(c)).empty());
  c = s.schedule();
  expect_chunk(c[0], "a", 8, 8, false);
  s.complete(c, {});
  c = s.schedule();
  expect_chunk(c[0], "a", 16, 4, true);  // reaches the end of the prompt: samples
  s.complete(c, {5});
  EXPECT_EQ(s.find("a")->output, std::vector<int32_t>({5}));
  c = s.schedule();
  expect_chunk(c[0], "a", 20, 1, true);  // decode computes the token just sampled
  EXPECT_EQ(c[0].seq->blocks.size(), 6u);
}

TEST(Scheduler, DecodesFirstThenPrefillWithinBudget) {
  Scheduler s(make_cfg(64, 4, 8));
  s.add(make_seq("a", 4, 5));
  auto c = s.schedule();
  s.complete(c, tokens_for(c));
  s.add(make_seq("b", 20, 2));
  c = s.schedule();
  ASSERT_EQ(c.size(), 2u);
  expect_chunk(c[0], "a", 4, 1, true);
  expect_chunk(c[1], "b", 0, 7, false);
  s.complete(c, tokens_for(c));
  c = s.schedule();
  ASSERT_EQ(c.size(), 2u);
  expect_chunk(c[0], "a", 5, 1, true);
  expect_chunk(c[1], "b", 7, 7, false);  // running prefill continues after the decode
  s.complete(c, tokens_for(c));
  c = s.schedule();
  expect_chunk(c[0], "a", 6, 1, true);
  expect_chunk(c[1], "b", 14, 6, true);
}

TEST(Scheduler, FcfsAndBudget) {
  Scheduler s(make_cfg(64, 4, 10));
  s.add(make_seq("a", 6, 4));
  s.add(make_seq("b", 6, 4));
  s.add(make_seq("c", 6, 4));
  auto c = s.schedule();
  ASSERT_EQ(c.size(), 2u);
  expect_chunk(c[0], "a", 0, 6, true);
  expect_chunk(c[1], "b", 0, 4, false);
  EXPECT_EQ(s.num_running(), 2);
  EXPECT_EQ(s.num_waiting(), 1);
  s.complete(c, tokens_for(c));
  c = s.schedule();
  ASSERT_EQ(c.size(), 3u);
  expect_chunk(c[0], "a", 6, 1, true);
  expect_chunk(c[1], "b", 4, 2, true);
  expect_chunk(c[2], "c", 0, 6, true);
}

TEST(Scheduler, MaxNumSeqs) {
  Scheduler s(make_cfg(64, 4, 100, /*max_num_seqs=*/2));
  s.add(make_seq("a", 2, 1));
  s.add(make_seq("b", 2, 3));
  s.add(make_seq("c", 2, 3));
  auto c = s.schedule();
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(s.num_running(), 2);
  EXPECT_EQ(s.num_waiting(), 1);
  auto done = s.complete(c, tokens_for(c));
  ASSERT_EQ(done.size(), 1u);  // a had max_tokens 1
  EXPECT_EQ(done[0].id, "a");
  c = s.schedule();
  ASSERT_EQ(c.size(), 2u);
  expect_chunk(c[0], "b", 2, 1, true);
  expect_chunk(c[1], "c", 0, 2, true);
}

TEST(Scheduler, PreemptsLatestAndResumesByRecompute) {
  // 6 blocks of 2 tokens. a needs 5 blocks over its life, b 4: they cannot both finish.
  Scheduler s(make_cfg(6, 2, 64));
  s.add(make_seq("a", 4, 6));
  s.add(make_seq("b", 4, 4));
  int32_t next = 10;
  auto step = [&] {
    auto c = s.schedule();
    auto done = s.complete(c, tokens_for(c, next++));
    return std::make_pair(c, done);
  };
  step();  // both prefill (2 blocks each)
  step();  // both decode (3 blocks each, cache full)
  step();  // both decode within their third block
  EXPECT_EQ(s.allocator().num_free(), 0);
  Sequence* b = s.find("b");
  EXPECT_EQ(b->output, std::vector<int32_t>({10, 11, 12}));

  // a needs a 4th block: b, the latest arrival, is preempted and keeps its output.
  auto [c, done] = step();
  ASSERT_EQ(c.size(), 1u);
  expect_chunk(c[0], "a", 6, 1, true);
  EXPECT_EQ(b->num_preemptions, 1);
  EXPECT_EQ(b->num_computed, 0);
  EXPECT_TRUE(b->blocks.empty());
  EXPECT_EQ(b->output, std::vector<int32_t>({10, 11, 12}));
  EXPECT_EQ(s.num_waiting(), 1);
  EXPECT_EQ(s.num_running(), 1);

  // b (7 tokens, 4 blocks) does not fit the 2 free blocks while a runs.
  std::tie(c, done) = step();
  ASSERT_EQ(c.size(), 1u);
  std::tie(c, done) = step();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id, "a");
  EXPECT_EQ(done[0].finish, FinishReason::kLength);
  EXPECT_EQ(done[0].output.size(), 6u);
  EXPECT_EQ(s.allocator().num_free(), 6);

  // b resumes: recomputes prompt + its 3 outputs [0, 7) and samples its 4th token. (Checked
  // before complete(): a finished sequence's chunk pointer dangles afterwards.)
  c = s.schedule();
  ASSERT_EQ(c.size(), 1u);
  expect_chunk(c[0], "b", 0, 7, true);
  done = s.complete(c, {99});
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].output, std::vector<int32_t>({10, 11, 12, 99}));
  EXPECT_EQ(done[0].num_preemptions, 1);
  EXPECT_FALSE(s.has_work());
}

TEST(Scheduler, NewestRunningPreemptsItself) {
  // a needs no new block this step but b does and none is free: b is the latest, so it goes.
  Scheduler s(make_cfg(3, 4, 64));
  s.add(make_seq("a", 4, 3));
  s.add(make_seq("b", 3, 4));
  auto c = s.schedule();
  s.complete(c, tokens_for(c));  // a: 5 tokens, b: 4
  c = s.schedule();
  s.complete(c, tokens_for(c));  // a took the last block
  EXPECT_EQ(s.allocator().num_free(), 0);
  c = s.schedule();
  ASSERT_EQ(c.size(), 1u);
  expect_chunk(c[0], "a", 5, 1, true);
  EXPECT_EQ(s.find("b")->num_preemptions, 1);
  auto done = s.complete(c, tokens_for(c));
  ASSERT_EQ(done.size(), 1u);  // a reached max_tokens 3
  c = s.schedule();
  ASSERT_EQ(c.size(), 1u);
  expect_chunk(c[0], "b", 0, 5, true);  // prompt 3 + 2 outputs
}

TEST(Scheduler, FinishesOnStopTokenIncludedInOutput) {
  Scheduler s(make_cfg(64, 4, 64));
  s.add(make_seq("a", 4, 10, {7, 8}));
  auto c = s.schedule();
  EXPECT_TRUE(s.complete(c, {5}).empty());
  c = s.schedule();
  auto done = s.complete(c, {8});
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].finish, FinishReason::kStop);
  EXPECT_EQ(done[0].output, std::vector<int32_t>({5, 8}));
  EXPECT_TRUE(done[0].blocks.empty());
  EXPECT_EQ(s.allocator().num_free(), 64);
  EXPECT_EQ(s.find("a"), nullptr);
}

TEST(Scheduler, FinishesOnLengthAndMaxModelLen) {
  Scheduler s(make_cfg(64, 4, 64, 64, /*max_model_len=*/8));
  s.add(make_seq("a", 4, 4));  // reaches max_tokens and max_model_len together
  s.add(make_seq("b", 2, 3));
  std::vector<Sequence> finished;
  while (s.has_work()) {
    auto c = s.schedule();
    for (auto& f : s.complete(c, tokens_for(c))) finished.push_back(std::move(f));
  }
  ASSERT_EQ(finished.size(), 2u);
  EXPECT_EQ(finished[0].id, "b");
  EXPECT_EQ(finished[0].output.size(), 3u);
  EXPECT_EQ(finished[1].id, "a");
  EXPECT_EQ(finished[1].total_len(), 8);
  for (const auto& f : finished) EXPECT_EQ(f.finish, FinishReason::kLength);
  EXPECT_EQ(s.allocator().num_free(), 64);
}

TEST(Scheduler, AddValidation) {
  Scheduler s(make_cfg(2, 4, 64, 64, /*max_model_len=*/16));
  std::string msg;
  EXPECT_EQ(add_error(s, make_seq("e", 0, 4), &msg), ErrorCode::kInvalidArgument);
  EXPECT_NE(msg.find("empty prompt"), std::string::npos) << msg;
  EXPECT_EQ(add_error(s, make_seq("m", 2, 0)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(add_error(s, make_seq("l", 10, 7), &msg), ErrorCode::kInvalidArgument);
  EXPECT_NE(msg.find("prompt of 10 tokens plus max_tokens 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("16"), std::string::npos) << msg;
  EXPECT_EQ(add_error(s, make_seq("k", 6, 5), &msg), ErrorCode::kResourceExhausted);
  EXPECT_NE(msg.find("needs 3 KV blocks, the cache has 2"), std::string::npos) << msg;
  Sequence hot = make_seq("t", 2, 2);
  hot.params.temperature = -1;
  EXPECT_EQ(add_error(s, hot), ErrorCode::kInvalidArgument);
  Sequence p = make_seq("p", 2, 2);
  p.params.top_p = 0;
  EXPECT_EQ(add_error(s, p), ErrorCode::kInvalidArgument);
  Sequence k = make_seq("k2", 2, 2);
  k.params.top_k = -3;
  EXPECT_EQ(add_error(s, k), ErrorCode::kInvalidArgument);
  Sequence done = make_seq("d", 2, 2);
  done.output = {1, 2};
  EXPECT_EQ(add_error(s, done), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(s.has_work());

  s.add(make_seq("x", 2, 2));
  EXPECT_EQ(add_error(s, make_seq("x", 3, 1), &msg), ErrorCode::kInvalidArgument);
  EXPECT_NE(msg.find("duplicate"), std::string::npos) << msg;
  EXPECT_EQ(s.num_waiting(), 1);
  EXPECT_THROW(Scheduler(make_cfg(0, 4, 64)), Error);
  EXPECT_THROW(Scheduler(make_cfg(4, 4, 0)), Error);
}

TEST(Scheduler, AbortFreesBlocks) {
  Scheduler s(make_cfg(16, 4, 64));
  s.add(make_seq("a", 10, 4));
  s.add(make_seq("b", 10, 4));
  auto c = s.schedule();
  s.complete(c, tokens_for(c));
  s.add(make_seq("c", 5, 4));
  EXPECT_EQ(s.allocator().num_free(), 10);
  EXPECT_TRUE(s.abort("a"));
  EXPECT_TRUE(s.abort("c"));  // waiting
  EXPECT_FALSE(s.abort("a"));
  EXPECT_FALSE(s.abort("zz"));
  EXPECT_EQ(s.num_running(), 1);
  EXPECT_EQ(s.num_waiting(), 0);

  // Aborted between schedule() and complete(): its chunk is dropped, the others proceed.
  c = s.schedule();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(s.abort("b"));
  EXPECT_TRUE(s.complete(c, tokens_for(c)).empty());
  EXPECT_EQ(s.allocator().num_free(), 16);
  EXPECT_FALSE(s.has_work());
}

TEST(Scheduler, DrainReturnsEverythingInArrivalOrderAndResumesElsewhere) {
  Scheduler s(make_cfg(16, 4, 64, /*max_num_seqs=*/1));
  s.add(make_seq("a", 5, 8));
  s.add(make_seq("b", 3, 8));
  for (int i = 0; i < 3; ++i) {
    auto c = s.schedule();
    s.complete(c, tokens_for(c, 40 + i));
  }
  auto out = s.drain();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].id, "a");
  EXPECT_EQ(out[0].output, std::vector<int32_t>({40, 41, 42}));
  EXPECT_EQ(out[0].num_computed, 0);
  EXPECT_TRUE(out[0].blocks.empty());
  EXPECT_EQ(out[1].id, "b");
  EXPECT_TRUE(out[1].output.empty());
  EXPECT_FALSE(s.has_work());
  EXPECT_EQ(s.allocator().num_free(), 16);
  EXPECT_EQ(s.find("a"), nullptr);

  Scheduler t(make_cfg(16, 4, 64));
  for (auto& q : out) t.add(std::move(q));
  auto c = t.schedule();
  ASSERT_EQ(c.size(), 2u);
  expect_chunk(c[0], "a", 0, 8, true);  // prompt 5 + 3 outputs
  expect_chunk(c[1], "b", 0, 3, true);
}

}  // namespace
}  // namespace eep
