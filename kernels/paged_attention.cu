#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "check.cuh"
#include "launch.cuh"
#include "paged_attention.cuh"
#include "paged_attention_mma.cuh"

namespace eep::kernels {

namespace {
// fn(std::integral_constant<int, D>) for the head dimensions the kernels are built for.
template <typename Fn>
void dispatch_head_dim(int head_dim, Fn&& fn) {
  switch (head_dim) {
    case 64: return fn(std::integral_constant<int, 64>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: EEP_REQUIRE(false, "paged_decode_attention: head_dim must be 64, 128 or 256");
  }
}
// EEP_CUDA_DECODE_ATTENTION, read once: the kernel kAuto stands for, and whether the tensor-core
// kernel may split sequences (diagnostics and A/B runs).
struct Override {
  DecodeAttention impl = DecodeAttention::kAuto;
  bool no_split = false;
};
const Override& env_override() {
  static const Override v = [] {
    Override o;
    const char* e = std::getenv("EEP_CUDA_DECODE_ATTENTION");
    if (!e || !*e) return o;
    if (!std::strcmp(e, "per-head")) {
      o.impl = DecodeAttention::kPerHead;
    } else if (!std::strcmp(e, "per-kv-head")) {
      o.impl = DecodeAttention::kPerKvHead;
    } else if (!std::strcmp(e, "mma") || !std::strcmp(e, "mma-unsplit")) {
      o.impl = DecodeAttention::kMma;
      o.no_split = !std::strcmp(e, "mma-unsplit");
    } else if (!std::strcmp(e, "mma-one-v")) {
      o.impl = DecodeAttention::kMmaOneV;
    } else {
      EEP_REQUIRE(false, "EEP_CUDA_DECODE_ATTENTION must be per-head, per-kv-head, mma, "
                         "mma-unsplit or mma-one-v");
    }
    return o;
  }();
  return v;
}

constexpr int kMmaTile = 32;  // positions per tile of the tensor-core kernel
constexpr int kMaxDevices = 64;

bool mma_applies(int num_heads, int num_kv_heads, int head_dim) {
  return num_heads / num_kv_heads <= detail::kMmaMaxGroup && (head_dim == 64 || head_dim == 128);
}

// How the tensor-core kernel splits each sequence's positions: with few (sequence, KV head) pairs
// (at most half kDecodeAttentionSplitWarps; at 512 pairs, batch 128 of Qwen3-30B-A3B, splitting
// lost 1-3% in run 43) a warp takes a range of 2 to 16 tiles, fewer the fewer the pairs (4 pairs:
// 64 positions, 32: 128, 128 and more: 512), and a second kernel merges the ranges. The range
// depends on the pair count only, not on the block table's capacity (a graph's tables are
// padded): a sequence's result depends only on its length, the same eager and replayed (ranges
// past its length add exact zeros; one range gives the unsplit kernel's bits).
struct Split {
  int splits = 1, len = 0;  // ranges, positions per range (a multiple of the tile)
};
Split mma_split(int num_seqs, int num_kv_heads, int block_size, int max_blocks_per_seq) {
  const long long pairs = (long long)num_seqs * num_kv_heads;
  Split s;
  if (env_override().no_split || 2 * pairs > kDecodeAttentionSplitWarps) return s;
  int tiles = 2;
  while (tiles < 16 && tiles * 8 < pairs) tiles *= 2;
  const long long positions = (long long)block_size * max_blocks_per_seq;
  const long long splits = (positions + tiles * kMmaTile - 1) / (tiles * kMmaTile);
  if (splits < 2) return s;
  s.len = tiles * kMmaTile;
  s.splits = int(splits);
  return s;
}
// Warps of the two-buffer tensor-core kernel (a block is one warp) the current device holds at
// once; read once per device (a host query, not stream work, so safe while capturing a graph).
template <int D>
int mma_two_buffer_wave() {
  static std::once_flag once[kMaxDevices];
  static int wave[kMaxDevices];
  int device = 0;
  EEP_CUDA_CHECK(cudaGetDevice(&device));
  EEP_REQUIRE(device >= 0 && device < kMaxDevices, "paged_decode_attention: device id too large");
  std::call_once(once[device], [&] {
    int per_sm = 0, sms = 0;
    EEP_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, detail::paged_decode_attention_mma_kernel<D, kMmaTile>, 32, 0));
    EEP_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    wave[device] = per_sm * sms;
  });
  return wave[device];
}
}  // namespace

size_t paged_decode_attention_workspace_bytes(int num_seqs, int num_heads, int num_kv_heads,
                                              int head_dim, int block_size,
                                              int max_blocks_per_seq) {
  if (num_seqs <= 0 || num_kv_heads <= 0 || num_heads % num_kv_heads != 0 ||
      !mma_applies(num_heads, num_kv_heads, head_dim))
    return 0;
  const Split s = mma_split(num_seqs, num_kv_heads, block_size, max_blocks_per_seq);
  if (s.splits < 2) return 0;
  return size_t(num_seqs) * num_heads * s.splits * (head_dim + 2) * sizeof(float);
}

