// Per-engine request scheduling: paged KV block allocation, continuous batching with chunked
// prefill, preemption by recompute when blocks run out, and sampling with a per-request seed.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace eep {

// Free list of KV-cache blocks. Allocation order is deterministic (lowest free id first).
class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);
  std::optional<int> allocate();
  void free(int block);  // throws Error(kInternal) on a double free or an out-of-range id
  int num_free() const;
  int num_blocks() const { return num_blocks_; }

 private:
  int num_blocks_;
  std::vector<bool> used_;
  std::vector<int> free_;  // kept as a min-heap
};

struct SamplingParams {
  int max_tokens = 16;
  double temperature = 0.0;  // 0 = greedy
  int top_k = 0;             // 0 = whole vocabulary
  double top_p = 1.0;        // (0, 1]
  uint64_t seed = 0;
  std::vector<int32_t> stop_token_ids;
};

// Samples one token from logits[vocab]. Greedy (temperature 0) is argmax, lowest id on ties.
// Otherwise temperature, then top-k, then top-p, then a draw from a counter-based generator keyed
// by (seed, position): the same request resumed elsewhere at the same position draws the same
// token, so continuation after a move or a preemption is exact.
int32_t sample_token(const float* logits, int vocab, const SamplingParams& sp, int64_t position);

// Throws Error(kInvalidArgument) unless temperature >= 0 (not NaN), 0 < top_p <= 1, top_k >= 0
// and max_tokens >= 1.
void validate_sampling(const SamplingParams& sp);
// Throws Error(kInvalidArgument) naming the first id outside [0, vocab) and its position.
void validate_tokens(const std::vector<int32_t>& tokens, int vocab);

enum class FinishReason { kNone, kLength, kStop, kAbort, kError };
const char* finish_reason_name(FinishReason r);  // "", "length", "stop", "abort", "error"

struct Sequence {
  std::string id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;     // generated so far (including tokens produced before a move)
  SamplingParams params;
  int num_computed = 0;            // tokens whose KV is in the cache
  std::vector<int32_t> blocks;     // block table
  FinishReason finish = FinishReason::kNone;
  uint64_t arrival = 0;            // order of arrival, for FCFS and preemption
  int num_preemptions = 0;

  int total_len() const { return static_cast<int>(prompt.size() + output.size()); }
  int32_t token_at(int pos) const {
    return pos < static_cast<int>(prompt.size()) ? prompt[pos] : output[pos - prompt.size()];
  }
};

struct SchedulerConfig {
  int num_blocks = 256;
  int block_size = 16;
  int max_num_seqs = 64;        // running sequences
  int max_tokens_per_step = 256;  // token budget of one step (chunked prefill splits prompts)
  int max_model_len = 4096;     // prompt + output
};

// One piece of work in a step: compute tokens [start, start + num_tokens) of seq; when
// `sample` the last of them produces the next token.
struct ScheduledChunk {
  Sequence* seq = nullptr;
  int start = 0;
  int num_tokens = 0;
  bool sample = false;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& cfg);

  // Validates against the config (empty prompt, prompt + max_tokens over max_model_len, a prompt
  // that can never fit the cache) and queues the sequence. Throws Error(kInvalidArgument or
  // kResourceExhausted) naming the problem; nothing is queued then.
  void add(Sequence seq);
  // Removes a waiting or running sequence, freeing its blocks. False if unknown.
  bool abort(const std::string& id);

  // Plans one step: running sequences first (decode), then new/preempted ones (prefill chunks),
  // within the token budget; allocates blocks, preempting the latest-arrived running sequence
  // (its KV is dropped and recomputed later) when blocks run out.
  std::vector<ScheduledChunk> schedule();
  // After the step ran: records sampled tokens (one per chunk with sample=true, same order),
  // advances num_computed, finishes sequences on stop token / max_tokens / max_model_len, frees
  // their blocks. A stop token is kept as the last token of output (finish == kStop). Chunks of
  // sequences aborted while the step ran are skipped (their sampled token still counts). Returns the sequences that finished this step (removed from the scheduler).
  std::vector<Sequence> complete(const std::vector<ScheduledChunk>& chunks,
                                 const std::vector<int32_t>& sampled);
  // Removes every sequence (for hand-over to another engine), returning them with output so far.
  std::vector<Sequence> drain();

  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  const SchedulerConfig& config() const { return cfg_; }
  const BlockAllocator& allocator() const { return alloc_; }
  Sequence* find(const std::string& id);

 private:
  SchedulerConfig cfg_;
  BlockAllocator alloc_;
  // std::list: ScheduledChunk holds Sequence*, so addresses must survive other insertions and
  // erasures; erase is O(1) through the iterator kept in index_.
  std::list<Sequence> storage_;
  std::map<std::string, std::list<Sequence>::iterator> index_;
  std::vector<Sequence*> running_;  // sorted by arrival (oldest first)
  std::deque<Sequence*> waiting_;   // FCFS; preempted sequences go back to the front
  uint64_t next_arrival_ = 0;
  void release(Sequence* s);         // frees the block table
  Sequence take(Sequence* s);        // removes s from storage, index and queues; returns it
  void preempt(Sequence* s);         // running -> front of waiting, KV dropped
  void insert_running(Sequence* s);  // keeps running_ sorted by arrival
  bool grow(Sequence* s, int num_tokens);  // blocks for num_tokens in total; false if none free
};

}  // namespace eep
