// Host launchers of eep's CUDA kernels. Every launcher takes raw device pointers, sizes and a
// stream, enqueues its work on that stream and returns without synchronizing. Storage is bf16;
// every reduction and product accumulates in fp32. Each op matches the CPU reference of the same
// name in libeep/include/eep/ops.h (tests/gpu/kernels_test.cu checks them against it).
//
// Errors: a failed CUDA or cuBLAS call, a failed launch or an invalid argument throws
// eep::kernels::CudaError, whose what() names the call, the file:line and the error string.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace eep::kernels {

using bf16 = __nv_bfloat16;

class CudaError : public std::runtime_error {
 public:
  explicit CudaError(const std::string& what) : std::runtime_error(what) {}
};

// ---- normalisation -------------------------------------------------------------------------
// out[r] = w * (x[r] * rsqrt(mean(x[r]^2) + eps)) for `rows` rows of `dim`. For the per-head
// q/k norm pass rows = tokens * heads and dim = head_dim (w has head_dim entries). out may
// alias x.
void rmsnorm(const bf16* x, const bf16* w, bf16* out, int rows, int dim, float eps,
             cudaStream_t stream);

// ---- rotary embedding ----------------------------------------------------------------------
// In place on x [rows][num_heads][head_dim], rotate_half (NeoX) layout; positions[r] (device)
// is the position of row r; angle = pos * theta^(-2i/head_dim). head_dim even.
void rope(bf16* x, const int32_t* positions, int rows, int num_heads, int head_dim, float theta,
          cudaStream_t stream);

// ---- router --------------------------------------------------------------------------------
// Softmax over num_experts fp32 logits per row, then top-k in descending weight, ties to the
// lower expert id; weights renormalised to sum 1 when renorm. ids/weights are [rows][k].
// num_experts <= 1024, k <= 32 and k <= num_experts.
void router_topk(const float* logits, int rows, int num_experts, int k, bool renorm,
                 int32_t* ids, float* weights, cudaStream_t stream);
// The router GEMM (logits[r][e] = x[r] . w[e], fp32 in, fp32 accumulation) and router_topk in
// one launch for decode batches, a warp per (row, expert). Up to 128 experts a row's blocks are
// a thread-block cluster and its first block does the top-k (logits and counters untouched);
// beyond, blocks of 8 experts and the last block of a row to finish does it: logits is then a
// workspace [rows][num_experts] and counters [rows] zeros, left zero (graph-replayable). The
// same bits either way. hidden + num_experts floats must fit in 48 KiB.
void router_fused(const float* x, const float* w, int rows, int hidden, int num_experts, int k,
                  bool renorm, float* logits, unsigned* counters, int32_t* ids, float* weights,
                  cudaStream_t stream);
// The same in one launch for more rows (tens to thousands; kernels/router_topk.cuh): blocks of
// 8, 16 or 32 rows x all experts over a slice of hidden, the slices of a row tile one
// thread-block cluster (<= 8) that sums them through distributed shared memory in a fixed order
// (deterministic) and does the top-k of the tile's rows. No workspace and no state between
// launches (graph-replayable). Any hidden (float4 loads when hidden % 4 == 0 and x, w are
// 16-byte aligned); num_experts <= 1024, k <= 32 and k <= num_experts. Sm_90 (clusters).
void router_tiled(const float* x, const float* w, int rows, int hidden, int num_experts, int k,
                  bool renorm, int32_t* ids, float* weights, cudaStream_t stream);

// ---- activation ----------------------------------------------------------------------------
// y = silu(g) * u element-wise over n values.
void silu_mul(const bf16* g, const bf16* u, bf16* y, int64_t n, cudaStream_t stream);
// Fused layout: gu is [rows][2*inter] with the gate in the first half of each row and up in
// the second (what one grouped GEMM over concatenated gate/up weights gives); y is [rows][inter].
void silu_mul_fused(const bf16* gu, bf16* y, int rows, int inter, cudaStream_t stream);

