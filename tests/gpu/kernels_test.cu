// Compares every kernel of kernels/ with the CPU reference op of the same name
// (libeep/src/ops, compiled into this binary) on fresh random inputs, outputs poisoned first.
// Prints one line per check and exits 0 when all pass, 1 when one fails, 77 without a GPU.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "eep/ops.h"
#include "gpu_util.cuh"

using namespace gpu_test;
namespace K = eep::kernels;

namespace {

int g_failures = 0;
// Fresh inputs every run; the seed is printed, and EEP_TEST_SEED replays a run.
unsigned pick_seed() {
  const char* env = std::getenv("EEP_TEST_SEED");
  return env ? unsigned(std::strtoul(env, nullptr, 10)) : std::random_device{}();
}
const unsigned g_seed = pick_seed();
std::mt19937 g_rng(g_seed);

void report(const std::string& name, double err, double tol) {
  const bool ok = std::isfinite(err) && err <= tol;
  if (!ok) ++g_failures;
  std::printf("%-4s %-44s rel_err=%.3e tol=%.0e\n", ok ? "PASS" : "FAIL", name.c_str(), err, tol);
}

void report_exact(const std::string& name, long mismatches) {
  if (mismatches) ++g_failures;
  std::printf("%-4s %-44s mismatches=%ld\n", mismatches ? "FAIL" : "PASS", name.c_str(), mismatches);
}

void sync() { TEST_CUDA(cudaDeviceSynchronize()); }

// ---- rmsnorm --------------------------------------------------------------------------------
void test_rmsnorm(int rows, int dim, const char* what) {
  std::vector<float> xf, wf;
  auto xh = random_bf16(g_rng, size_t(rows) * dim, 1.5f, xf);
  auto wh = random_bf16(g_rng, dim, 1.0f, wf);
  DeviceBuffer<bf16> x(xh.size()), w(wh.size()), out(xh.size());
  x.upload(xh);
  w.upload(wh);
  out.poison();
  K::rmsnorm(x.get(), w.get(), out.get(), rows, dim, 1e-6f, 0);
  sync();
  std::vector<float> ref(xf.size());
  eep::ops::rmsnorm(xf.data(), wf.data(), ref.data(), rows, dim, 1e-6f);
  report(std::string("rmsnorm ") + what, rel_err(to_float(out.download()), ref), 1e-2);
  // In place (out == x), as the engine's q/k norm runs.
  K::rmsnorm(x.get(), w.get(), x.get(), rows, dim, 1e-6f, 0);
  sync();
  report(std::string("rmsnorm in place ") + what, rel_err(to_float(x.download()), ref), 1e-2);
}

// ---- rope -----------------------------------------------------------------------------------
void test_rope(int rows, int heads, int head_dim, float theta) {
  std::vector<float> xf;
  auto xh = random_bf16(g_rng, size_t(rows) * heads * head_dim, 1.0f, xf);
  std::vector<int32_t> pos(rows);
  std::uniform_int_distribution<int> pd(0, 40000);
  for (auto& p : pos) p = pd(g_rng);
  pos[0] = 0;
  DeviceBuffer<bf16> x(xh.size());
  DeviceBuffer<int32_t> dpos(rows);
  x.upload(xh);
  dpos.upload(pos);
  K::rope(x.get(), dpos.get(), rows, heads, head_dim, theta, 0);
  sync();
  eep::ops::rope(xf.data(), pos.data(), rows, heads, head_dim, theta);
  report("rope " + std::to_string(rows) + "x" + std::to_string(heads) + "x" +
             std::to_string(head_dim),
         rel_err(to_float(x.download()), xf), 1e-2);
}

// ---- router ---------------------------------------------------------------------------------
void test_router(int rows, int num_experts, int k, bool renorm) {
  // Logits on a grid of 1/16: distinct values are far apart (no rounding-order flips between
  // CPU and GPU), equal values are exact ties, which must go to the lower id.
  std::uniform_int_distribution<int> ld(-48, 48);
  std::vector<float> logits(size_t(rows) * num_experts);
  for (auto& v : logits) v = float(ld(g_rng)) / 16.0f;
  std::fill(logits.begin(), logits.begin() + num_experts, 0.5f);  // row 0: all tied
  DeviceBuffer<float> dl(logits.size()), dw(size_t(rows) * k);
  DeviceBuffer<int32_t> di(size_t(rows) * k);
  dl.upload(logits);
  dw.poison();
  di.poison();
  K::router_topk(dl.get(), rows, num_experts, k, renorm, di.get(), dw.get(), 0);
  sync();
  std::vector<int32_t> ids(size_t(rows) * k);
  std::vector<float> w(size_t(rows) * k);
  eep::ops::router_topk(logits.data(), rows, num_experts, k, renorm, ids.data(), w.data());
  auto gi = di.download();
  long mism = 0;
  for (size_t i = 0; i < ids.size(); ++i) mism += gi[i] != ids[i];
  const std::string tag = "router_topk E=" + std::to_string(num_experts) + " k=" +
                          std::to_string(k) + (renorm ? " renorm" : "");
  report_exact(tag + " ids", mism);
  report(tag + " weights", rel_err(dw.download(), w), 1e-5);
}

// ---- silu_mul -------------------------------------------------------------------------------
void test_silu_mul(long n) {
  std::vector<float> gf, uf;
  auto gh = random_bf16(g_rng, n, 3.0f, gf);
  auto uh = random_bf16(g_rng, n, 1.0f, uf);
  DeviceBuffer<bf16> g(n), u(n), y(n);
  g.upload(gh);
  u.upload(uh);
  y.poison();
  K::silu_mul(g.get(), u.get(), y.get(), n, 0);
  sync();
  std::vector<float> ref(n);
  eep::ops::silu_mul(gf.data(), uf.data(), ref.data(), int(n));
  report("silu_mul n=" + std::to_string(n), rel_err(to_float(y.download()), ref), 1e-2);
}

void test_silu_mul_fused(int rows, int inter) {
  std::vector<float> guf;
  auto guh = random_bf16(g_rng, size_t(rows) * 2 * inter, 3.0f, guf);
  DeviceBuffer<bf16> gu(guh.size()), y(size_t(rows) * inter);
  gu.upload(guh);
  y.poison();
  K::silu_mul_fused(gu.get(), y.get(), rows, inter, 0);
  sync();
  std::vector<float> ref(size_t(rows) * inter);
  for (int r = 0; r < rows; ++r)
    eep::ops::silu_mul(guf.data() + size_t(r) * 2 * inter, guf.data() + size_t(r) * 2 * inter + inter,
                       ref.data() + size_t(r) * inter, inter);
  report("silu_mul_fused " + std::to_string(rows) + "x" + std::to_string(inter),
         rel_err(to_float(y.download()), ref), 1e-2);
}

// ---- grouped GEMM ---------------------------------------------------------------------------
std::vector<int> random_offsets(int num_experts, int total, bool with_empty) {
  std::vector<int> counts(num_experts, 0);
  std::uniform_int_distribution<int> ed(0, num_experts - 1);
  for (int i = 0; i < total; ++i) counts[ed(g_rng)]++;
  if (with_empty && num_experts > 2) {  // force empty experts, first and middle
    counts[1] += counts[0];
    counts[0] = 0;
    counts[num_experts / 2 + 1] += counts[num_experts / 2];
    counts[num_experts / 2] = 0;
  }
  std::vector<int> off(num_experts + 1, 0);
  for (int e = 0; e < num_experts; ++e) off[e + 1] = off[e] + counts[e];
  return off;
}

void test_grouped_gemm(K::GroupedGemm& gg, K::GroupedGemmImpl impl, const char* name,
                       int num_experts, int total, int n, int k) {
  const auto off = random_offsets(num_experts, total, true);
  std::vector<float> xf, wf;
  auto xh = random_bf16(g_rng, size_t(total) * k, 1.0f, xf);
  auto wh = random_bf16(g_rng, size_t(num_experts) * n * k, 0.05f, wf);
  DeviceBuffer<bf16> x(xh.size()), w(wh.size()), y(size_t(total) * n);
  x.upload(xh);
  w.upload(wh);
  y.poison();
  gg.run(impl, x.get(), w.get(), y.get(), off.data(), num_experts, n, k, 0);
  sync();
  std::vector<float> ref(size_t(total) * n);
  for (int e = 0; e < num_experts; ++e) {
    const int m = off[e + 1] - off[e];
    if (m)
      eep::ops::matmul_nt(xf.data() + size_t(off[e]) * k, wf.data() + size_t(e) * n * k,
                          ref.data() + size_t(off[e]) * n, m, k, n);
  }
  report(std::string("grouped_gemm ") + name + " E=" + std::to_string(num_experts) + " rows=" +
             std::to_string(total) + " n=" + std::to_string(n) + " k=" + std::to_string(k),
         rel_err(to_float(y.download()), ref), 1e-2);
}

// ---- paged decode attention -----------------------------------------------------------------
void test_paged_attention(int num_seqs, int heads, int kv_heads, int head_dim, int block_size,
                          int max_len) {
  std::uniform_int_distribution<int> lend(1, max_len);
  std::vector<int32_t> lens(num_seqs);
  for (auto& l : lens) l = lend(g_rng);
  lens[0] = 1;  // a sequence with only its current token
  const int max_blocks = (max_len + block_size - 1) / block_size;
  const int num_blocks = num_seqs * max_blocks + 3;
  // Every sequence gets distinct blocks, in shuffled order.
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), g_rng);
  std::vector<int32_t> tables(size_t(num_seqs) * max_blocks);
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = perm[i];

  std::vector<float> qf, kf, vf;
  const size_t cache = size_t(num_blocks) * block_size * kv_heads * head_dim;
  auto qh = random_bf16(g_rng, size_t(num_seqs) * heads * head_dim, 1.0f, qf);
  auto kh = random_bf16(g_rng, cache, 1.0f, kf);
  auto vh = random_bf16(g_rng, cache, 1.0f, vf);
  DeviceBuffer<bf16> q(qh.size()), kc(cache), vc(cache), out(qh.size());
  DeviceBuffer<int32_t> dt(tables.size()), dl(lens.size());
  q.upload(qh);
  kc.upload(kh);
  vc.upload(vh);
  dt.upload(tables);
  dl.upload(lens);
  out.poison();
  K::paged_decode_attention(q.get(), kc.get(), vc.get(), dt.get(), dl.get(), out.get(), num_seqs,
                            heads, kv_heads, head_dim, block_size, max_blocks, 0);
  sync();
  eep::ops::KvLayerView view;
  view.k = kf.data();
  view.v = vf.data();
  view.block_size = block_size;
  view.num_kv_heads = kv_heads;
  view.head_dim = head_dim;
  std::vector<float> ref(qf.size());
  for (int s = 0; s < num_seqs; ++s) {
    const int32_t pos = lens[s] - 1;
    eep::ops::paged_attention(view, tables.data() + size_t(s) * max_blocks, &pos, 1,
                              qf.data() + size_t(s) * heads * head_dim, heads,
                              ref.data() + size_t(s) * heads * head_dim);
  }
  report("paged_attention seqs=" + std::to_string(num_seqs) + " h=" + std::to_string(heads) + "/" +
             std::to_string(kv_heads) + " d=" + std::to_string(head_dim) + " bs=" +
             std::to_string(block_size) + " len<=" + std::to_string(max_len),
         rel_err(to_float(out.download()), ref), 1e-2);
}