void paged_decode_attention(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                            const int32_t* block_tables, const int32_t* seq_lens, bf16* out,
                            int num_seqs, int num_heads, int num_kv_heads, int head_dim,
                            int block_size, int max_blocks_per_seq, cudaStream_t stream,
                            DecodeAttention impl, void* workspace) {
  EEP_REQUIRE(num_seqs >= 0 && num_heads > 0 && num_kv_heads > 0 &&
                  num_heads % num_kv_heads == 0,
              "paged_decode_attention: num_heads a positive multiple of num_kv_heads");
  EEP_REQUIRE(block_size > 0 && max_blocks_per_seq > 0,
              "paged_decode_attention: block_size > 0 and max_blocks_per_seq > 0");
  if (num_seqs == 0) return;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const int group = num_heads / num_kv_heads;
  const bool per_kv_head_ok = group <= detail::kGqaMaxGroup;
  const bool mma_ok = mma_applies(num_heads, num_kv_heads, head_dim);
  EEP_REQUIRE(impl != DecodeAttention::kPerKvHead || per_kv_head_ok,
              "paged_decode_attention: the per-KV-head kernel takes at most 8 query heads per KV head");
  EEP_REQUIRE((impl != DecodeAttention::kMma && impl != DecodeAttention::kMmaOneV) || mma_ok,
              "paged_decode_attention: the tensor-core kernel takes head_dim 64 or 128 and at most "
              "16 query heads per KV head");
  if (impl == DecodeAttention::kAuto) {
    const DecodeAttention o = env_override().impl;
    if (((o == DecodeAttention::kMma || o == DecodeAttention::kMmaOneV) && mma_ok) ||
        (o == DecodeAttention::kPerKvHead && per_kv_head_ok) || o == DecodeAttention::kPerHead)
      impl = o;
  }
  // Tensor cores where they apply (faster at every measured batch, kDecodeAttention's comment);
  // else per KV head when there are blocks enough to fill the GPU that way (it loads each K/V
  // row once for the group); per query head for few sequences, where its 8x the blocks spread
  // the reads better.
  const int pairs = num_seqs * num_kv_heads;
  // One V buffer when the two-buffer kernel's warps do not fit one wave (kMmaOneV's comment).
  if (impl == DecodeAttention::kAuto && mma_ok &&
      pairs > (head_dim == 64 ? mma_two_buffer_wave<64>() : mma_two_buffer_wave<128>()))
    impl = DecodeAttention::kMmaOneV;
  const bool one_v = impl == DecodeAttention::kMmaOneV;
  const bool mma = impl == DecodeAttention::kMma || one_v ||
                   (impl == DecodeAttention::kAuto && mma_ok);
  const bool per_kv_head = !mma && (impl == DecodeAttention::kPerKvHead ||
                                    (impl == DecodeAttention::kAuto && per_kv_head_ok &&
                                     pairs >= kDecodeAttentionPerKvHeadBlocks));
  if (mma) {
    const float scale_log2 = scale * 1.4426950408889634f;
    const Split s = workspace ? mma_split(num_seqs, num_kv_heads, block_size, max_blocks_per_seq)
                              : Split{};
    float* partial = s.splits > 1 ? static_cast<float*>(workspace) : nullptr;
    const int rows = num_seqs * num_heads;
    auto go = [&](auto kernel, auto combine) {
      if (one_v) {
        // As much shared memory as the SM has (8 warps of 26 KiB): the carveout the driver
        // would pick is not promised. Once per instance (a host attribute, not stream work).
        static std::once_flag carved[2];
        std::call_once(carved[head_dim == 64 ? 0 : 1], [&] {
          EEP_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                              int(cudaSharedmemCarveoutMaxShared)));
        });
      }
      detail::launch_kernel(kernel, dim3(unsigned(pairs) * unsigned(s.splits)), 32, 0, stream, q,
                            k_cache, v_cache, block_tables, seq_lens, out, num_heads,
                            num_kv_heads, block_size, max_blocks_per_seq, scale_log2, s.splits,
                            partial ? s.len : block_size * max_blocks_per_seq, partial);
      if (partial)
        detail::launch_kernel(combine, dim3(unsigned(rows)), head_dim, 0, stream,
                              static_cast<const float*>(partial), s.splits, rows, out);
    };
    // Tiles of 32 positions: 0-4% faster than 16 at batch 1-256 (run 42).
    if (head_dim == 64 && one_v)
      go(detail::paged_decode_attention_mma_kernel<64, kMmaTile, 1>,
         detail::paged_decode_attention_combine_kernel<64>);
    else if (head_dim == 64)
      go(detail::paged_decode_attention_mma_kernel<64, kMmaTile>,
         detail::paged_decode_attention_combine_kernel<64>);
    else if (one_v)
      go(detail::paged_decode_attention_mma_kernel<128, kMmaTile, 1>,
         detail::paged_decode_attention_combine_kernel<128>);
    else
      go(detail::paged_decode_attention_mma_kernel<128, kMmaTile>,
         detail::paged_decode_attention_combine_kernel<128>);
    return;
  }
  dispatch_head_dim(head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    if (per_kv_head)
      detail::launch_kernel(detail::paged_decode_attention_gqa_kernel<D>,
                            dim3(unsigned(num_seqs) * unsigned(num_kv_heads)), D, 0, stream, q,
                            k_cache, v_cache, block_tables, seq_lens, out, num_heads,
                            num_kv_heads, block_size, max_blocks_per_seq, scale);
    else
      detail::launch_kernel(detail::paged_decode_attention_kernel<D>,
                            dim3(unsigned(num_seqs) * unsigned(num_heads)),
                            32 * detail::kAttnWarps, 0, stream, q, k_cache, v_cache,
                            block_tables, seq_lens, out, num_heads, num_kv_heads, block_size,
                            max_blocks_per_seq, scale);
  });
}

}  // namespace eep::kernels