// ---- expert grouped GEMM -------------------------------------------------------------------
// Rows of x [total_rows][k] are grouped by expert: expert e owns rows
// offsets[e] .. offsets[e+1]-1 (offsets is a HOST array of num_experts+1 entries). For each
// expert: y[rows of e] = x[rows of e] * w[e]^T, with w [num_experts][n][k] (Linear layout) and
// y [total_rows][n]. Experts with no rows are skipped.
enum class GroupedGemmImpl {
  kCublasLoop,     // one cublasGemmEx per non-empty expert, on the handle's stream
  kCublasGrouped,  // one cublasGemmGroupedBatchedEx call
  kCublasStreams,  // one cublasGemmEx per non-empty expert, spread over kSideStreams streams
                   // (largest experts first, each to the least-loaded stream) forked from and
                   // joined back into `stream` with events
  kCublasSplit,    // the rows every non-empty expert has (the smallest one's count, if at least
                   // kSplitMinRows) as one cublasGemmBatchedEx of equal shapes, the remaining
                   // rows through cublasGemmGroupedBatchedEx
};
// Per-call state: the cuBLAS handle (bound to `stream` by the launcher) and a device buffer for
// the grouped call's pointer arrays. Create once, reuse; not thread-safe.
class GroupedGemm {
 public:
  explicit GroupedGemm(int max_experts);
  ~GroupedGemm();
  GroupedGemm(const GroupedGemm&) = delete;
  GroupedGemm& operator=(const GroupedGemm&) = delete;

  void run(GroupedGemmImpl impl, const bf16* x, const bf16* w, bf16* y, const int* offsets,
           int num_experts, int n, int k, cudaStream_t stream);

 private:
  cublasHandle_t handle_ = nullptr;
  int max_experts_ = 0;
  void** d_ptrs_ = nullptr;  // [kPtrSlots][max_experts] pointer arrays
  void** h_ptrs_ = nullptr;  // pinned staging for d_ptrs_
  cudaEvent_t staged_ = nullptr;  // last copy out of h_ptrs_ done

 public:
  static constexpr int kSideStreams = 4;
  static constexpr int kSplitMinRows = 64;
  static constexpr int kPtrSlots = 6;  // pointer arrays: grouped A, B, C; batched A, B, C

 private:
  cudaStream_t side_[kSideStreams] = {};
  cublasHandle_t side_handle_[kSideStreams] = {};  // one per stream: handles share a workspace
  cudaEvent_t fork_ = nullptr;
  cudaEvent_t join_[kSideStreams] = {};

  void gemm(cublasHandle_t h, const bf16* x, const bf16* w, bf16* y, const int* offsets, int e,
            int n, int k);
};

// ---- expert grouped GEMM, offsets on the device (kernels/grouped_gemm_device.cu) -----------
// y[rows of e] = x[rows of e] * w[e]^T for experts e in [0, num_experts): rows of e are
// offsets[e] .. offsets[e+1]-1, offsets a DEVICE int32 array [num_experts+1] (offsets[0] = 0,
// non-decreasing), w [num_experts][n][k] bf16 (Linear layout), x [rows][k], y [rows][n] bf16,
// fp32 accumulation. max_rows (host) bounds offsets[num_experts]: the launch configuration
// (tile shape, grid) depends only on host arguments, so a call can be captured into a CUDA
// graph and replayed with other offsets/x (no host sync, no allocation, no host read of device
// data). Experts with no rows get no tile. Rows of y outside every expert are not written.
// Preconditions (checked, CudaError): 1 <= num_experts <= 1024, n % 8 == 0, k % 8 == 0, x/w/y
// 16-byte aligned; offsets[num_experts] <= max_rows (not checked: device data); x must hold
// max_rows readable rows (the prefill tiles read whole tiles of rows; rows past
// offsets[num_experts] do not change the result).
// The first call on a device (either launcher) does a one-time setup of every tile shape
// (shared-memory limits, occupancy queries; no stream work): make one uncaptured call before
// capturing. The tile shape is picked from max_rows / num_experts (decode: mma.sync tiles of an
// expert's few rows; prefill: TMA-fed, warp-specialized wgmma tiles on sm_90, mma.sync
// elsewhere). A call does a host-side tensor-map encode (no device work) for prefill shapes.
void grouped_gemm_device(const bf16* x, const bf16* w, bf16* y, const int32_t* offsets,
                         int num_experts, int max_rows, int n, int k, cudaStream_t stream);