// ---- permutation ----------------------------------------------------------------------------
// Distinct random experts per token.
std::vector<int32_t> random_topk_ids(int tokens, int k, int num_experts) {
  std::vector<int32_t> ids(size_t(tokens) * k), all(num_experts);
  std::iota(all.begin(), all.end(), 0);
  for (int t = 0; t < tokens; ++t) {
    std::shuffle(all.begin(), all.end(), g_rng);
    std::copy(all.begin(), all.begin() + k, ids.begin() + size_t(t) * k);
  }
  return ids;
}

void test_permute(int tokens, int k, int hidden, int num_experts) {
  const auto ids = random_topk_ids(tokens, k, num_experts);
  const int pairs = tokens * k;
  std::vector<float> xf;
  auto xh = random_bf16(g_rng, size_t(tokens) * hidden, 1.0f, xf);
  DeviceBuffer<bf16> x(xh.size()), perm(size_t(pairs) * hidden);
  DeviceBuffer<int32_t> di(ids.size()), doff(num_experts + 1), drows(pairs);
  x.upload(xh);
  di.upload(ids);
  perm.poison();
  doff.poison();
  drows.poison();
  K::permute_tokens(x.get(), di.get(), tokens, k, hidden, num_experts, doff.get(), drows.get(),
                    perm.get(), 0);
  sync();
  // Reference: stable counting sort of the pairs by expert.
  std::vector<int32_t> off(num_experts + 1, 0), rows(pairs);
  for (int s = 0; s < pairs; ++s) off[ids[s] + 1]++;
  for (int e = 0; e < num_experts; ++e) off[e + 1] += off[e];
  std::vector<int32_t> next(off.begin(), off.end() - 1);
  for (int s = 0; s < pairs; ++s) rows[s] = next[ids[s]]++;
  const auto goff = doff.download(), grows = drows.download();
  long mism = 0;
  for (int e = 0; e <= num_experts; ++e) mism += goff[e] != off[e];
  for (int s = 0; s < pairs; ++s) mism += grows[s] != rows[s];
  const auto gp = perm.download();
  for (int s = 0; s < pairs; ++s)
    mism += std::memcmp(&gp[size_t(rows[s]) * hidden], &xh[size_t(s / k) * hidden],
                        sizeof(bf16) * hidden) != 0;
  const std::string tag = "permute T=" + std::to_string(tokens) + " k=" + std::to_string(k) +
                          " E=" + std::to_string(num_experts) + " h=" + std::to_string(hidden);
  report_exact(tag, mism);

  // Combine.
  std::vector<float> yf, wts(pairs);
  auto yh = random_bf16(g_rng, size_t(pairs) * hidden, 1.0f, yf);
  std::uniform_real_distribution<float> wd(0.0f, 1.0f);
  for (auto& v : wts) v = wd(g_rng);
  DeviceBuffer<bf16> y(yh.size()), out(size_t(tokens) * hidden);
  DeviceBuffer<float> dw(pairs);
  y.upload(yh);
  dw.upload(wts);
  out.poison();
  K::unpermute_tokens(y.get(), drows.get(), dw.get(), tokens, k, hidden, out.get(), 0);
  sync();
  std::vector<float> ref(size_t(tokens) * hidden, 0.0f);
  for (int t = 0; t < tokens; ++t)
    for (int j = 0; j < k; ++j)
      for (int d = 0; d < hidden; ++d)
        ref[size_t(t) * hidden + d] += wts[t * k + j] * yf[size_t(rows[t * k + j]) * hidden + d];
  report("un" + tag, rel_err(to_float(out.download()), ref), 1e-2);
}

