// Continuous batching with chunked prefill and preemption by recompute.
//
// Invariants kept between calls:
//  - waiting sequences hold no KV blocks and have num_computed == 0 (a sequence gets its first
//    chunk in the same schedule() that moves it to running);
//  - running_ is sorted by arrival, so "running first, in arrival order" and "preempt the
//    latest arrival" are a walk from the front and a pop from the back;
//  - every running sequence has at least one uncomputed token (after a sampled token is
//    appended, its KV is computed by the next decode).
#include <algorithm>
#include <string>
#include <utility>

#include "eep/common.h"
#include "eep/scheduler.h"

namespace eep {
namespace {

int blocks_for(int num_tokens, int block_size) { return (num_tokens + block_size - 1) / block_size; }

const SchedulerConfig& checked(const SchedulerConfig& c) {
  auto positive = [](int v, const char* name) {
    EEP_CHECK(v >= 1, ErrorCode::kInvalidArgument,
              std::string(name) + " must be >= 1, got " + std::to_string(v));
  };
  positive(c.num_blocks, "num_blocks");
  positive(c.block_size, "block_size");
  positive(c.max_num_seqs, "max_num_seqs");
  positive(c.max_tokens_per_step, "max_tokens_per_step");
  positive(c.max_model_len, "max_model_len");
  return c;
}

}  // namespace

Scheduler::Scheduler(const SchedulerConfig& cfg) : cfg_(checked(cfg)), alloc_(cfg.num_blocks) {}

void Scheduler::add(Sequence seq) {
  const std::string who = "request '" + seq.id + "': ";
  EEP_CHECK(!seq.prompt.empty(), ErrorCode::kInvalidArgument, who + "empty prompt");
  try {
    validate_sampling(seq.params);
  } catch (const Error& e) {
    throw Error(e.code(), who + e.what());
  }
  const int64_t prompt_len = static_cast<int64_t>(seq.prompt.size());
  const int max_tokens = seq.params.max_tokens;
  EEP_CHECK(prompt_len + max_tokens <= cfg_.max_model_len, ErrorCode::kInvalidArgument,
            who + "prompt of " + std::to_string(prompt_len) + " tokens plus max_tokens " +
                std::to_string(max_tokens) + " exceeds max_model_len " +
                std::to_string(cfg_.max_model_len));
  // A sequence handed over from another engine carries its output so far; one that is already
  // complete has nothing left to do here.
  EEP_CHECK(static_cast<int64_t>(seq.output.size()) < max_tokens, ErrorCode::kInvalidArgument,
            who + "already has " + std::to_string(seq.output.size()) +
                " output tokens, max_tokens is " + std::to_string(max_tokens));
  // Checked for the full length so that a sequence running alone can always finish: otherwise
  // it would preempt itself forever once the cache is full.
  const int64_t needed = (prompt_len + max_tokens + cfg_.block_size - 1) / cfg_.block_size;
  EEP_CHECK(needed <= cfg_.num_blocks, ErrorCode::kResourceExhausted,
            who + "needs " + std::to_string(needed) + " KV blocks, the cache has " +
                std::to_string(cfg_.num_blocks));
  EEP_CHECK(!index_.count(seq.id), ErrorCode::kInvalidArgument,
            who + "duplicate request id");

  // Whatever KV state the sequence had elsewhere is meaningless in this cache.
  seq.num_computed = 0;
  seq.blocks.clear();
  seq.finish = FinishReason::kNone;
  seq.arrival = next_arrival_++;
  storage_.push_back(std::move(seq));
  auto it = std::prev(storage_.end());
  index_.emplace(it->id, it);
  waiting_.push_back(&*it);
}

Sequence* Scheduler::find(const std::string& id) {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &*it->second;
}

bool Scheduler::abort(const std::string& id) {
  Sequence* s = find(id);
  if (!s) return false;
  release(s);
  take(s);
  return true;
}

void Scheduler::release(Sequence* s) {
  for (int32_t b : s->blocks) alloc_.free(b);
  s->blocks.clear();
}

Sequence Scheduler::take(Sequence* s) {
  auto r = std::find(running_.begin(), running_.end(), s);
  if (r != running_.end()) running_.erase(r);
  auto w = std::find(waiting_.begin(), waiting_.end(), s);
  if (w != waiting_.end()) waiting_.erase(w);
  auto it = index_.find(s->id);
  EEP_CHECK(it != index_.end(), ErrorCode::kInternal, "request '" + s->id + "' is not indexed");
  auto node = it->second;
  index_.erase(it);  // before the move below empties s->id
  Sequence out = std::move(*node);
  storage_.erase(node);
  return out;
}

void Scheduler::preempt(Sequence* s) {
  release(s);
  s->num_computed = 0;  // output is kept: on resume prompt + output is recomputed
  ++s->num_preemptions;
  running_.erase(std::find(running_.begin(), running_.end(), s));
  waiting_.push_front(s);
}

void Scheduler::insert_running(Sequence* s) {
  auto pos = std::upper_bound(running_.begin(), running_.end(), s,
                              [](const Sequence* a, const Sequence* b) {
                                return a->arrival < b->arrival;
                              });
  running_.insert(pos, s);
}

bool Scheduler::grow(Sequence* s, int num_tokens) {
  const int needed = blocks_for(num_tokens, cfg_.block_size);
  while (static_cast<int>(s->blocks.size()) < needed) {
    std::optional<int> b = alloc_.allocate();
    if (!b) return false;  // blocks taken so far stay with s; they are needed anyway
    s->blocks.push_back(*b);
  }
  return true;
}

std::vector<ScheduledChunk> Scheduler::schedule() {
  std::vector<ScheduledChunk> chunks;
  int budget = cfg_.max_tokens_per_step;
  bool preempted = false;

  // (1) Running sequences, oldest first: decodes (1 token) and the next chunk of prefills in
  // progress. When blocks run out the newest running sequence gives its blocks back; it has not
  // been scheduled yet this step because it is last in the walk (or it is s itself).
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* s = running_[i];
    const int chunk = std::min(s->total_len() - s->num_computed, budget);
    EEP_CHECK(chunk >= 1, ErrorCode::kInternal,
              "running request '" + s->id + "' has no token to compute");
    bool fits = true;
    while (!grow(s, s->num_computed + chunk)) {
      Sequence* victim = running_.back();
      EEP_CHECK(victim != s || i > 0, ErrorCode::kInternal,
                "request '" + s->id + "' does not fit the KV cache even alone");
      preempt(victim);
      preempted = true;
      if (victim == s) {
        fits = false;
        break;
      }
    }
    if (!fits) break;  // s was the newest: everything after it is already preempted
    const bool sample = s->num_computed + chunk == s->total_len();
    chunks.push_back({s, s->num_computed, chunk, sample});
    budget -= chunk;
    ++i;
  }