// The gate|up GEMM with SwiGLU in its epilogue: w [num_experts][2*inter][k] holds each expert's
// gate rows then its up rows; act [rows][inter] = silu(gate) * up with gate and up rounded to
// bf16 first (what silu_mul_fused computes from a stored [rows][2*inter] gate|up output).
// Same contract as grouped_gemm_device with n = 2*inter; inter % 64 == 0.
void grouped_gemm_swiglu_device(const bf16* x, const bf16* w, bf16* act, const int32_t* offsets,
                                int num_experts, int max_rows, int inter, int k,
                                cudaStream_t stream);
// Tile shapes (benchmarks and tests): how many there are, their names, and forcing one for all
// later calls (-1: the automatic choice). Not thread-safe; wgmma shapes need an sm_90 device.
int grouped_gemm_device_shapes();
const char* grouped_gemm_device_shape_name(int shape);
void grouped_gemm_device_force_shape(int shape);
// Whether the TMA-fed shapes run as such on the current device (else their cp.async form runs).
bool grouped_gemm_device_tma();
// How many CTAs of a shape's kernel (the plain form, not SwiGLU) the current device holds at once:
// its persistent grid before the bound from max_rows (the multicast shape: whole clusters, from
// cudaOccupancyMaxActiveClusters). For benchmarks, to see a shape's grid.
int grouped_gemm_device_resident_ctas(int shape);
// ---- end of expert grouped GEMM, offsets on the device --------------------------------------

// ---- few-row GEMM (kernels/skinny_gemm.cu) --------------------------------------------------
// y[m][n] = x[m][k] * w[n][k]^T (Linear layout), bf16 in, fp32 accumulation, y bf16 or fp32
// (y_f32), for rows <= kSkinnyMaxRows: decode-sized products, memory-bound on w, which this
// reads once at close to the HBM rate. k % 8 == 0; x, w 16-byte aligned.
constexpr int kSkinnyMaxRows = 8;
void skinny_gemm(const bf16* x, const bf16* w, void* y, bool y_f32, int rows, int n, int k,
                 cudaStream_t stream);

// ---- attention preparation (kernels/attention_prep.cu) -------------------------------------
// In one launch, for qkv [rows][q | k | v] (q: num_heads * head_dim values, k and v:
// num_kv_heads * head_dim each; the stacked projection's output): rmsnorm(q_norm) then rope of
// every q head into q_out [rows][num_heads][head_dim], rmsnorm(k_norm) then rope of every k
// head into k_cache, and v into v_cache, at cache entry kv_slots[r] ([entries][kv_heads *
// head_dim], as kv_write does). The normalised value is rounded to bf16 before rotation, as the
// two separate ops give. head_dim even and <= 256; positions/kv_slots device.
void attention_prep(const bf16* qkv, bf16* q_out, const bf16* q_norm, const bf16* k_norm,
                    const int32_t* positions, const int32_t* kv_slots, int rows, int num_heads,
                    int num_kv_heads, int head_dim, float eps, float theta, bf16* k_cache,
                    bf16* v_cache, cudaStream_t stream);

