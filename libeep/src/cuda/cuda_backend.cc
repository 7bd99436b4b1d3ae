// CudaBackend: construction, weight loading, the dense part of the forward pass and the factory
// functions. The MoE layer is in cuda_moe.cc, the elastic side in cuda_elastic.cc.
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
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
    DeviceArray<bf16>* dst = dense_array(name);
    dst->resize(buf.size());
    upload_f32_as_bf16(buf, dst->get(), side_stream_);
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
  experts_ = std::move(next);
  placement_ = placement;
  rank_ = rank;
  load_.assign(cfg_.num_layers, std::vector<int64_t>(placement.num_slots, 0));
}

void CudaBackend::reset_expert_load() {
  for (auto& row : load_) std::fill(row.begin(), row.end(), 0);
}

// y[rows][n] = x[rows][k] · w[n][k]^T (Linear layout), bf16 inputs, fp32 accumulation; y is bf16
// or fp32 (router and lm_head logits).
void CudaBackend::gemm(const bf16* x, const bf16* w, void* y, cudaDataType_t y_type, int rows,
                       int k, int n) {
  if (rows == 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  EEP_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w, CUDA_R_16BF, k,
                          x, CUDA_R_16BF, k, &beta, y, y_type, n, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::attention(int layer, const StepMeta& m) {
  const DenseLayer& d = layers_[layer];
  const int rows = m.rows, hd = cfg_.head_dim, hidden = cfg_.hidden_size;
  const int q_dim = cfg_.num_heads * hd, kv_dim = cfg_.num_kv_heads * hd;
  bf16* q = q_.reserve(size_t(rows) * q_dim);
  bf16* k = k_.reserve(size_t(rows) * kv_dim);
  bf16* v = v_.reserve(size_t(rows) * kv_dim);
  bf16* attn = attn_.reserve(size_t(rows) * q_dim);
  bf16* delta = delta_.reserve(size_t(rows) * hidden);
  gemm(h_.get(), d.wq.get(), q, CUDA_R_16BF, rows, hidden, q_dim);
  gemm(h_.get(), d.wk.get(), k, CUDA_R_16BF, rows, hidden, kv_dim);
  gemm(h_.get(), d.wv.get(), v, CUDA_R_16BF, rows, hidden, kv_dim);
  // Qwen3: per-head RMSNorm of q and k, then the rotary embedding.
  kernels::rmsnorm(q, d.q_norm.get(), q, rows * cfg_.num_heads, hd, cfg_.rms_norm_eps, stream_);
  kernels::rmsnorm(k, d.k_norm.get(), k, rows * cfg_.num_kv_heads, hd, cfg_.rms_norm_eps, stream_);
  kernels::rope(q, m.positions, rows, cfg_.num_heads, hd, cfg_.rope_theta, stream_);
  kernels::rope(k, m.positions, rows, cfg_.num_kv_heads, hd, cfg_.rope_theta, stream_);
  const size_t per_layer = size_t(opts_.num_kv_blocks) * opts_.block_size * kv_dim;
  bf16* kc = k_cache_.get() + per_layer * layer;
  bf16* vc = v_cache_.get() + per_layer * layer;
  // Every row's K/V goes in before any row attends: a prefill chunk's rows see each other.
  kernels::kv_write(k, v, m.kv_slots, rows, kv_dim, kc, vc, stream_);
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
  else
    kernels::paged_decode_attention(q, kc, vc, m.block_tables, m.seq_lens, attn, rows,
                                    cfg_.num_heads, cfg_.num_kv_heads, hd, opts_.block_size,
                                    m.max_blocks, stream_);
  gemm(attn, d.wo.get(), delta, CUDA_R_16BF, rows, q_dim, hidden);
}

void CudaBackend::forward(const StepBatch& batch, Group& group, std::vector<float>& logits) {
  try {
    const int num_sample = forward_on_device(batch, group);
    logits.resize(size_t(num_sample) * cfg_.vocab_size);
    if (num_sample > 0)
      EEP_CU(cudaMemcpyAsync(logits.data(), logits_.get(), logits.size() * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
    EEP_CU(cudaStreamSynchronize(stream_));
  } catch (const kernels::CudaError& e) {
    // A kernel launch or cuBLAS failure: the device state is suspect; report it as a bug.
    throw Error(ErrorCode::kInternal, std::string("CUDA backend: ") + e.what());
  }
}

void CudaBackend::forward_tokens(const StepBatch& batch, Group& group,
                                 const std::vector<const SamplingParams*>& params,
                                 const std::vector<int64_t>& positions,
                                 std::vector<int32_t>& tokens) {
  try {
    const int num_sample = forward_on_device(batch, group);
    EEP_CHECK(size_t(num_sample) == params.size() && positions.size() == params.size(),
              ErrorCode::kInternal, "forward_tokens: one sampling parameter set per sampling seq");
    tokens.resize(num_sample);
    if (num_sample > 0) {
      const int vocab = cfg_.vocab_size;
      int32_t* ids = sampled_.reserve(num_sample);
      bool greedy = true;
      for (const SamplingParams* p : params) greedy = greedy && p->temperature == 0.0;
      if (greedy) {
        kernels::argmax_rows(logits_.get(), num_sample, vocab, ids, stream_);
      } else {
        // The host sampler's rule on the device (kernels/sampling.cu), row by row parameters.
        std::vector<kernels::SamplingRow> rows(num_sample);
        for (int i = 0; i < num_sample; ++i) {
          rows[i].temperature = params[i]->temperature;
          rows[i].top_p = params[i]->top_p;
          rows[i].top_k = params[i]->top_k;
          rows[i].seed = params[i]->seed;
          rows[i].position = positions[i];
        }
        auto* dev_rows = reinterpret_cast<kernels::SamplingRow*>(
            sampling_rows_.reserve(rows.size() * sizeof(kernels::SamplingRow)));
        EEP_CU(cudaMemcpyAsync(dev_rows, rows.data(), rows.size() * sizeof(kernels::SamplingRow),
                               cudaMemcpyHostToDevice, stream_));
        const size_t ws_bytes = kernels::sample_tokens_workspace_bytes(num_sample, vocab);
        void* ws = sampling_ws_.reserve(ws_bytes);
        kernels::sample_tokens(logits_.get(), dev_rows, num_sample, vocab, ws, ws_bytes, ids,
                               stream_);
      }
      EEP_CU(cudaMemcpyAsync(tokens.data(), ids, num_sample * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, stream_));
    }
    EEP_CU(cudaStreamSynchronize(stream_));
  } catch (const kernels::CudaError& e) {
    throw Error(ErrorCode::kInternal, std::string("CUDA backend: ") + e.what());
  }
}

int CudaBackend::forward_on_device(const StepBatch& batch, Group& group) {
  activate();
  const int rows = batch.num_rows();
  const int hidden = cfg_.hidden_size;
  EEP_CHECK(!experts_.empty() && !layers_.empty() && !embed_.empty(), ErrorCode::kInternal,
            "forward before the weights were loaded");

  // Metadata of the step, one upload (see StepMeta).
  StepMeta m;
  m.rows = rows;
  m.num_seqs = static_cast<int>(batch.seqs.size());
  for (const SeqSlice& s : batch.seqs) {
    m.max_blocks = std::max(m.max_blocks, s.num_blocks);
    m.max_seq_rows = std::max(m.max_seq_rows, s.num_rows);
    if (s.sample) ++m.num_sample;
  }
  m.max_blocks = std::max(m.max_blocks, 1);
  const size_t per_row = size_t(rows) * (4 + m.max_blocks);
  const size_t per_seq = size_t(m.num_seqs) * (3 + m.max_blocks);
  const size_t meta_len = per_row + m.num_sample + per_seq;
  int32_t* host = meta_host_.reserve(std::max<size_t>(meta_len, 1));
  int32_t* h_tokens = host;
  int32_t* h_pos = host + rows;
  int32_t* h_slots = host + 2 * size_t(rows);
  int32_t* h_lens = host + 3 * size_t(rows);
  int32_t* h_tables = host + 4 * size_t(rows);
  int32_t* h_sample = host + per_row;
  int32_t* h_seq = h_sample + m.num_sample;  // q_start, rows, start: [3][num_seqs]; tables
  int32_t* h_seq_tables = h_seq + 3 * size_t(m.num_seqs);
  int sample_i = 0;
  for (int si = 0; si < m.num_seqs; ++si) {
    const SeqSlice& s = batch.seqs[si];
    int32_t* seq_table = h_seq_tables + size_t(si) * m.max_blocks;
    std::memcpy(seq_table, s.block_table, sizeof(int32_t) * s.num_blocks);
    std::fill(seq_table + s.num_blocks, seq_table + m.max_blocks, 0);
    h_seq[si] = s.row_begin;
    h_seq[m.num_seqs + si] = s.num_rows;
    h_seq[2 * m.num_seqs + si] = s.num_rows > 0 ? batch.positions[s.row_begin] : 0;
    for (int i = 0; i < s.num_rows; ++i) {
      const int r = s.row_begin + i;
      const int pos = batch.positions[r];
      const int block = pos / opts_.block_size;
      EEP_CHECK(block < s.num_blocks, ErrorCode::kInternal,
                "position " + std::to_string(pos) + " has no KV block");
      EEP_CHECK(s.block_table[block] >= 0 && s.block_table[block] < opts_.num_kv_blocks,
                ErrorCode::kInternal, "KV block id out of range");
      EEP_CHECK(pos == h_seq[2 * m.num_seqs + si] + i, ErrorCode::kInternal,
                "a sequence's rows must be consecutive positions");
      h_tokens[r] = batch.tokens[r];
      h_pos[r] = pos;
      h_slots[r] = s.block_table[block] * opts_.block_size + pos % opts_.block_size;
      h_lens[r] = pos + 1;
      std::memcpy(h_tables + size_t(r) * m.max_blocks, seq_table, sizeof(int32_t) * m.max_blocks);
    }
    if (s.sample) h_sample[sample_i++] = s.row_begin + s.num_rows - 1;
  }
  int32_t* dev = meta_.reserve(std::max<size_t>(meta_len, 1));
  EEP_CU(cudaMemcpyAsync(dev, host, meta_len * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  m.tokens = dev;
  m.positions = dev + rows;
  m.kv_slots = dev + 2 * size_t(rows);
  m.seq_lens = dev + 3 * size_t(rows);
  m.block_tables = dev + 4 * size_t(rows);
  m.sample_rows = dev + per_row;
  m.seq_q_start = m.sample_rows + m.num_sample;
  m.seq_rows = m.seq_q_start + m.num_seqs;
  m.seq_start = m.seq_rows + m.num_seqs;
  m.seq_tables = m.seq_start + m.num_seqs;

  float* x = x_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  bf16* h = h_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  bf16* moe_out = moe_out_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  kernels::embedding_gather(embed_.get(), m.tokens, rows, hidden, cfg_.vocab_size, x, stream_);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const DenseLayer& d = layers_[l];
    // x += previous layer's MoE output; h = input_norm(x).
    kernels::add_rmsnorm(x, l == 0 ? nullptr : moe_out, d.input_norm.get(), h, rows, hidden,
                         cfg_.rms_norm_eps, stream_);
    if (rows > 0) attention(l, m);
    kernels::add_rmsnorm(x, delta_.get(), d.post_norm.get(), h, rows, hidden, cfg_.rms_norm_eps,
                         stream_);
    // The MoE joins the group's collectives even with no rows (dummy step).
    moe(l, h, rows, group, moe_out);
  }
  // Final norm over all rows (x += last MoE output), then logits for the sampling rows only.
  bf16* normed = final_h_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  kernels::add_rmsnorm(x, moe_out, final_norm_.get(), normed, rows, hidden, cfg_.rms_norm_eps,
                       stream_);
  if (m.num_sample > 0) {
    bf16* picked = h;  // h is free now
    kernels::gather_rows(normed, m.sample_rows, m.num_sample, hidden, picked, stream_);
    float* dl = logits_.reserve(size_t(m.num_sample) * cfg_.vocab_size);
    gemm(picked, lm_head_.get(), dl, CUDA_R_32F, m.num_sample, hidden, cfg_.vocab_size);
  }
  return m.num_sample;  // logits_ holds [num_sample][vocab] once stream_ gets there
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
  const int experts_held = (cfg.num_experts + min_ranks - 1) / min_ranks;
  const double experts = double(experts_held) * cfg.num_layers * 3.0 * cfg.hidden_size *
                         cfg.moe_intermediate_size * sizeof(bf16);
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
                std::to_string(experts_held) + " slots per layer)");
  return blocks;
}

}  // namespace eep::cuda