// ---- whole MoE block ------------------------------------------------------------------------
// router -> permute -> grouped gate_up -> silu_mul_fused -> grouped down -> unpermute, against
// the CPU router and swiglu_expert per (token, expert).
void test_moe_block(K::GroupedGemm& gg, int tokens, int num_experts, int k, int hidden, int inter) {
  std::vector<float> xf, gatef, upf, downf, lf;
  auto xh = random_bf16(g_rng, size_t(tokens) * hidden, 1.0f, xf);
  auto gateh = random_bf16(g_rng, size_t(num_experts) * inter * hidden, 0.05f, gatef);
  auto uph = random_bf16(g_rng, size_t(num_experts) * inter * hidden, 0.05f, upf);
  auto downh = random_bf16(g_rng, size_t(num_experts) * hidden * inter, 0.05f, downf);
  std::uniform_int_distribution<int> ld(-48, 48);
  std::vector<float> logits(size_t(tokens) * num_experts);
  for (auto& v : logits) v = float(ld(g_rng)) / 16.0f;
  // Concatenated gate/up weights per expert: [E][2*inter][hidden].
  std::vector<bf16> guh(size_t(num_experts) * 2 * inter * hidden);
  const size_t ew = size_t(inter) * hidden;
  for (int e = 0; e < num_experts; ++e) {
    std::copy(gateh.begin() + e * ew, gateh.begin() + (e + 1) * ew, guh.begin() + 2 * e * ew);
    std::copy(uph.begin() + e * ew, uph.begin() + (e + 1) * ew, guh.begin() + (2 * e + 1) * ew);
  }
  const int pairs = tokens * k;
  DeviceBuffer<bf16> x(xh.size()), wgu(guh.size()), wdown(downh.size()), perm(size_t(pairs) * hidden),
      gu(size_t(pairs) * 2 * inter), act(size_t(pairs) * inter), ye(size_t(pairs) * hidden),
      out(size_t(tokens) * hidden);
  DeviceBuffer<float> dlog(logits.size()), dw(pairs);
  DeviceBuffer<int32_t> di(pairs), doff(num_experts + 1), drows(pairs);
  x.upload(xh);
  wgu.upload(guh);
  wdown.upload(downh);
  dlog.upload(logits);
  out.poison();
  K::router_topk(dlog.get(), tokens, num_experts, k, true, di.get(), dw.get(), 0);
  K::permute_tokens(x.get(), di.get(), tokens, k, hidden, num_experts, doff.get(), drows.get(),
                    perm.get(), 0);
  const auto off = doff.download();  // the host needs the group sizes for cuBLAS
  gg.run(K::GroupedGemmImpl::kCublasGrouped, perm.get(), wgu.get(), gu.get(), off.data(),
         num_experts, 2 * inter, hidden, 0);
  K::silu_mul_fused(gu.get(), act.get(), pairs, inter, 0);
  gg.run(K::GroupedGemmImpl::kCublasGrouped, act.get(), wdown.get(), ye.get(), off.data(),
         num_experts, hidden, inter, 0);
  K::unpermute_tokens(ye.get(), drows.get(), dw.get(), tokens, k, hidden, out.get(), 0);
  sync();

  std::vector<int32_t> ids(pairs);
  std::vector<float> w(pairs), ref(size_t(tokens) * hidden, 0.0f), one(hidden);
  eep::ops::router_topk(logits.data(), tokens, num_experts, k, true, ids.data(), w.data());
  for (int t = 0; t < tokens; ++t)
    for (int j = 0; j < k; ++j) {
      const int e = ids[t * k + j];
      eep::ops::swiglu_expert(xf.data() + size_t(t) * hidden, 1, gatef.data() + e * ew,
                              upf.data() + e * ew, downf.data() + e * ew, hidden, inter, one.data());
      for (int d = 0; d < hidden; ++d) ref[size_t(t) * hidden + d] += w[t * k + j] * one[d];
    }
  report("moe_block T=" + std::to_string(tokens) + " E=" + std::to_string(num_experts) + " k=" +
             std::to_string(k) + " h=" + std::to_string(hidden) + " i=" + std::to_string(inter),
         rel_err(to_float(out.download()), ref), 2e-2);
}