// ---- paged decode attention ----------------------------------------------------------------
// One query per sequence: q [num_seqs][num_heads][head_dim]; the KV cache of one layer is
// k_cache/v_cache [num_blocks][block_size][num_kv_heads][head_dim]; block_tables
// [num_seqs][max_blocks_per_seq] maps position / block_size to a block; the query of sequence s
// attends to positions 0 .. seq_lens[s]-1 (seq_lens[s] >= 1; the current token's KV already
// written). GQA: head h reads kv head h / (num_heads / num_kv_heads). Scale 1/sqrt(head_dim).
// head_dim in {64, 128, 256}. out is [num_seqs][num_heads][head_dim].
// Three kernels: a block per (sequence, query head), or per (sequence, KV head) sharing each K/V
// row among the group's query heads (at most 8 per KV head), or kMma: a warp per (sequence, KV
// head) on tensor cores (head_dim 64 or 128, at most 16 query heads per KV head). kAuto takes
// kMma where it applies, else the per-KV-head kernel from kDecodeAttentionPerKvHeadBlocks
// (sequence, KV head) pairs on, else the per-head one; the environment variable
// EEP_CUDA_DECODE_ATTENTION (per-head, per-kv-head, mma, mma-unsplit, mma-one-v) overrides kAuto.
// With a workspace (paged_decode_attention_workspace_bytes), the tensor-core kernel splits long
// sequences over several warps when there are few (sequence, KV head) pairs, and a second kernel
// merges the splits (kDecodeAttentionSplitWarps: the warps it aims for).
// Behind programmatic dependent launch the tensor-core kernel reads seq_lens, block_tables and
// the K/V of positions below seq_lens[s] - 1 before it waits for the kernel before it (its first
// tile's loads then overlap that kernel): the kernel launched just before this one may write q
// and each sequence's last position, nothing else this reads (a decode step's attention_prep).
// kMmaOneV: the tensor-core kernel with one V buffer instead of two (26 KiB of shared memory a
// warp instead of 34 at head_dim 128: 8 warps an SM instead of 6), V's loads overlapping the
// scores instead of the tile before. kAuto takes it where the two-buffer kernel's warps (one per
// pair) do not fit one wave of the device: H100, device run 72, ms a step of Qwen3-30B-A3B at
// batch 1 / 32 / 128 / 256 (1024 pairs against 792 resident warps), two V buffers 4.107 /
// 22.205 / 25.447 / 28.699, one 4.329 / 23.346 / 26.510 / 28.083 (-2.1% at 256 only).
enum class DecodeAttention { kAuto, kPerHead, kPerKvHead, kMma, kMmaOneV };
constexpr int kDecodeAttentionSplitWarps = 528;  // 4 per SM of an H100/H200
// H100, Qwen3-30B-A3B shapes (4 of its layers), device run 42, ms a step at batch 1 / 32 / 256,
// context 256: per head 0.890 / 2.274 / 4.262, per KV head 0.863 / 2.508 / 3.113, tensor cores
// 0.770 / 2.140 / 2.759; context 2048, batch 8 / 32 / 128: 3.52 / 4.04 / 9.67, 3.21 / 5.54 /
// 5.88, 2.48 / 3.11 / 3.47. The per-KV-head kernel needs many blocks (one works through its
// tiles alone); the per-head one reads each K/V row once per query head.
constexpr int kDecodeAttentionPerKvHeadBlocks = 512;
void paged_decode_attention(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                            const int32_t* block_tables, const int32_t* seq_lens, bf16* out,
                            int num_seqs, int num_heads, int num_kv_heads, int head_dim,
                            int block_size, int max_blocks_per_seq, cudaStream_t stream,
                            DecodeAttention impl = DecodeAttention::kAuto,
                            void* workspace = nullptr);
// Bytes of workspace the call with these arguments uses to split (0: it does not split). Host
// arguments only, so a graph captured with a workspace of this size stays valid.
size_t paged_decode_attention_workspace_bytes(int num_seqs, int num_heads, int num_kv_heads,
                                              int head_dim, int block_size,
                                              int max_blocks_per_seq);

