// One step of the CUDA backend: the step's metadata in one upload, the layers (eagerly, or as a
// captured CUDA graph for decode steps of a group of one), sampling, and the end-of-step checks.
#include <cstdlib>
#include <cstring>
#include <utility>

#include "cuda/cuda_backend.h"
#include "eep/comm.h"
#include "eep_kernels.h"

namespace eep::cuda {

namespace {
constexpr int kGraphBlockBucket = 16;
// Largest exchange block set (all owners' blocks of one direction) for the stream-ordered MoE
// exchange; larger steps take the host-routed path, whose transfers are sized exactly.
constexpr int64_t kMaxExchangeBytes = int64_t(16) << 20;
}  // namespace

void CudaBackend::forward(const StepBatch& batch, Group& group, std::vector<float>& logits) {
  try {
    const int num_sample = forward_on_device(batch, group);
    logits.resize(size_t(num_sample) * cfg_.vocab_size);
    if (num_sample > 0)
      EEP_CU(cudaMemcpyAsync(logits.data(), logits_.get(), logits.size() * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
    finish_step();
    if (profile_) profile_->end(batch.num_rows(), group.size());
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
        const size_t ws_bytes = kernels::argmax_rows_workspace_bytes(num_sample, vocab);
        kernels::argmax_rows(logits_.get(), num_sample, vocab, ids, sampling_ws_.reserve(ws_bytes),
                             ws_bytes, stream_);
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
    mark("sampling");
    finish_step();
    if (profile_) profile_->end(batch.num_rows(), group.size());
  } catch (const kernels::CudaError& e) {
    throw Error(ErrorCode::kInternal, std::string("CUDA backend: ") + e.what());
  }
}

int CudaBackend::forward_on_device(const StepBatch& batch, Group& group) {
  activate();
  const int rows = batch.num_rows();
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
  // A decode step (one row per sequence) on a group of one runs as a CUDA graph: everything it
  // does is on the device. Block tables are padded to a multiple of kGraphBlockBucket so that a
  // growing context does not need a new graph every block.
  // A profiled step (EEP_CUDA_PROFILE) synchronises at every phase, so it runs eagerly.
  const bool profiled = profile_ && profile_->begin(stream_);
  const bool graphable = !profiled && use_graphs_ && group.size() == 1 && rows > 0 &&
                         rows == m.num_seqs && m.max_seq_rows == 1;
  if (graphable)
    m.max_blocks = (m.max_blocks + kGraphBlockBucket - 1) / kGraphBlockBucket * kGraphBlockBucket;
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
  // The stream-ordered exchange (groups of more than one over device buffers): decode-sized
  // steps only, since its blocks go whole. Every member computes the same capacity from the
  // group's row count, so all take the same path.
  exchange_cap_ = 0;
  exchange_group_ = nullptr;
  if (device_exchange_ && group.size() > 1 && group.device_buffers() && batch.group_rows > 0 &&
      placement_.num_slots <= 1024) {
    const int64_t cap = batch.group_rows * cfg_.num_experts_per_tok;
    const int64_t bytes = int64_t(group.size()) * cap * cfg_.hidden_size * int64_t(sizeof(bf16));
    if (bytes <= kMaxExchangeBytes) exchange_cap_ = static_cast<int>(cap);
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
  EEP_CU(cudaMemsetAsync(route_error_.get(), 0, sizeof(int32_t), stream_));
  mark("step metadata");

  if (!graphable) {
    run_layers(m, group);
    return m.num_sample;
  }
  // Graphs hold device addresses: any workspace reallocated since their capture voids them all.
  if (graphs_stale_.exchange(false) || graphs_generation_ != device_alloc_generation())
    drop_graphs();
  StepGraph& g = graphs_[GraphKey{rows, m.num_seqs, m.num_sample, m.max_blocks}];
  if (g.exec) {
    EEP_CU(cudaGraphLaunch(g.exec, stream_));
    ++graph_replays_;
    return m.num_sample;
  }
  // The first step of a shape runs eagerly (it sizes the workspaces and lets cuBLAS pick its
  // kernels); the second is captured, then launched.
  if (g.seen++ == 0) {
    run_layers(m, group);
    return m.num_sample;
  }
  const uint64_t before = device_alloc_generation();
  cudaGraph_t graph = nullptr;
  // Thread-local mode: the elastic prepare worker may allocate on its own thread meanwhile.
  EEP_CU(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  try {
    run_layers(m, group);
  } catch (const std::exception& e) {
    // Something in the step cannot be captured: serve without graphs from now on. A real
    // device fault shows up again in the eager run below and fails the step there.
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    use_graphs_ = false;
    logger("cuda")->warn("CUDA graph capture failed, decode steps run eagerly: {}", e.what());
    run_layers(m, group);
    return m.num_sample;
  }
  EEP_CU(cudaStreamEndCapture(stream_, &graph));
  const bool moved = device_alloc_generation() != before;
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = moved ? cudaErrorUnknown : cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess || moved) {
    // A workspace grew during the capture (or instantiation failed): run this step eagerly and
    // try again next time.
    g.seen = 0;
    run_layers(m, group);
    return m.num_sample;
  }
  g.exec = exec;
  graphs_generation_ = before;
  ++graph_captures_;
  EEP_CU(cudaGraphLaunch(g.exec, stream_));
  return m.num_sample;
}

void CudaBackend::run_layers(const StepMeta& m, Group& group) {
  const int rows = m.rows;
  const int hidden = cfg_.hidden_size;

  float* x = x_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  bf16* h = h_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  float* h_f32 = h_f32_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  bf16* moe_out = moe_out_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  kernels::embedding_gather(embed_.get(), m.tokens, rows, hidden, cfg_.vocab_size, x, stream_);
  mark("embedding");
  // The previous layer's MoE combine when it is left to the next residual norm (decode).
  kernels::MoeCombine pending;
  // x += previous MoE output (stored in moe_out, or combined here); out = norm(x).
  auto add_norm = [&](const bf16* moe_delta, const bf16* w, bf16* out, float* out_f32) {
    if (pending.y)
      kernels::add_combine_rmsnorm(x, pending, w, out, out_f32, rows, hidden, cfg_.rms_norm_eps,
                                   stream_);
    else
      kernels::add_rmsnorm(x, moe_delta, w, out, out_f32, rows, hidden, cfg_.rms_norm_eps,
                           stream_);
    pending = kernels::MoeCombine{};
  };
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const DenseLayer& d = layers_[l];
    if (profile_) profile_->set_layer(l);
    add_norm(l == 0 ? nullptr : moe_out, d.input_norm.get(), h, nullptr);
    mark("input norm");
    if (rows > 0) attention(l, m);
    kernels::add_rmsnorm(x, delta_.get(), d.post_norm.get(), h, h_f32, rows, hidden,
                         cfg_.rms_norm_eps, stream_);
    mark("post norm");
    // The MoE joins the group's collectives even with no rows (dummy step).
    moe(l, h, h_f32, rows, group, moe_out, &pending);
  }
  // Final norm over all rows (x += last MoE output), then logits for the sampling rows only.
  bf16* normed = final_h_.reserve(std::max<size_t>(size_t(rows) * hidden, 1));
  if (profile_) profile_->set_layer(-1);
  add_norm(moe_out, final_norm_.get(), normed, nullptr);
  mark("final norm");
  if (m.num_sample > 0) {
    bf16* picked = h;  // h is free now
    kernels::gather_rows(normed, m.sample_rows, m.num_sample, hidden, picked, stream_);
    float* dl = logits_.reserve(size_t(m.num_sample) * cfg_.vocab_size);
    gemm(picked, lm_head_.get(), dl, CUDA_R_32F, m.num_sample, hidden, cfg_.vocab_size);
    mark("lm head");
  }
}

void CudaBackend::finish_step() {
  int32_t* err = route_error_host_.reserve(5);
  EEP_CU(cudaMemcpyAsync(err, route_error_.get(), 5 * sizeof(int32_t), cudaMemcpyDeviceToHost,
                         stream_));
  if (exchange_group_) {
    // The stream holds the group's transfers: wait with its timeout (a dead peer aborts the
    // communicator rather than hanging the stream).
    Group* g = std::exchange(exchange_group_, nullptr);
    g->wait_stream(stream_);
  }
  EEP_CU(cudaStreamSynchronize(stream_));
  load_dev_dirty_ = true;
  if (err[0] != 0) {
    // The step's results are not used: the engine fails the step, as on the host-routed path.
    if (err[4] == -3)
      throw Error(ErrorCode::kInternal,
                  "layer " + std::to_string(err[1]) + ": the MoE exchange got a malformed or "
                  "overfull block for slots from " + std::to_string(err[3]));
    const std::string held = err[4] == -2 ? "a slot of another rank" : "expert " + std::to_string(err[4]);
    throw Error(ErrorCode::kInternal,
                "layer " + std::to_string(err[1]) + ": row for expert " + std::to_string(err[2]) +
                    " routed to slot " + std::to_string(err[3]) + " which holds " + held);
  }
}

void CudaBackend::fold_device_load() const {
  if (!load_dev_dirty_ || load_dev_.empty()) return;
  activate();
  const int layers = cfg_.num_layers;
  const size_t spr = load_dev_.size() / size_t(layers);
  std::vector<unsigned long long> counts(load_dev_.size());
  EEP_CU(cudaMemcpyAsync(counts.data(), load_dev_.get(), load_dev_.bytes(),
                         cudaMemcpyDeviceToHost, stream_));
  EEP_CU(cudaMemsetAsync(load_dev_.get(), 0, load_dev_.bytes(), stream_));
  EEP_CU(cudaStreamSynchronize(stream_));
  for (int l = 0; l < layers; ++l)
    for (size_t s = 0; s < spr; ++s)
      load_[l][size_t(rank_) * spr + s] += int64_t(counts[l * spr + s]);
  load_dev_dirty_ = false;
}

void CudaBackend::drop_graphs() {
  for (auto& [key, g] : graphs_)
    if (g.exec) cudaGraphExecDestroy(g.exec);
  graphs_.clear();
  graphs_generation_ = device_alloc_generation();
}

}  // namespace eep::cuda