// ---- argument checks ------------------------------------------------------------------------
void test_errors() {
  long missed = 0;
  try {
    K::paged_decode_attention(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 32, 4, 96,
                              16, 1, 0);
    ++missed;
  } catch (const K::CudaError&) {
  }
  try {
    K::router_topk(nullptr, 1, 2000, 8, true, nullptr, nullptr, 0);
    ++missed;
  } catch (const K::CudaError&) {
  }
  report_exact("invalid arguments throw CudaError", missed);
}

}  // namespace

int main() {
  skip_without_device();
  cudaDeviceProp prop{};
  TEST_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs), seed %u (EEP_TEST_SEED)\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, g_seed);
  try {
    test_rmsnorm(37, 2048, "rows 37x2048");
    test_rmsnorm(37 * 32, 128, "per-head 1184x128");
    test_rmsnorm(5, 1001, "odd 5x1001");
    test_rope(19, 32, 128, 1e6f);
    test_rope(7, 4, 64, 1e4f);
    test_router(300, 128, 8, true);
    test_router(300, 128, 8, false);
    test_router(17, 60, 4, true);
    test_silu_mul(100003);
    test_silu_mul_fused(33, 768);
    K::GroupedGemm gg(128);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasLoop, "loop", 8, 300, 192, 256);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasGrouped, "grouped", 8, 300, 192, 256);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasGrouped, "grouped", 128, 2048, 1536, 2048);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasLoop, "loop", 128, 2048, 2048, 768);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasStreams, "streams", 8, 300, 192, 256);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasStreams, "streams", 128, 4096, 1536, 2048);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasSplit, "split(fallback)", 8, 300, 192, 256);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasSplit, "split", 16, 4096, 384, 512);
    test_grouped_gemm(gg, K::GroupedGemmImpl::kCublasSplit, "split", 128, 32768, 256, 2048);
    test_paged_attention(6, 32, 4, 128, 16, 700);
    test_paged_attention(3, 8, 8, 64, 32, 100);
    test_paged_attention(2, 16, 2, 256, 16, 300);
    test_permute(300, 8, 2048, 128);
    test_permute(1000, 8, 40, 128);
    test_permute(50, 2, 256, 1000);
    test_moe_block(gg, 64, 8, 2, 256, 128);
    test_errors();
  } catch (const K::CudaError& e) {
    std::printf("FAIL CUDA error: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "ALL PASSED", g_failures);
  return g_failures ? 1 : 0;
}