// ---- paged prefill attention (chunked prefill) ---------------------------------------------
// A batch of num_seqs chunks: sequence s has num_rows[s] query rows q[q_starts[s] + j]
// (j = 0 .. num_rows[s]-1) at positions starts[s] + j, and row j attends causally to positions
// 0 .. starts[s] + j, read from the paged cache (the KV of the whole chunk already written, as
// kv_write does before it). q/out are [total_rows][num_heads][head_dim]; rows of q that belong
// to no sequence are not written in out. k_cache/v_cache are
// [num_blocks][block_size][num_kv_heads][head_dim], block_tables [num_seqs][max_blocks_per_seq];
// q_starts, num_rows, starts are device arrays of num_seqs. max_rows (host) >= every
// num_rows[s]: it sizes the grid (a sequence with num_rows[s] = 0 is skipped). GQA: head h
// reads kv head h / (num_heads / num_kv_heads). Scale 1/sqrt(head_dim); head_dim 64/128/256.
// Same result as paged_decode_attention on each row (one-row chunks are allowed), up to bf16
// rounding of the softmax weights that multiply V. Tensor cores (bf16, fp32 accumulate), online
// softmax in fp32; one CTA reads each K/V row once for 64 (row, query head) pairs of one kv head.
void paged_prefill_attention(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                             const int32_t* block_tables, const int32_t* q_starts,
                             const int32_t* num_rows, const int32_t* starts, bf16* out,
                             int num_seqs, int max_rows, int num_heads, int num_kv_heads,
                             int head_dim, int block_size, int max_blocks_per_seq,
                             cudaStream_t stream);

// ---- sampling (kernels/sampling.cu) --------------------------------------------------------
// One row's sampling parameters, as eep::SamplingParams (plus the position that keys the draw).
// Valid values only (the host validates requests): temperature >= 0, top_p in (0, 1],
// top_k >= 0.
struct SamplingRow {
  double temperature = 0.0;  // 0 = greedy (arg-max, lowest id on ties)
  double top_p = 1.0;
  uint64_t seed = 0;
  int64_t position = 0;
  int32_t top_k = 0;  // 0 = whole vocabulary
  int32_t pad = 0;
};
// ids[r] = eep::sample_token(logits[r], vocab, params[r], params[r].position) for logits
// [rows][vocab] fp32 and params [rows] (both device): temperature, top-k, top-p and the
// counter-based (seed, position) draw, computed in double in the host sampler's order (stable
// sort of the candidates, sequential sums), so the token is the host's unless CUDA's exp() and
// the host libm's differ in the last bit right at a draw boundary (probability ~1e-16 per
// draw). workspace: device memory of at least sample_tokens_workspace_bytes(rows, vocab)
// (about 32 bytes per logit). rows <= 65535. Not tuned: a full sort of every row, and one thread
// per row for the sums (151936 additions for top_k = 0).
size_t sample_tokens_workspace_bytes(int rows, int vocab);
void sample_tokens(const float* logits, const SamplingRow* params, int rows, int vocab,
                   void* workspace, size_t workspace_bytes, int32_t* ids, cudaStream_t stream);

// ---- device routing (kernels/moe_route.cu) -------------------------------------------------
// (The backend calls route_permute_tokens, this and permute_tokens in one launch; route_local
// stays as the reference kernels_test checks it against.)
// For a group of one, where every replica is local. route is one device array:
// [num_experts] replica counts, [num_experts][max_replicas] physical slots of each expert's
// replicas, [slots_per_rank] the expert each local slot holds (-1 empty). Item i (= token * k +
// choice, ids [items]) goes to replica i % count of its expert: local_slots[i] = that slot -
// first_slot, and load[local slot] += 1. An item whose expert has no replica here, or whose slot
// does not hold it, gets local_slots[i] = -1 (so no GEMM reads a wrong slot) and, for the first
// such item, error[0..4] = {1, layer, expert, slot, expert held (-2: slot not on this rank)};
// error[0] must be 0 before the step and is read by the host after it.
void route_local(const int32_t* ids, int items, const int32_t* route, int num_experts,
                 int max_replicas, int first_slot, int slots_per_rank, int layer,
                 int32_t* local_slots, unsigned long long* load, int32_t* error,
                 cudaStream_t stream);

// ---- token permutation (MoE dispatch / combine on one GPU) ---------------------------------
// Dispatch: the num_tokens * k (token, slot) pairs of topk_ids [num_tokens][k] are grouped by
// expert, stable (within an expert, in (token, slot) order, so the result does not depend on
// thread timing). Writes expert_offsets [num_experts+1] (device), slot_rows [num_tokens*k]
// (the permuted row of each pair) and permuted [num_tokens*k][hidden] = x[token].
// num_experts <= 1024. A pair whose id is not in [0, num_experts) is dropped (slot_rows = -1).
// When hidden % 8 == 0 rows are copied 16 bytes at a time: x and permuted must then be 16-byte
// aligned (cudaMalloc'd buffers are).
void permute_tokens(const bf16* x, const int32_t* topk_ids, int num_tokens, int k, int hidden,
                    int num_experts, int32_t* expert_offsets, int32_t* slot_rows, bf16* permuted,
                    cudaStream_t stream);
