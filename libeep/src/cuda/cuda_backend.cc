// CudaBackend: construction, weight loading, the dense part of the forward pass and the factory
// functions. The MoE layer is in cuda_moe.cc, the elastic side in cuda_elastic.cc.
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "eep/comm.h"
#include "eep_kernels.h"

namespace eep::cuda {

void throw_cuda(const char* call, cudaError_t err, const char* file, int line) {
  throw Error(ErrorCode::kInternal, std::string(file) + ":" + std::to_string(line) + ": " + call +
                                        ": " + cudaGetErrorString(err));
}

namespace {

#define EEP_CUBLAS(call)                                                                  \
  do {                                                                                    \
    cublasStatus_t eep_st_ = (call);                                                      \
    if (eep_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      throw Error(ErrorCode::kInternal, std::string(#call) + ": " + cublasGetStatusString(eep_st_)); \
  } while (0)

constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

size_t dense_elements(const ModelConfig& c) {
  const size_t h = c.hidden_size, q = size_t(c.num_heads) * c.head_dim,
               kv = size_t(c.num_kv_heads) * c.head_dim;
  size_t per_layer = 2 * h + h * q + 2 * h * kv + q * h + 2 * size_t(c.head_dim) +
                     size_t(c.num_experts) * h;
  size_t n = size_t(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2) + h;
  return n + per_layer * c.num_layers;
}

}  // namespace

void CudaBackend::activate() const { EEP_CU(cudaSetDevice(opts_.device)); }

CudaBackend::CudaBackend(const ModelConfig& cfg, const BackendOptions& opts)
    : cfg_(cfg), opts_(opts) {
  cfg_.validate();
  EEP_CHECK(opts.num_kv_blocks > 0 && opts.block_size > 0, ErrorCode::kInvalidArgument,
            "KV cache needs at least one block of at least one token");
  EEP_CHECK(cfg_.head_dim <= 32 || cfg_.head_dim == 64 || cfg_.head_dim == 128 ||
                cfg_.head_dim == 256,
            ErrorCode::kInvalidArgument,
            "the CUDA attention kernels take head_dim up to 32, 64, 128 or 256, not " +
                std::to_string(cfg_.head_dim));
  EEP_CHECK(cfg_.num_experts <= 1024 && cfg_.num_experts_per_tok <= 32,
            ErrorCode::kInvalidArgument, "the CUDA router takes at most 1024 experts and top-32");
  activate();
  EEP_CU(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  EEP_CU(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking));
  EEP_CUBLAS(cublasCreate(&cublas_));
  EEP_CUBLAS(cublasSetStream(cublas_, stream_));
  // A workspace of our own: cuBLAS calls captured into a graph must not allocate.
  cublas_workspace_.resize(kCublasWorkspaceBytes);
  EEP_CUBLAS(cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.bytes()));
  route_error_.resize(5);
  EEP_CU(cudaMemsetAsync(route_error_.get(), 0, route_error_.bytes(), stream_));
  if (const char* g = std::getenv("EEP_CUDA_GRAPHS")) use_graphs_ = std::string(g) != "0";
  if (const char* r = std::getenv("EEP_CUDA_HOST_ROUTING")) host_routing_ = std::string(r) == "1";
  if (const char* x = std::getenv("EEP_CUDA_DEVICE_EXCHANGE")) device_exchange_ = std::string(x) == "1";
  profile_ = StepProfile::from_env();
  // The device-offset grouped GEMMs take dimensions that are multiples of 8 (16-byte rows).
  if (cfg_.hidden_size % 8 != 0 || cfg_.moe_intermediate_size % 8 != 0) host_routing_ = true;
  // Graphs need the device-routed MoE.
  use_graphs_ = use_graphs_ && !host_routing_;
  // Before the KV cache: its scratch is freed again while the memory is still free.
  warm_up_libraries();
  const size_t per_layer =
      size_t(opts.num_kv_blocks) * opts.block_size * cfg_.num_kv_heads * cfg_.head_dim;
  try {
    k_cache_.resize(per_layer * cfg_.num_layers);
    v_cache_.resize(per_layer * cfg_.num_layers);
  } catch (const Error& e) {
    throw Error(ErrorCode::kResourceExhausted,
                "KV cache of " + std::to_string(opts.num_kv_blocks) + " blocks (" +
                    std::to_string(2 * per_layer * cfg_.num_layers * sizeof(bf16) >> 20) +
                    " MiB) does not fit on GPU " + std::to_string(opts.device) + ": " + e.what());
  }
  // Freshly allocated cache holds garbage; attention only reads positions already written, but
  // zeroes make a bug visible as wrong numbers rather than NaNs from old data.
  EEP_CU(cudaMemsetAsync(k_cache_.get(), 0, k_cache_.bytes(), stream_));
  EEP_CU(cudaMemsetAsync(v_cache_.get(), 0, v_cache_.bytes(), stream_));
  EEP_CU(cudaStreamSynchronize(stream_));
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(opts_.device);
  if (stream_) cudaStreamSynchronize(stream_);
  if (side_stream_) cudaStreamSynchronize(side_stream_);
  drop_graphs();
  grouped_.reset();
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
  if (side_stream_) cudaStreamDestroy(side_stream_);
}

// fp32 host values → bf16 device, through a device fp32 staging buffer (the conversion runs on
// the GPU; the copy is the only host work). Caller holds side_mutex_ when stream is side_stream_.
void CudaBackend::upload_f32_as_bf16(const std::vector<float>& src, bf16* dst,
                                     cudaStream_t stream) {
  float* staging = side_f32_.reserve(src.size());
  EEP_CU(cudaMemcpyAsync(staging, src.data(), src.size() * sizeof(float), cudaMemcpyHostToDevice,
                         stream));
  kernels::f32_to_bf16(staging, dst, static_cast<int64_t>(src.size()), stream);
  // src is pageable host memory the caller may free at once: wait for the copy.
  EEP_CU(cudaStreamSynchronize(stream));
}

void CudaBackend::load_dense(const WeightSource& src) {
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  layers_.resize(cfg_.num_layers);
  std::vector<float> buf;
  for (const std::string& name : dense_tensor_names()) {
    std::string from = name;
    if (name == tensor_name_lm_head() && cfg_.tie_word_embeddings && !src.has(name))
      from = tensor_name_embed();
    src.read(from, buf);
    store_dense(name, dense_array(name), buf);
  }
}

void CudaBackend::allocate_experts(std::vector<ExpertLayer>& layers, int spr) const {
  const size_t n = size_t(cfg_.hidden_size) * cfg_.moe_intermediate_size;
  layers.resize(cfg_.num_layers);
  for (ExpertLayer& e : layers) {
    e.gate_up.resize(2 * n * spr);
    e.down.resize(n * spr);
    e.expert.assign(spr, -1);
  }
}

void CudaBackend::load_experts(const WeightSource& src, const Placement& placement, int rank) {
  EEP_CHECK(placement.num_layers == cfg_.num_layers && placement.num_experts == cfg_.num_experts,
            ErrorCode::kInvalidArgument, "placement does not match the model's layers/experts");
  activate();
  std::lock_guard<std::mutex> lock(side_mutex_);
  const int spr = placement.slots_per_rank();
  const size_t n = size_t(cfg_.hidden_size) * cfg_.moe_intermediate_size;
  // Slots whose expert is already held somewhere on this rank are copied on the device; the
  // rest are read from the source by several threads at once (a synthetic expert is one
  // thread's work, and a 30B model has 6144 of them), then converted on the GPU.
  std::vector<ExpertLayer> next;
  allocate_experts(next, spr);
  struct Job {
    int layer, slot, expert;
  };
  std::vector<Job> reads;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    for (int s = 0; s < spr; ++s) {
      const int expert = placement.phy2log[l][rank * spr + s];
      next[l].expert[s] = expert;
      int held = -1;
      if (l < static_cast<int>(experts_.size()))
        for (size_t o = 0; o < experts_[l].expert.size(); ++o)
          if (experts_[l].expert[o] == expert) held = static_cast<int>(o);
      if (held < 0) {
        reads.push_back({l, s, expert});
        continue;
      }
      EEP_CU(cudaMemcpyAsync(next[l].gate_up.get() + 2 * n * s,
                             experts_[l].gate_up.get() + 2 * n * held, 2 * n * sizeof(bf16),
                             cudaMemcpyDeviceToDevice, side_stream_));
      EEP_CU(cudaMemcpyAsync(next[l].down.get() + n * s, experts_[l].down.get() + n * held,
                             n * sizeof(bf16), cudaMemcpyDeviceToDevice, side_stream_));
    }
  }
  // Readers fill fp32 host buffers; this thread uploads them in order (one staging buffer).
  const size_t num_threads =
      std::max<size_t>(1, std::min<size_t>(reads.size(), std::min(16u, std::max(1u, std::thread::hardware_concurrency()))));
  std::vector<std::vector<float>> ready(reads.size());
  std::vector<std::atomic<bool>> done(reads.size());
  std::atomic<size_t> next_job{0};
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failure_mutex;
  auto reader = [&] {
    for (size_t j; !failed && (j = next_job.fetch_add(1)) < reads.size();) {
      try {
        std::vector<float> gate, up, down;
        src.read(tensor_name_expert(reads[j].layer, reads[j].expert, "gate_proj"), gate);
        src.read(tensor_name_expert(reads[j].layer, reads[j].expert, "up_proj"), up);
        src.read(tensor_name_expert(reads[j].layer, reads[j].expert, "down_proj"), down);
        EEP_CHECK(gate.size() == n && up.size() == n && down.size() == n,
                  ErrorCode::kInvalidArgument, "expert tensors of the wrong size");
        gate.insert(gate.end(), up.begin(), up.end());
        gate.insert(gate.end(), down.begin(), down.end());
        ready[j] = std::move(gate);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> g(failure_mutex);
        failure = e.what();
        failed = true;
      }
      done[j] = true;
      done[j].notify_one();
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 0; t < num_threads; ++t) threads.emplace_back(reader);
  try {
    for (size_t j = 0; j < reads.size() && !failed; ++j) {
      done[j].wait(false);
      if (failed) break;
      const Job& job = reads[j];
      float* staging = side_f32_.reserve(3 * n);
      EEP_CU(cudaMemcpyAsync(staging, ready[j].data(), 3 * n * sizeof(float),
                             cudaMemcpyHostToDevice, side_stream_));
      kernels::f32_to_bf16(staging, next[job.layer].gate_up.get() + 2 * n * job.slot,
                           int64_t(2 * n), side_stream_);
      kernels::f32_to_bf16(staging + 2 * n, next[job.layer].down.get() + n * job.slot, int64_t(n),
                           side_stream_);
      EEP_CU(cudaStreamSynchronize(side_stream_));
      std::vector<float>().swap(ready[j]);
    }
  } catch (...) {
    failed = true;
    for (auto& t : threads) t.join();
    throw;
  }
  for (auto& t : threads) t.join();
  if (failed) throw Error(ErrorCode::kInvalidArgument, "loading experts: " + failure);
  EEP_CU(cudaStreamSynchronize(side_stream_));
  upload_routes(next, placement, rank);
  graphs_stale_ = true;
  experts_ = std::move(next);
  placement_ = placement;
  rank_ = rank;
  restart_load_counts(side_stream_);
}

void CudaBackend::restart_load_counts(cudaStream_t stream) {
  load_.assign(cfg_.num_layers, std::vector<int64_t>(placement_.num_slots, 0));
  load_dev_.resize(size_t(cfg_.num_layers) * placement_.slots_per_rank());
  EEP_CU(cudaMemsetAsync(load_dev_.get(), 0, load_dev_.bytes(), stream));
  EEP_CU(cudaStreamSynchronize(stream));
  load_dev_dirty_ = false;
}

void CudaBackend::upload_routes(std::vector<ExpertLayer>& layers, const Placement& placement,
                                int rank) {
  const int spr = placement.slots_per_rank(), E = cfg_.num_experts;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    ExpertLayer& ex = layers[l];
    int max_rep = 1;
    for (int e = 0; e < E; ++e)
      max_rep = std::max<int>(max_rep, int(placement.log2phy[l][e].size()));
    // [E] replica counts, [E][max_rep] slots, [spr] the expert of each local slot.
    std::vector<int32_t> table(size_t(E) + size_t(E) * max_rep + spr, -1);
    for (int e = 0; e < E; ++e) {
      const auto& reps = placement.log2phy[l][e];
      table[e] = int32_t(reps.size());
      for (size_t r = 0; r < reps.size(); ++r) table[E + size_t(e) * max_rep + r] = reps[r];
    }
    // route_all: the same head, then every slot's expert.
    std::vector<int32_t> all(table.begin(), table.begin() + E + size_t(E) * max_rep);
    all.insert(all.end(), placement.phy2log[l].begin(), placement.phy2log[l].end());
    for (int s = 0; s < spr; ++s)
      table[E + size_t(E) * max_rep + s] = placement.phy2log[l][size_t(rank) * spr + s];
    ex.route.resize(table.size());
    ex.route_all.resize(all.size());
    ex.max_replicas = max_rep;
    EEP_CU(cudaMemcpyAsync(ex.route.get(), table.data(), table.size() * sizeof(int32_t),
                           cudaMemcpyHostToDevice, side_stream_));
    EEP_CU(cudaMemcpyAsync(ex.route_all.get(), all.data(), all.size() * sizeof(int32_t),
                           cudaMemcpyHostToDevice, side_stream_));
    EEP_CU(cudaStreamSynchronize(side_stream_));  // table is about to go
  }
}

void CudaBackend::reset_expert_load() {
  fold_device_load();
  for (auto& row : load_) std::fill(row.begin(), row.end(), 0);
}

// y[rows][n] = x[rows][k] · w[n][k]^T (Linear layout), bf16 inputs, fp32 accumulation; y is bf16
// or fp32 (router and lm_head logits).
void CudaBackend::gemm(const bf16* x, const bf16* w, void* y, cudaDataType_t y_type, int rows,
                       int k, int n) {
  if (rows == 0) return;
  if (rows <= kernels::kSkinnyMaxRows && k % 8 == 0) {
    // Decode: a matrix-vector product that reads w once near the HBM rate (cuBLAS's GEMMs
    // reach well under half of it at one row).
    kernels::skinny_gemm(x, w, y, y_type == CUDA_R_32F, rows, n, k, stream_);
    return;
  }
  const float alpha = 1.0f, beta = 0.0f;
  EEP_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w, CUDA_R_16BF, k,
                          x, CUDA_R_16BF, k, &beta, y, y_type, n, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm_f32(const float* x, const float* w, float* y, int rows, int k, int n) {
  if (rows == 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  EEP_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w, CUDA_R_32F, k,
                          x, CUDA_R_32F, k, &beta, y, CUDA_R_32F, n, CUBLAS_COMPUTE_32F_PEDANTIC,
                          CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::attention(int layer, const StepMeta& m) {
  const DenseLayer& d = layers_[layer];
  const int rows = m.rows, hd = cfg_.head_dim, hidden = cfg_.hidden_size;
  const int q_dim = cfg_.num_heads * hd, kv_dim = cfg_.num_kv_heads * hd;
  const int qkv_dim = q_dim + 2 * kv_dim;
  bf16* qkv = qkv_.reserve(size_t(rows) * qkv_dim);
  bf16* q = q_.reserve(size_t(rows) * q_dim);
  bf16* attn = attn_.reserve(size_t(rows) * q_dim);
  bf16* delta = delta_.reserve(size_t(rows) * hidden);
  // q, k and v of a row side by side, from the stacked weights: one GEMM (skinny at decode).
  gemm(h_.get(), d.wqkv.get(), qkv, CUDA_R_16BF, rows, hidden, qkv_dim);
  mark("qkv");
  const size_t per_layer = size_t(opts_.num_kv_blocks) * opts_.block_size * kv_dim;
  bf16* kc = k_cache_.get() + per_layer * layer;
  bf16* vc = v_cache_.get() + per_layer * layer;
  // Qwen3: per-head RMSNorm of q and k, then the rotary embedding; q into its own array, k and
  // v into the cache. One launch. Every row's K/V goes in before any row attends: a prefill
  // chunk's rows see each other.
  kernels::attention_prep(qkv, q, d.q_norm.get(), d.k_norm.get(), m.positions, m.kv_slots, rows,
                          cfg_.num_heads, cfg_.num_kv_heads, hd, cfg_.rms_norm_eps,
                          cfg_.rope_theta, kc, vc, stream_);
  mark("attention prep");
  // Each row is a query of its own over positions 0..pos of its sequence (causal by
  // construction), which covers decode rows and chunked-prefill rows alike.
  if (hd > 32 && m.max_seq_rows > 1)
    // Prefill chunks in the batch: a CTA reads each K/V row once for a tile of query rows.
    kernels::paged_prefill_attention(q, kc, vc, m.seq_tables, m.seq_q_start, m.seq_rows,
                                     m.seq_start, attn, m.num_seqs, m.max_seq_rows,
                                     cfg_.num_heads, cfg_.num_kv_heads, hd, opts_.block_size,
                                     m.max_blocks, stream_);
  else if (hd <= 32)
    kernels::paged_attention_small_head(q, kc, vc, m.block_tables, m.seq_lens, attn, rows,
                                        cfg_.num_heads, cfg_.num_kv_heads, hd, opts_.block_size,
                                        m.max_blocks, stream_);
  else {
    // Workspace for splitting long sequences over warps when the batch is small.
    const size_t split_bytes = kernels::paged_decode_attention_workspace_bytes(
        rows, cfg_.num_heads, cfg_.num_kv_heads, hd, opts_.block_size, m.max_blocks);
    kernels::paged_decode_attention(
        q, kc, vc, m.block_tables, m.seq_lens, attn, rows, cfg_.num_heads, cfg_.num_kv_heads, hd,
        opts_.block_size, m.max_blocks, stream_, kernels::DecodeAttention::kAuto,
        split_bytes ? attn_split_.reserve(split_bytes / sizeof(float)) : nullptr);
  }
  mark("attention");
  gemm(attn, d.wo.get(), delta, CUDA_R_16BF, rows, q_dim, hidden);
  mark("o proj");
}

void check_cuda_device_usable() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess)
    throw Error(ErrorCode::kUnavailable,
                std::string("no usable CUDA device (cudaGetDeviceCount: ") +
                    cudaGetErrorString(err) + "); use --backend cpu");
  if (count == 0)
    throw Error(ErrorCode::kUnavailable, "no CUDA device visible; use --backend cpu");
}

double cuda_peak_memory_bandwidth_gbs(int device, std::string* description) {
  check_cuda_device_usable();
  int clock_khz = 0, bus_bits = 0;
  EEP_CU(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
  EEP_CU(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  EEP_CHECK(clock_khz > 0 && bus_bits > 0, ErrorCode::kUnavailable,
            "GPU " + std::to_string(device) + " reports no memory clock or bus width");
  cudaDeviceProp prop{};
  EEP_CU(cudaGetDeviceProperties(&prop, device));
  // HBM transfers on both clock edges. By the datasheets, the H100 SXM's 5120-bit bus at
  // 2619 MHz gives its 3.35 TB/s and the H200's 6144 bits at 3201 MHz 4.9 (NVIDIA says 4.8).
  const double gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  if (description)
    *description = std::string(prop.name) + ": " + std::to_string(bus_bits) + "-bit bus at " +
                   std::to_string(clock_khz / 1000) + " MHz, double data rate";
  return gbs;
}

int cuda_kv_blocks_for_memory(const ModelConfig& cfg, int block_size, int device,
                              double memory_fraction, int min_ranks) {
  check_cuda_device_usable();
  EEP_CHECK(memory_fraction > 0 && memory_fraction <= 1, ErrorCode::kInvalidArgument,
            "GPU memory fraction must be in (0, 1]");
  EEP_CHECK(min_ranks >= 1, ErrorCode::kInvalidArgument, "min ranks must be at least 1");
  EEP_CU(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  EEP_CU(cudaMemGetInfo(&free_bytes, &total_bytes));
  // What this engine may use: its share of the device, and no more than is free now (engines
  // sharing a GPU each take a fraction).
  const double budget = std::min(double(free_bytes), memory_fraction * double(total_bytes));
  const double dense = double(dense_elements(cfg)) * sizeof(bf16);
  // The experts held at the smallest size, plus room to stage a transition's new slots beside
  // the serving ones (commit_staged swaps them; the old ones stay until the transition
  // finishes, for a rollback): the largest such peak is a scale between min_ranks and
  // min_ranks + 1, either way. Without that room the first scale-up of a full GPU fails to
  // allocate its staged slots.
  const int experts_held = (cfg.num_experts + min_ranks - 1) / min_ranks;
  const int experts_staged = (cfg.num_experts + min_ranks) / (min_ranks + 1);
  const double experts = double(experts_held + experts_staged) * cfg.num_layers * 3.0 *
                         cfg.hidden_size * cfg.moe_intermediate_size * sizeof(bf16);
  // Workspace, cuBLAS and the CUDA context: a fixed reserve, generous for batches of a few
  // thousand tokens.
  const double reserve = 1.5 * double(1 << 30);
  const double block_bytes = 2.0 * cfg.num_layers * block_size * cfg.num_kv_heads *
                             cfg.head_dim * sizeof(bf16);
  const double left = budget - dense - experts - reserve;
  const int blocks = left > 0 ? static_cast<int>(left / block_bytes) : 0;
  EEP_CHECK(blocks >= 1, ErrorCode::kResourceExhausted,
            "no room for a KV cache on GPU " + std::to_string(device) + ": " +
                std::to_string(int64_t(budget) >> 20) + " MiB usable, weights need " +
                std::to_string(int64_t(dense + experts) >> 20) + " MiB (experts of " +
                std::to_string(experts_held) + " slots per layer, and " +
                std::to_string(experts_staged) + " staged during a transition); --kv-blocks N "
                "sizes the cache by hand (a transition then fails if its slots do not fit)");
  return blocks;
}

}  // namespace eep::cuda