  // (2) Waiting sequences, FCFS. Not in a step that preempted: the cache is full, and a sequence
  // just preempted would be recomputed right away, thrashing. A waiting sequence never preempts
  // running ones, and the queue is not skipped past one that does not fit (strict FCFS).
  while (!preempted && !waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size()) < cfg_.max_num_seqs) {
    Sequence* s = waiting_.front();
    const int chunk = std::min(s->total_len() - s->num_computed, budget);
    if (blocks_for(s->num_computed + chunk, cfg_.block_size) -
            static_cast<int>(s->blocks.size()) > alloc_.num_free()) {
      break;
    }
    grow(s, s->num_computed + chunk);
    waiting_.pop_front();
    insert_running(s);
    const bool sample = s->num_computed + chunk == s->total_len();
    chunks.push_back({s, s->num_computed, chunk, sample});
    budget -= chunk;
  }
  return chunks;
}

std::vector<Sequence> Scheduler::complete(const std::vector<ScheduledChunk>& chunks,
                                          const std::vector<int32_t>& sampled) {
  const auto num_samples = std::count_if(chunks.begin(), chunks.end(),
                                         [](const ScheduledChunk& c) { return c.sample; });
  EEP_CHECK(static_cast<size_t>(num_samples) == sampled.size(), ErrorCode::kInternal,
            "complete() got " + std::to_string(sampled.size()) + " sampled tokens for " +
                std::to_string(num_samples) + " sampling chunks");

  std::vector<Sequence> finished;
  size_t next_sample = 0;
  for (const ScheduledChunk& c : chunks) {
    const int32_t token = c.sample ? sampled[next_sample++] : -1;
    // A sequence aborted while its step ran is gone: its chunk is dropped, and the pointer is
    // only compared, never dereferenced, until it is found among the running ones.
    if (std::find(running_.begin(), running_.end(), c.seq) == running_.end()) continue;
    Sequence* s = c.seq;
    EEP_CHECK(c.start == s->num_computed && c.start + c.num_tokens <= s->total_len(),
              ErrorCode::kInternal,
              "chunk [" + std::to_string(c.start) + ", " + std::to_string(c.start + c.num_tokens) +
                  ") does not continue request '" + s->id + "' at " +
                  std::to_string(s->num_computed));
    s->num_computed += c.num_tokens;
    if (!c.sample) continue;

    // The stop token is kept in output: the caller sees why generation ended, and a
    // detokenizer that wants to hide it can drop the last token when finish == kStop.
    s->output.push_back(token);
    const auto& stops = s->params.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
      s->finish = FinishReason::kStop;
    } else if (static_cast<int>(s->output.size()) >= s->params.max_tokens ||
               s->total_len() >= cfg_.max_model_len) {
      s->finish = FinishReason::kLength;
    }
    if (s->finish != FinishReason::kNone) {
      release(s);
      finished.push_back(take(s));
    }
  }
  return finished;
}

std::vector<Sequence> Scheduler::drain() {
  std::vector<Sequence*> all(running_.begin(), running_.end());
  all.insert(all.end(), waiting_.begin(), waiting_.end());
  std::sort(all.begin(), all.end(),
            [](const Sequence* a, const Sequence* b) { return a->arrival < b->arrival; });
  std::vector<Sequence> out;
  out.reserve(all.size());
  for (Sequence* s : all) {
    release(s);
    s->num_computed = 0;  // the KV stays behind; whoever takes the sequence recomputes it
    out.push_back(std::move(*s));
  }
  running_.clear();
  waiting_.clear();
  index_.clear();
  storage_.clear();
  return out;
}

}  // namespace eep