// route_local followed by permute_tokens over the local slots, in one launch (two when the
// rows are many): slot_offsets [slots_per_rank+1], slot_rows, permuted, the load per local slot
// and the error record as those two give (the local slot of each item is not stored).
// Behind programmatic dependent launch it reads route and load before it waits for the kernel
// launched before it (which may write x and topk_ids, not those two); route_to_slots reads
// route_all early in the same way.
void route_permute_tokens(const bf16* x, const int32_t* topk_ids, int num_tokens, int k,
                          int hidden, const int32_t* route, int num_experts, int max_replicas,
                          int first_slot, int slots_per_rank, int layer, unsigned long long* load,
                          int32_t* error, int32_t* slot_offsets, int32_t* slot_rows,
                          bf16* permuted, cudaStream_t stream);
// ---- MoE exchange of a group of more than one, counts on the device (kernels/moe_exchange.cu)
// route_to_slots: the plan of route_permute_tokens over every slot of the group (route_all:
// route_local's table with the expert of all num_slots slots at its end; num_slots <= 1024),
// without the copy: slot_offsets [num_slots+1], slot_rows [items] (the item's row in
// global-slot order, -1 and an error record for an item whose expert has no replica). Slots are
// numbered owner by owner, so owner p's rows are slot_offsets[p*spr] .. slot_offsets[(p+1)*spr].
void route_to_slots(const int32_t* topk_ids, int num_tokens, int k, const int32_t* route_all,
                    int num_experts, int max_replicas, int num_slots, int layer, int32_t* error,
                    int32_t* slot_offsets, int32_t* slot_rows, cudaStream_t stream);
// exchange_pack: item i's row (x[i / k]) goes to send_rows[p * cap + its row among owner p's],
// ret_idx[i] = that index (-1: dropped); meta [peers][2*spr+1] per owner: its slots' row offsets
// (spr+1, from 0) and the expert this rank believes each of its slots holds (slot_expert [peers
// * spr], global). cap >= items; an owner with more than cap rows is an error record.
void exchange_pack(const bf16* x, const int32_t* slot_rows, const int32_t* slot_offsets,
                   const int32_t* slot_expert, int items, int k, int hidden, int peers, int spr,
                   int cap, int layer, int32_t* meta, int32_t* ret_idx, bf16* send_rows,
                   int32_t* error, cudaStream_t stream);
// exchange_arrivals: from the senders' tables (meta_in [peers][2*spr+1], sender q's rows at
// q * cap of the receive buffer), this rank's slot order: offsets [spr+1], perm_src [peers *
// cap] (row r of slot order comes from arrival perm_src[r]; 0 past the total), arr_dst [peers *
// cap] (arrival a's row in slot order; 0 where no row arrived), load[s] += rows of slot s. A
// sender that believes a slot holds another expert than local_expert says is an error record
// (those rows are left out), as is a malformed table.
void exchange_arrivals(const int32_t* meta_in, const int32_t* local_expert, int peers, int spr,
                       int cap, int layer, int first_slot, unsigned long long* load,
                       int32_t* error, int32_t* offsets, int32_t* perm_src, int32_t* arr_dst,
                       cudaStream_t stream);

// Combine: out[t] = sum_j weights[t][j] * y[slot_rows[t*k+j]], j in order, fp32 accumulation.
void unpermute_tokens(const bf16* y, const int32_t* slot_rows, const float* weights,
                      int num_tokens, int k, int hidden, bf16* out, cudaStream_t stream);

// ---- residual stream, embedding, conversion, KV write (kernels/residual.cu) ----------------
// The residual stream is kept in fp32 between layers (so the GPU result stays close to the fp32
// CPU reference); everything that feeds a GEMM is bf16.

