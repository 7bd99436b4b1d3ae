// KV-cache block free list. Lowest free id first, so two engines fed the same requests lay out
// their caches identically (reproducible debugging, comparable dumps).
#include <algorithm>
#include <functional>
#include <string>

#include "eep/common.h"
#include "eep/scheduler.h"

namespace eep {

BlockAllocator::BlockAllocator(int num_blocks) : num_blocks_(num_blocks) {
  EEP_CHECK(num_blocks >= 0, ErrorCode::kInvalidArgument,
            "num_blocks must be >= 0, got " + std::to_string(num_blocks));
  used_.assign(num_blocks, false);
  free_.reserve(num_blocks);
  // Ascending order is already a valid min-heap.
  for (int b = 0; b < num_blocks; ++b) free_.push_back(b);
}

std::optional<int> BlockAllocator::allocate() {
  if (free_.empty()) return std::nullopt;
  std::pop_heap(free_.begin(), free_.end(), std::greater<int>());
  int block = free_.back();
  free_.pop_back();
  used_[block] = true;
  return block;
}

void BlockAllocator::free(int block) {
  EEP_CHECK(block >= 0 && block < num_blocks_, ErrorCode::kInternal,
            "free of KV block " + std::to_string(block) + " outside [0, " +
                std::to_string(num_blocks_) + ")");
  EEP_CHECK(used_[block], ErrorCode::kInternal,
            "double free of KV block " + std::to_string(block));
  used_[block] = false;
  free_.push_back(block);
  std::push_heap(free_.begin(), free_.end(), std::greater<int>());
}

int BlockAllocator::num_free() const { return static_cast<int>(free_.size()); }

}  // namespace eep
