// Process-wide allocator settings for eep's programs.
#pragma once

namespace eep {

// Tells the C allocator to keep buffers of up to 256 MiB in its heap instead of mapping and
// unmapping each one: an elastic transfer receives thousands of fresh 0.4-6 MB tensors, and
// glibc's default (mmap above 128 KiB at first) made every one an mmap, page faults and an
// munmap, 4x slower than the heap (docs/bench-micro.md). Call once at the start of main.
void keep_large_buffers_in_heap();

}  // namespace eep