// out[r] = table[ids[r]] as fp32, rows of dim. ids are device; ids outside [0, vocab) give a
// zero row (the engine validates tokens before they reach the backend).
void embedding_gather(const bf16* table, const int32_t* ids, int rows, int dim, int vocab,
                      float* out, cudaStream_t stream);
// residual[r] += delta[r] (delta may be null: no add), then
// out[r] = w * (residual[r] * rsqrt(mean(residual[r]^2) + eps)) in bf16.
void add_rmsnorm(float* residual, const bf16* delta, const bf16* w, bf16* out, int rows, int dim,
                 float eps, cudaStream_t stream);
// The same, also writing the normalised rows in fp32 (out_f32 may be null): the router takes
// them, so that routing sees what the fp32 CPU reference sees, not a bf16 rounding of it
// (near-tied experts otherwise flip).
void add_rmsnorm(float* residual, const bf16* delta, const bf16* w, bf16* out, float* out_f32,
                 int rows, int dim, float eps, cudaStream_t stream);
// The MoE combine of a layer folded into the next residual norm (one launch instead of
// unpermute_tokens + add_rmsnorm at decode): residual[r] += bf16(sum_j weights[r][j] *
// y[slot_rows[r*k+j]]) (unpermute_tokens' value), then the norm as add_rmsnorm. Bitwise equal to
// the two launches. Needs add_combine_rmsnorm_supported(dim): dim % 8 == 0 and dim <= 8192.
struct MoeCombine {
  const bf16* y = nullptr;              // expert outputs, grouped by slot [rows*k][dim]
  const int32_t* slot_rows = nullptr;   // [rows*k] row of y of each (token, choice); -1: none
  const float* weights = nullptr;       // [rows*k] routing weights
  int k = 0;
};
bool add_combine_rmsnorm_supported(int dim);
void add_combine_rmsnorm(float* residual, const MoeCombine& combine, const bf16* w, bf16* out,
                         float* out_f32, int rows, int dim, float eps, cudaStream_t stream);
// dst[i] = src[idx[i]] for `rows` rows of dim elements (idx device). Used to pack rows for
// dispatch and to pick the rows that sample.
void gather_rows(const bf16* src, const int32_t* idx, int rows, int dim, bf16* dst,
                 cudaStream_t stream);
void gather_rows_f32(const float* src, const int32_t* idx, int rows, int dim, float* dst,
                     cudaStream_t stream);
void f32_to_bf16(const float* in, bf16* out, int64_t n, cudaStream_t stream);
void bf16_to_f32(const bf16* in, float* out, int64_t n, cudaStream_t stream);
// Writes row r of k/v ([rows][kv_dim]) to cache entry slots[r] (= block * block_size + offset)
// of one layer's k_cache/v_cache ([num_blocks * block_size][kv_dim]). slots are device.
void kv_write(const bf16* k, const bf16* v, const int32_t* slots, int rows, int kv_dim,
              bf16* k_cache, bf16* v_cache, cudaStream_t stream);
// Paged attention for heads of at most 32 elements (kernels/attention_small_head.cu): the same
// contract as paged_decode_attention with one query per row (row r attends to positions
// 0 .. seq_lens[r]-1 through block_tables[r]); for the small presets, not tuned.
void paged_attention_small_head(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                                const int32_t* block_tables, const int32_t* seq_lens, bf16* out,
                                int num_rows, int num_heads, int num_kv_heads, int head_dim,
                                int block_size, int max_blocks_per_row, cudaStream_t stream);
// ids[r] = argmax of logits[r] ([rows][vocab] fp32) by the host sampler's greedy rule: NaN
// counts as -inf, ties (-0 and +0 included) go to the lower id. Two launches: blocks of 4096
// logits each leave their best as a 64-bit key in workspace (device memory of at least
// argmax_rows_workspace_bytes(rows, vocab): 8 bytes per 4096 logits), then a warp per row takes
// the largest key. No state between calls.
size_t argmax_rows_workspace_bytes(int rows, int vocab);
void argmax_rows(const float* logits, int rows, int vocab, int32_t* ids, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream);

}  // namespace eep::kernels
