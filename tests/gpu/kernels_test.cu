// Compares every kernel of kernels/ with the CPU reference op of the same name
// (libeep/src/ops, compiled into this binary) on fresh random inputs, outputs poisoned first.
// Prints one line per check and exits 0 when all pass, 1 when one fails, 77 without a GPU.
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <tuple>

#include "eep/ops.h"
#include "eep/scheduler.h"
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

void test_router_tiled(int rows, int hidden, int num_experts, int k, bool renorm) {
  // Inputs on grids of 1/8 (|x| <= 2, |w| <= 1): every product is a multiple of 1/64 and every
  // partial sum is exact in fp32 (|sum| <= 2 * hidden, far below 2^24 / 64), so GPU and CPU
  // logits are equal whatever the splits and the summation order, and the ids must match.
  std::uniform_int_distribution<int> xd(-16, 16), wd(-8, 8);
  std::vector<float> x(size_t(rows) * hidden), w(size_t(num_experts) * hidden);
  for (auto& e : x) e = float(xd(g_rng)) / 8.0f;
  for (auto& e : w) e = float(wd(g_rng)) / 8.0f;
  DeviceBuffer<float> dx(x.size()), dw(w.size()), dwt(size_t(rows) * k);
  DeviceBuffer<int32_t> di(size_t(rows) * k);
  dx.upload(x);
  dw.upload(w);
  std::vector<float> logits(size_t(rows) * num_experts), wt(size_t(rows) * k);
  std::vector<int32_t> ids(size_t(rows) * k);
  eep::ops::matmul_nt(x.data(), w.data(), logits.data(), rows, hidden, num_experts);
  eep::ops::router_topk(logits.data(), rows, num_experts, k, renorm, ids.data(), wt.data());
  // Twice, each checked: the kernel keeps no state between launches (graph replays).
  long mism = 0;
  double err = 0.0;
  for (int pass = 0; pass < 2; ++pass) {
    dwt.poison();
    di.poison();
    K::router_tiled(dx.get(), dw.get(), rows, hidden, num_experts, k, renorm, di.get(), dwt.get(),
                    0);
    sync();
    auto gi = di.download();
    for (size_t i = 0; i < ids.size(); ++i) mism += gi[i] != ids[i];
    const double e = rel_err(dwt.download(), wt);
    err = std::isfinite(e) ? std::max(err, e) : HUGE_VAL;  // a NaN (unwritten) must not vanish
  }
  const std::string tag = "router_tiled " + std::to_string(rows) + "x" + std::to_string(hidden) +
                          " E=" + std::to_string(num_experts) + " k=" + std::to_string(k) +
                          (renorm ? " renorm" : "");
  report_exact(tag + " ids", mism);
  report(tag + " weights", err, 1e-5);
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

// Reference for experts' rows: y = x * w[e]^T (fp32), and with swiglu act = silu(gate) * up.
std::vector<float> grouped_ref(const std::vector<float>& xf, const std::vector<float>& wf,
                               const std::vector<int>& off, int n, int k, bool swiglu) {
  const int num_experts = int(off.size()) - 1, total = off.back();
  std::vector<float> ref(size_t(total) * n);
  for (int e = 0; e < num_experts; ++e) {
    const int m = off[e + 1] - off[e];
    if (m)
      eep::ops::matmul_nt(xf.data() + size_t(off[e]) * k, wf.data() + size_t(e) * n * k,
                          ref.data() + size_t(off[e]) * n, m, k, n);
  }
  if (!swiglu) return ref;
  const int inter = n / 2;
  std::vector<float> act(size_t(total) * inter);
  for (int r = 0; r < total; ++r)
    eep::ops::silu_mul(ref.data() + size_t(r) * n, ref.data() + size_t(r) * n + inter,
                       act.data() + size_t(r) * inter, inter);
  return act;
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
  const auto ref = grouped_ref(xf, wf, off, n, k, false);
  report(std::string("grouped_gemm ") + name + " E=" + std::to_string(num_experts) + " rows=" +
             std::to_string(total) + " n=" + std::to_string(n) + " k=" + std::to_string(k),
         rel_err(to_float(y.download()), ref), 1e-2);
}

// ---- grouped GEMM, offsets on the device (grouped_gemm_device, grouped_gemm_swiglu_device) --
// Rows [total, max_rows) of out (cols wide) must still hold the 0xff poison.
long poisoned_tail_mismatches(const DeviceBuffer<bf16>& out, int total, int cols) {
  const auto h = out.download();
  long bad = 0;
  for (size_t i = size_t(total) * cols; i < h.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, &h[i], 2);
    bad += bits != 0xffff;
  }
  return bad;
}

// Expert weights [E][n][k] (scale 0.05), drawn once per shape and run and shared by the cases
// of that shape: drawing 400M values per case would dominate the test's time.
struct GgdWeights {
  explicit GgdWeights(size_t n) : d(n) {}
  std::vector<float> f;
  DeviceBuffer<bf16> d;
};
const GgdWeights& ggd_weights(int num_experts, int n, int k) {
  static std::map<std::tuple<int, int, int>, std::unique_ptr<GgdWeights>> cache;
  auto& slot = cache[{num_experts, n, k}];
  if (!slot) {
    slot = std::make_unique<GgdWeights>(size_t(num_experts) * n * k);
    slot->d.upload(random_bf16(g_rng, slot->d.size(), 0.05f, slot->f));
  }
  return *slot;
}

// off: host offsets (uploaded to the device); max_rows >= off.back() sizes the call and y.
// Runs the automatic tile shape and then every shape forced (one reference for all); reports
// the worst error and names the shapes that fail.
void test_grouped_gemm_device(const std::vector<int>& off, int max_rows, int n, int k,
                              bool swiglu, const std::string& what) {
  const int num_experts = int(off.size()) - 1, total = off.back();
  const int out_cols = swiglu ? n / 2 : n;
  std::vector<float> xf;
  // x has max_rows rows (the contract): rows past the total are read by some shapes but must not
  // change the result.
  auto xh = random_bf16(g_rng, size_t(max_rows) * k, 1.0f, xf);
  const auto& wts = ggd_weights(num_experts, n, k);
  const auto& wf = wts.f;
  const auto& w = wts.d;
  DeviceBuffer<bf16> x(xh.size()), y(size_t(max_rows) * out_cols);
  DeviceBuffer<int32_t> doff(off.size());
  x.upload(xh);
  doff.upload(std::vector<int32_t>(off.begin(), off.end()));
  const auto ref = grouped_ref(xf, wf, off, n, k, swiglu);
  double worst = 0.0;
  long tail_bad = 0;
  std::string failed;
  for (int shape = -1; shape < K::grouped_gemm_device_shapes(); ++shape) {
    K::grouped_gemm_device_force_shape(shape);
    y.poison();
    if (swiglu)
      K::grouped_gemm_swiglu_device(x.get(), w.get(), y.get(), doff.get(), num_experts, max_rows,
                                    n / 2, k, 0);
    else
      K::grouped_gemm_device(x.get(), w.get(), y.get(), doff.get(), num_experts, max_rows, n, k,
                             0);
    sync();
    auto out = to_float(y.download());
    out.resize(ref.size());
    const double err = rel_err(out, ref);
    const long bad = max_rows > total ? poisoned_tail_mismatches(y, total, out_cols) : 0;
    tail_bad += bad;
    if (!(std::isfinite(err) && err <= 1e-2) || bad) {
      failed += std::string(" ") + (shape < 0 ? "auto" : K::grouped_gemm_device_shape_name(shape)) +
                "=" + std::to_string(err) + (bad ? "(tail written)" : "");
      worst = NAN;
    } else if (std::isfinite(worst)) {
      worst = std::max(worst, err);
    }
  }
  K::grouped_gemm_device_force_shape(-1);
  int empty = 0;
  for (int e = 0; e < num_experts; ++e) empty += off[e + 1] == off[e];
  const std::string tag = std::string(swiglu ? "ggd_swiglu " : "ggd ") + what + " E=" +
                          std::to_string(num_experts) + " rows=" + std::to_string(total) + "/" +
                          std::to_string(max_rows) + " n=" + std::to_string(n) + " k=" +
                          std::to_string(k) + " empty=" + std::to_string(empty);
  if (!failed.empty()) std::printf("     failing shapes:%s\n", failed.c_str());
  report(tag + " (all shapes)", worst, 1e-2);
  if (max_rows > total) report_exact(tag + " rows past the total untouched", tail_bad);
}

std::vector<int> counts_to_offsets(const std::vector<int>& counts) {
  std::vector<int> off(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + counts[e];
  return off;
}

// CUDA-graph capture: one call captured (global capture mode: any host sync or allocation in
// the launcher would fail the capture), then new offsets (another routing with the same
// max_rows) and new x written on the device, the graph replayed, and the result checked.
void test_grouped_gemm_device_graph(int num_experts, int max_rows, int n, int k, bool swiglu) {
  const int out_cols = swiglu ? n / 2 : n;
  std::vector<float> xf, wf;
  auto wh = random_bf16(g_rng, size_t(num_experts) * n * k, 0.05f, wf);
  DeviceBuffer<bf16> x(size_t(max_rows) * k), w(wh.size()), y(size_t(max_rows) * out_cols);
  DeviceBuffer<int32_t> doff(num_experts + 1);
  w.upload(wh);
  auto off = random_offsets(num_experts, max_rows, true);
  doff.upload(std::vector<int32_t>(off.begin(), off.end()));
  x.upload(random_bf16(g_rng, x.size(), 1.0f, xf));
  cudaStream_t s;
  TEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto call = [&] {
    if (swiglu)
      K::grouped_gemm_swiglu_device(x.get(), w.get(), y.get(), doff.get(), num_experts, max_rows,
                                    n / 2, k, s);
    else
      K::grouped_gemm_device(x.get(), w.get(), y.get(), doff.get(), num_experts, max_rows, n, k, s);
  };
  call();  // one uncaptured call: the one-time per-shape setup
  TEST_CUDA(cudaStreamSynchronize(s));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  TEST_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  call();
  TEST_CUDA(cudaStreamEndCapture(s, &graph));
  TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  double worst = 0.0;
  for (int round = 0; round < 3; ++round) {
    // New routing: fewer rows than max_rows, other experts empty; new activations.
    const int total = round == 2 ? 1 : max_rows - 1 - round * (max_rows / 3);
    off = random_offsets(num_experts, total, round != 1);
    doff.upload(std::vector<int32_t>(off.begin(), off.end()));
    x.upload(random_bf16(g_rng, x.size(), 1.0f, xf));
    y.poison();
    TEST_CUDA(cudaGraphLaunch(exec, s));
    TEST_CUDA(cudaStreamSynchronize(s));
    const auto ref = grouped_ref(xf, wf, off, n, k, swiglu);
    auto out = to_float(y.download());
    out.resize(ref.size());
    const double err = rel_err(out, ref);
    worst = std::isfinite(err) && std::isfinite(worst) ? std::max(worst, err) : NAN;
    if (poisoned_tail_mismatches(y, total, out_cols)) worst = NAN;
  }
  TEST_CUDA(cudaGraphExecDestroy(exec));
  TEST_CUDA(cudaGraphDestroy(graph));
  TEST_CUDA(cudaStreamDestroy(s));
  report(std::string(swiglu ? "ggd_swiglu" : "ggd") + " graph replay x3 E=" +
             std::to_string(num_experts) + " max_rows=" + std::to_string(max_rows) + " n=" +
             std::to_string(n) + " k=" + std::to_string(k),
         worst, 1e-2);
}

// quick: the small cases only (for a compute-sanitizer pass).
void test_grouped_gemm_device_all(bool quick) {
  // Every shape's persistent grid: some CTAs resident, whole clusters for the multicast shape
  // (printed: a grid much below the SM count makes a persistent kernel slow).
  {
    long bad = 0;
    std::string grids;
    for (int shape = 0; shape < K::grouped_gemm_device_shapes(); ++shape) {
      const int ctas = K::grouped_gemm_device_resident_ctas(shape);
      const std::string name = K::grouped_gemm_device_shape_name(shape);
      grids += " " + name + "=" + std::to_string(ctas);
      bad += ctas <= 0 || (name.find("_mc_") != std::string::npos && ctas % 2 != 0);
    }
    std::printf("     resident CTAs:%s\n", grids.c_str());
    report_exact("ggd resident CTAs of every shape (clusters whole)", bad);
  }
  // Decode shapes (Qwen3-30B-A3B): 1 token, 8 tokens, 256 tokens of top-8 over 128 experts.
  test_grouped_gemm_device(random_offsets(128, 8, true), 8, 1536, 2048, true, "1tok");
  test_grouped_gemm_device(random_offsets(128, 8, true), 8, 2048, 768, false, "1tok");
  if (!quick) {
    test_grouped_gemm_device(random_offsets(128, 8, true), 8, 1536, 2048, false, "1tok");
    for (bool sw : {false, true}) {
      test_grouped_gemm_device(random_offsets(128, 64, true), 64, 1536, 2048, sw, "8tok");
      test_grouped_gemm_device(random_offsets(128, 2048, true), 2048, 1536, 2048, sw, "256tok");
    }
    test_grouped_gemm_device(random_offsets(128, 2048, true), 2048, 2048, 768, false, "256tok");
  }
  // One row in total; max_rows far larger than the total (rows past it stay untouched).
  test_grouped_gemm_device(counts_to_offsets({0, 0, 0, 1, 0, 0, 0, 0}), 1, 2048, 768, false, "1row");
  test_grouped_gemm_device(counts_to_offsets({0, 0, 0, 1, 0, 0, 0, 0}), 1, 1536, 2048, true, "1row");
  test_grouped_gemm_device(random_offsets(16, 100, true), 3000, 384, 512, false, "max_rows>total");
  test_grouped_gemm_device(random_offsets(16, 100, true), 3000, 384, 512, true, "max_rows>total");
  // Prefill shapes: experts with hundreds of rows, one expert with all rows.
  if (!quick) {
    test_grouped_gemm_device(random_offsets(16, 1500, true), 1500, 1536, 2048, true, "prefill");
    test_grouped_gemm_device(random_offsets(16, 1500, true), 1500, 2048, 768, false, "prefill");
    test_grouped_gemm_device(random_offsets(6, 3000, true), 3000, 1536, 512, false, "prefill");
    test_grouped_gemm_device(random_offsets(6, 3000, true), 3000, 1536, 512, true, "prefill");
  }
  test_grouped_gemm_device(counts_to_offsets({0, 0, 700, 0}), 700, 256, 768, false, "one expert");
  test_grouped_gemm_device(counts_to_offsets({0, 45, 0, 0}), 45, 256, 768, true, "one expert");
  // Many experts: every CTA builds the table of m-tiles over several rounds of its threads.
  test_grouped_gemm_device(random_offsets(1000, 600, true), 600, 64, 64, false, "many experts");
  test_grouped_gemm_device(random_offsets(1000, 60, true), 64, 128, 64, true, "many experts");
  // Odd small sizes (n, k multiples of 8 but of no tile).
  test_grouped_gemm_device(random_offsets(5, 37, true), 37, 72, 40, false, "odd");
  test_grouped_gemm_device(random_offsets(5, 3, false), 3, 200, 24, false, "odd");
  test_grouped_gemm_device(random_offsets(3, 500, false), 500, 200, 136, false, "odd");
  test_grouped_gemm_device(random_offsets(3, 1000, true), 1000, 8, 1000, false, "odd");
  test_grouped_gemm_device(random_offsets(7, 50, true), 50, 128, 200, true, "odd");
  // Graph capture and replay with other offsets (automatic shapes: decode mma.sync tiles at
  // max_rows 8, with and without SwiGLU, and 1024, TMA-fed wgmma 192 and 128 at 1200 over 8
  // and 16 experts; the plain GEMM's prefill tile at 1200 over 8).
  test_grouped_gemm_device_graph(128, 1024, 512, 256, false);
  test_grouped_gemm_device_graph(8, 1200, 512, 256, false);
  test_grouped_gemm_device_graph(128, 1024, 512, 256, true);
  test_grouped_gemm_device_graph(128, 8, 2048, 768, false);
  test_grouped_gemm_device_graph(128, 8, 1536, 2048, true);
  test_grouped_gemm_device_graph(8, 1200, 512, 256, true);
  test_grouped_gemm_device_graph(16, 1200, 512, 256, false);
  // Preconditions.
  long missed = 0;
  auto expect_throw = [&](auto f) {
    try {
      f();
      ++missed;
    } catch (const K::CudaError&) {
    }
  };
  DeviceBuffer<bf16> b(4096);
  DeviceBuffer<int32_t> o(3);
  expect_throw([&] { K::grouped_gemm_device(b.get(), b.get(), b.get(), o.get(), 2, 4, 16, 12, 0); });
  expect_throw([&] { K::grouped_gemm_device(b.get(), b.get(), b.get(), o.get(), 2, 4, 12, 16, 0); });
  expect_throw([&] { K::grouped_gemm_device(b.get(), b.get(), b.get(), o.get(), 0, 4, 16, 16, 0); });
  expect_throw([&] { K::grouped_gemm_device(b.get() + 1, b.get(), b.get(), o.get(), 2, 4, 16, 16, 0); });
  expect_throw([&] { K::grouped_gemm_swiglu_device(b.get(), b.get(), b.get(), o.get(), 2, 4, 96, 16, 0); });
  report_exact("ggd invalid arguments throw CudaError", missed);
}

// ---- paged attention ------------------------------------------------------------------------
eep::ops::KvLayerView kv_view(float* k, float* v, int block_size, int kv_heads, int head_dim) {
  eep::ops::KvLayerView view;
  view.k = k;
  view.v = v;
  view.block_size = block_size;
  view.num_kv_heads = kv_heads;
  view.head_dim = head_dim;
  return view;
}

// One layer's paged KV cache of random bf16 values for num_seqs sequences of up to max_len
// positions: every sequence gets distinct blocks, in shuffled order (plus 3 spare blocks).
struct PagedKv {
  PagedKv(int num_seqs, int max_len, int block_size, int kv_heads, int head_dim)
      : max_blocks((max_len + block_size - 1) / block_size),
        num_blocks(num_seqs * max_blocks + 3),
        elems(size_t(num_blocks) * block_size * kv_heads * head_dim),
        tables(size_t(num_seqs) * max_blocks),
        k(elems),
        v(elems),
        dt(tables.size()) {
    std::vector<int32_t> perm(num_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), g_rng);
    std::copy_n(perm.begin(), tables.size(), tables.begin());
    k.upload(random_bf16(g_rng, elems, 1.0f, kf));
    v.upload(random_bf16(g_rng, elems, 1.0f, vf));
    dt.upload(tables);
    view = kv_view(kf.data(), vf.data(), block_size, kv_heads, head_dim);
  }
  const int32_t* table(int seq) const { return tables.data() + size_t(seq) * max_blocks; }

  int max_blocks, num_blocks;
  size_t elems;
  std::vector<int32_t> tables;
  std::vector<float> kf, vf;  // fp32 copies for the CPU reference
  DeviceBuffer<bf16> k, v;
  DeviceBuffer<int32_t> dt;
  eep::ops::KvLayerView view;
};

std::string attn_tag(const char* op, int num_seqs, int heads, int kv_heads, int head_dim,
                     int block_size) {
  return std::string(op) + " seqs=" + std::to_string(num_seqs) + " h=" + std::to_string(heads) +
         "/" + std::to_string(kv_heads) + " d=" + std::to_string(head_dim) + " bs=" +
         std::to_string(block_size);
}

void test_paged_attention(int num_seqs, int heads, int kv_heads, int head_dim, int block_size,
                          int max_len, K::DecodeAttention impl = K::DecodeAttention::kPerHead,
                          bool split = false) {
  std::uniform_int_distribution<int> lend(1, max_len);
  std::vector<int32_t> lens(num_seqs);
  for (auto& l : lens) l = lend(g_rng);
  lens[0] = 1;  // a sequence with only its current token
  PagedKv kv(num_seqs, max_len, block_size, kv_heads, head_dim);
  std::vector<float> qf;
  auto qh = random_bf16(g_rng, size_t(num_seqs) * heads * head_dim, 1.0f, qf);
  DeviceBuffer<bf16> q(qh.size()), out(qh.size());
  DeviceBuffer<int32_t> dl(lens.size());
  q.upload(qh);
  dl.upload(lens);
  out.poison();
  // With split: the workspace the call asks for (poisoned), so the tensor-core kernel splits
  // sequences over warps and merges them.
  const size_t ws_bytes = split ? K::paged_decode_attention_workspace_bytes(
                                      num_seqs, heads, kv_heads, head_dim, block_size, kv.max_blocks)
                                : 0;
  if (split && ws_bytes == 0) {
    std::printf("FAIL paged_attention mma split: no workspace asked for seqs=%d\n", num_seqs);
    ++g_failures;
  }
  DeviceBuffer<float> ws(std::max<size_t>(ws_bytes / sizeof(float), 1));
  ws.poison();
  K::paged_decode_attention(q.get(), kv.k.get(), kv.v.get(), kv.dt.get(), dl.get(), out.get(),
                            num_seqs, heads, kv_heads, head_dim, block_size, kv.max_blocks, 0,
                            impl, ws_bytes ? ws.get() : nullptr);
  sync();
  // One V buffer, and kAuto wherever the tensor-core kernel applies (one or two V buffers by the
  // batch): the same sums in the same order as kMma.
  const bool mma_applies = (head_dim == 64 || head_dim == 128) && heads / kv_heads <= 16;
  if (impl == K::DecodeAttention::kMmaOneV || (impl == K::DecodeAttention::kAuto && mma_applies)) {
    DeviceBuffer<bf16> out2(qh.size());
    out2.poison();
    K::paged_decode_attention(q.get(), kv.k.get(), kv.v.get(), kv.dt.get(), dl.get(), out2.get(),
                              num_seqs, heads, kv_heads, head_dim, block_size, kv.max_blocks, 0,
                              K::DecodeAttention::kMma, ws_bytes ? ws.get() : nullptr);
    sync();
    const auto a = out.download(), b = out2.download();
    long mism = 0;
    for (size_t i = 0; i < a.size(); ++i) mism += std::memcmp(&a[i], &b[i], sizeof(bf16)) != 0;
    report_exact(std::string(impl == K::DecodeAttention::kAuto ? "paged_attention auto"
                                                                : "paged_attention mma one-V") +
                     " = mma seqs=" + std::to_string(num_seqs) +
                     " hd=" + std::to_string(head_dim) + (split ? " split" : ""),
                 mism);
  }
  std::vector<float> ref(qf.size());
  for (int s = 0; s < num_seqs; ++s) {
    const int32_t pos = lens[s] - 1;
    eep::ops::paged_attention(kv.view, kv.table(s), &pos, 1,
                              qf.data() + size_t(s) * heads * head_dim, heads,
                              ref.data() + size_t(s) * heads * head_dim);
  }
  report(attn_tag(impl == K::DecodeAttention::kPerKvHead ? "paged_attention per-kv-head"
                  : impl == K::DecodeAttention::kMma && split ? "paged_attention mma split"
                  : impl == K::DecodeAttention::kMma          ? "paged_attention mma"
                  : impl == K::DecodeAttention::kMmaOneV && split ? "paged_attention mma one-V split"
                  : impl == K::DecodeAttention::kMmaOneV      ? "paged_attention mma one-V"
                                                           : "paged_attention",
                  num_seqs, heads, kv_heads, head_dim, block_size) + " len<=" +
             std::to_string(max_len),
         rel_err(to_float(out.download()), ref), 1e-2);
}

// ---- paged prefill attention ----------------------------------------------------------------
// Chunks of mixed lengths at mixed starts (first chunks at 0, later chunks at start > 0,
// one-row chunks like decode, an empty chunk); q rows packed in sequence order with one spare
// row at the end that belongs to no sequence and must stay untouched.
void test_prefill_attention(int num_seqs, int heads, int kv_heads, int head_dim, int block_size,
                            int max_ctx, int max_chunk, bool single_rows) {
  std::vector<int32_t> nrows(num_seqs), starts(num_seqs), qstarts(num_seqs);
  std::uniform_int_distribution<int> nd(1, single_rows ? 1 : max_chunk);
  int total = 0, max_rows = 0;
  for (int s = 0; s < num_seqs; ++s) {
    nrows[s] = nd(g_rng);
    if (s == 2 && !single_rows) nrows[s] = 1;                      // decode-like row
    if (s == 3 && !single_rows && num_seqs > 4) nrows[s] = 0;      // nothing to do
    std::uniform_int_distribution<int> sd(0, max_ctx - nrows[s]);
    starts[s] = s == 0 ? 0 : sd(g_rng);                            // s == 0: first chunk
    qstarts[s] = total;
    total += nrows[s];
    max_rows = std::max(max_rows, nrows[s]);
  }
  PagedKv kv(num_seqs, max_ctx, block_size, kv_heads, head_dim);
  const size_t row_elems = size_t(heads) * head_dim;
  std::vector<float> qf;
  auto qh = random_bf16(g_rng, (total + 1) * row_elems, 1.0f, qf);  // + the spare row
  DeviceBuffer<bf16> q(qh.size()), out(qh.size());
  DeviceBuffer<int32_t> dn(num_seqs), ds(num_seqs), dq(num_seqs);
  q.upload(qh);
  dn.upload(nrows);
  ds.upload(starts);
  dq.upload(qstarts);
  out.poison();
  K::paged_prefill_attention(q.get(), kv.k.get(), kv.v.get(), kv.dt.get(), dq.get(), dn.get(),
                             ds.get(), out.get(), num_seqs, max_rows, heads, kv_heads, head_dim,
                             block_size, kv.max_blocks, 0);
  sync();
  std::vector<float> ref(size_t(total) * row_elems);
  for (int s = 0; s < num_seqs; ++s) {
    if (nrows[s] == 0) continue;
    std::vector<int32_t> pos(nrows[s]);
    std::iota(pos.begin(), pos.end(), starts[s]);
    eep::ops::paged_attention(kv.view, kv.table(s), pos.data(), nrows[s],
                              qf.data() + size_t(qstarts[s]) * row_elems, heads,
                              ref.data() + size_t(qstarts[s]) * row_elems);
  }
  auto got = to_float(out.download());
  long spare_written = 0;  // the spare row is still poison (NaN)
  for (size_t i = size_t(total) * row_elems; i < got.size(); ++i) spare_written += !std::isnan(got[i]);
  got.resize(ref.size());
  const std::string tag = attn_tag("prefill_attention", num_seqs, heads, kv_heads, head_dim,
                                   block_size) +
                          " ctx<=" + std::to_string(max_ctx) +
                          (single_rows ? " 1-row" : " rows<=" + std::to_string(max_chunk));
  report(tag, rel_err(got, ref), 1e-2);
  report_exact(tag + " spare row untouched", spare_written);
}

// ---- glue kernels (kernels/residual.cu) -----------------------------------------------------
// Copies and conversions must be bit-exact (tolerance 0); the norm is within bf16 rounding.
std::vector<float> random_f32(size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(g_rng);
  return v;
}

std::vector<int32_t> random_ids(size_t n, int hi) {
  std::uniform_int_distribution<int> d(0, hi - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}

void test_embedding_gather(int rows, int dim, int vocab) {
  std::vector<float> tf;
  auto th = random_bf16(g_rng, size_t(vocab) * dim, 1.0f, tf);
  auto ids = random_ids(rows, vocab);
  if (rows > 2) {
    ids[0] = vocab - 1;
    ids[1] = -1;     // out of range: zero row
    ids[2] = vocab;  // out of range: zero row
  }
  DeviceBuffer<bf16> table(th.size());
  DeviceBuffer<int32_t> di(rows);
  DeviceBuffer<float> out(size_t(rows) * dim);
  table.upload(th);
  di.upload(ids);
  out.poison();
  K::embedding_gather(table.get(), di.get(), rows, dim, vocab, out.get(), 0);
  sync();
  std::vector<float> ref(size_t(rows) * dim, 0.0f);
  for (int r = 0; r < rows; ++r)
    if (ids[r] >= 0 && ids[r] < vocab)
      std::copy_n(tf.begin() + size_t(ids[r]) * dim, dim, ref.begin() + size_t(r) * dim);
  report("embedding_gather " + std::to_string(rows) + "x" + std::to_string(dim) + " vocab=" +
             std::to_string(vocab),
         rel_err(out.download(), ref), 0.0);
}

void test_add_rmsnorm(int rows, int dim, bool with_delta) {
  std::vector<float> df, wf;
  auto res = random_f32(size_t(rows) * dim, 1.5f);
  auto dh = random_bf16(g_rng, size_t(rows) * dim, 1.0f, df);
  auto wh = random_bf16(g_rng, dim, 1.0f, wf);
  DeviceBuffer<float> dres(res.size());
  DeviceBuffer<bf16> delta(dh.size()), w(wh.size()), out(dh.size());
  dres.upload(res);
  delta.upload(dh);
  w.upload(wh);
  out.poison();
  K::add_rmsnorm(dres.get(), with_delta ? delta.get() : nullptr, w.get(), out.get(), rows, dim,
                 1e-6f, 0);
  sync();
  std::vector<float> res_ref = res, ref(res.size());
  if (with_delta)
    for (size_t i = 0; i < res.size(); ++i) res_ref[i] += df[i];
  eep::ops::rmsnorm(res_ref.data(), wf.data(), ref.data(), rows, dim, 1e-6f);
  const std::string tag = "add_rmsnorm " + std::to_string(rows) + "x" + std::to_string(dim) +
                          (with_delta ? "" : " delta=null");
  report(tag + " residual", rel_err(dres.download(), res_ref), 0.0);
  report(tag + " out", rel_err(to_float(out.download()), ref), 1e-2);
}

void test_gather_rows(int rows, int dim, int src_rows) {
  std::vector<float> sf;
  auto sh = random_bf16(g_rng, size_t(src_rows) * dim, 1.0f, sf);
  auto s32 = random_f32(size_t(src_rows) * dim, 1.0f);
  auto idx = random_ids(rows, src_rows);  // repeats allowed
  DeviceBuffer<bf16> src(sh.size()), dst(size_t(rows) * dim);
  DeviceBuffer<float> src32(s32.size()), dst32(size_t(rows) * dim);
  DeviceBuffer<int32_t> di(rows);
  src.upload(sh);
  src32.upload(s32);
  di.upload(idx);
  dst.poison();
  dst32.poison();
  K::gather_rows(src.get(), di.get(), rows, dim, dst.get(), 0);
  K::gather_rows_f32(src32.get(), di.get(), rows, dim, dst32.get(), 0);
  sync();
  std::vector<float> ref(size_t(rows) * dim), ref32(size_t(rows) * dim);
  for (int r = 0; r < rows; ++r) {
    std::copy_n(sf.begin() + size_t(idx[r]) * dim, dim, ref.begin() + size_t(r) * dim);
    std::copy_n(s32.begin() + size_t(idx[r]) * dim, dim, ref32.begin() + size_t(r) * dim);
  }
  const std::string tag = std::to_string(rows) + "x" + std::to_string(dim);
  report("gather_rows " + tag, rel_err(to_float(dst.download()), ref), 0.0);
  report("gather_rows_f32 " + tag, rel_err(dst32.download(), ref32), 0.0);
}

void test_conversions(long n) {
  auto f = random_f32(n, 100.0f);
  std::vector<float> bf_ref(n);
  std::vector<bf16> bh(n);
  for (long i = 0; i < n; ++i) {
    bh[i] = __float2bfloat16(f[i]);  // host conversion: round to nearest even, as the device
    bf_ref[i] = __bfloat162float(bh[i]);
  }
  DeviceBuffer<float> df(n), back(n);
  DeviceBuffer<bf16> db(n);
  df.upload(f);
  db.poison();
  back.poison();
  K::f32_to_bf16(df.get(), db.get(), n, 0);
  K::bf16_to_f32(db.get(), back.get(), n, 0);
  sync();
  report("f32_to_bf16 n=" + std::to_string(n), rel_err(to_float(db.download()), bf_ref), 0.0);
  report("bf16_to_f32 n=" + std::to_string(n), rel_err(back.download(), bf_ref), 0.0);
}

void test_kv_write(int rows, int kv_heads, int head_dim, int block_size) {
  const int kv_dim = kv_heads * head_dim;
  const int max_blocks = (rows + 5 + block_size - 1) / block_size + 1;
  const int num_blocks = max_blocks + 2;
  std::vector<int32_t> table(max_blocks), perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), g_rng);
  std::copy_n(perm.begin(), max_blocks, table.begin());
  // Positions start..start+rows-1 of one sequence, in shuffled order.
  std::vector<int32_t> pos(rows), slots(rows);
  std::iota(pos.begin(), pos.end(), 5);
  std::shuffle(pos.begin(), pos.end(), g_rng);
  for (int r = 0; r < rows; ++r)
    slots[r] = table[pos[r] / block_size] * block_size + pos[r] % block_size;
  const size_t cache = size_t(num_blocks) * block_size * kv_dim;
  std::vector<float> kf, vf, kcf, vcf;
  auto kh = random_bf16(g_rng, size_t(rows) * kv_dim, 1.0f, kf);
  auto vh = random_bf16(g_rng, size_t(rows) * kv_dim, 1.0f, vf);
  auto kch = random_bf16(g_rng, cache, 1.0f, kcf);  // the rest of the cache must stay as it is
  auto vch = random_bf16(g_rng, cache, 1.0f, vcf);
  DeviceBuffer<bf16> k(kh.size()), v(vh.size()), kc(cache), vc(cache);
  DeviceBuffer<int32_t> ds(rows);
  k.upload(kh);
  v.upload(vh);
  kc.upload(kch);
  vc.upload(vch);
  ds.upload(slots);
  K::kv_write(k.get(), v.get(), ds.get(), rows, kv_dim, kc.get(), vc.get(), 0);
  sync();
  eep::ops::kv_write(kv_view(kcf.data(), vcf.data(), block_size, kv_heads, head_dim),
                     table.data(), pos.data(), rows, kf.data(), vf.data());
  const std::string tag = "kv_write rows=" + std::to_string(rows) + " kv_dim=" +
                          std::to_string(kv_heads) + "x" + std::to_string(head_dim) + " bs=" +
                          std::to_string(block_size);
  report(tag + " k", rel_err(to_float(kc.download()), kcf), 0.0);
  report(tag + " v", rel_err(to_float(vc.download()), vcf), 0.0);
}

// The host sampler's greedy rule (libeep/src/sched/sampling.cc): NaN counts as -inf, strict
// comparison so ties (-0 and +0 too) go to the lower id.
int32_t argmax_ref(const float* x, int vocab) {
  auto clean = [](float v) { return std::isnan(v) ? -INFINITY : v; };
  int32_t best = 0;
  for (int i = 1; i < vocab; ++i)
    if (clean(x[i]) > clean(x[best])) best = i;
  return best;
}

void test_argmax(int rows, int vocab) {
  auto logits = random_f32(size_t(rows) * vocab, 3.0f);
  std::uniform_int_distribution<int> cd(0, vocab - 1);
  auto row = [&](int r) { return logits.data() + size_t(r) * vocab; };
  if (rows > 0) std::fill_n(row(0), vocab, 0.25f);  // all tied: id 0
  if (rows > 1 && vocab > 1) {                     // two maxima far apart: the lower one
    int a = cd(g_rng), b = cd(g_rng);
    if (a == b) b = (a + vocab / 2 + 1) % vocab;
    if (a == b) b = (a + 1) % vocab;
    row(1)[a] = row(1)[b] = 50.0f;
  }
  if (rows > 2) row(2)[vocab - 1] = 50.0f;  // maximum at the last id
  if (rows > 3 && vocab > 1) {              // ties in the same lane of different warps
    const int a = std::min(vocab - 2, 5), b = std::min(vocab - 1, a + 32 * 3 + 1024 * 2);
    row(3)[a] = row(3)[b] = 50.0f;
  }
  if (rows > 4) {  // many tied maxima spread over the row: the first one
    for (int c = vocab - 1; c >= 0; c -= 997) row(4)[c] = 60.0f;
  }
  if (rows > 5) {  // NaN never wins, wherever it is
    for (int c = 0; c < vocab; c += 3) row(5)[c] = NAN;
  }
  if (rows > 6) std::fill_n(row(6), vocab, -INFINITY);  // nothing above -inf: id 0
  if (rows > 7 && vocab > 2) {  // -0 then +0 as the maximum: a tie, the lower id (-0) wins
    std::fill_n(row(7), vocab, -1.0f);
    row(7)[vocab / 2] = -0.0f;
    row(7)[vocab - 1] = 0.0f;
  }
  if (rows > 8 && vocab > 4097) {  // tied maxima in neighbouring blocks (4096 logits each)
    row(8)[4095] = row(8)[4096] = 70.0f;
    row(8)[vocab - 1] = 70.0f;
  }
  DeviceBuffer<float> dl(logits.size());
  DeviceBuffer<int32_t> ids(rows);
  const size_t ws_bytes = K::argmax_rows_workspace_bytes(rows, vocab);
  DeviceBuffer<char> ws(std::max<size_t>(ws_bytes, 1));
  dl.upload(logits);
  ws.poison();
  long mism = 0;
  for (int round = 0; round < 2; ++round) {  // nothing carried between calls
    ids.poison();
    K::argmax_rows(dl.get(), rows, vocab, ids.get(), ws.get(), ws_bytes, 0);
    sync();
    const auto got = ids.download();
    for (int r = 0; r < rows; ++r) mism += got[r] != argmax_ref(row(r), vocab);
  }
  report_exact("argmax_rows " + std::to_string(rows) + "x" + std::to_string(vocab), mism);
}

// ---- sampling -------------------------------------------------------------------------------
// The device sampler against the host's eep::sample_token (libeep/src/sched/sampling.cc,
// compiled into this binary) on the same fp32 logits: the same token, row for row. Rows cycle
// through greedy, temperatures, top-k (1, small, vocab-1, >= vocab), top-p (tiny .. 1) and
// random seeds/positions; some rows hold exact ties, NaN, -inf and +inf logits.
void test_sample_tokens(int rows, int vocab, bool specials) {
  std::vector<float> logits(size_t(rows) * vocab);
  std::normal_distribution<float> nd(0.0f, 2.5f);
  std::uniform_int_distribution<int> grid(-24, 24);
  std::uniform_int_distribution<uint64_t> seeds;
  std::uniform_int_distribution<int64_t> posd(0, 1 << 20);
  const double temps[] = {0.0, 1.0, 0.7, 1.5, 0.05, 5.0};
  const int top_ks[] = {0, 0, 50, 1, 20, vocab - 1, vocab + 5};
  const double top_ps[] = {1.0, 0.9, 0.5, 0.95, 1e-9, 1.0, 0.999};
  std::vector<K::SamplingRow> params(rows);
  std::vector<eep::SamplingParams> host(rows);
  for (int r = 0; r < rows; ++r) {
    float* x = logits.data() + size_t(r) * vocab;
    const bool tied = r % 5 == 3;  // logits on a grid of 1/4: many exact ties
    for (int c = 0; c < vocab; ++c) x[c] = tied ? float(grid(g_rng)) / 4.0f : nd(g_rng);
    auto& p = params[r];
    p.temperature = temps[r % 6];
    p.top_k = std::max(0, top_ks[(r / 2) % 7]);
    p.top_p = top_ps[(r / 3) % 7];
    p.seed = seeds(g_rng);
    p.position = posd(g_rng);
    if (specials && r < 12) {  // rows of special values, each under a sampling and a greedy setting
      p.temperature = r % 2 ? 0.0 : 0.8;
      const int kind = r / 2;
      if (kind == 0) std::fill_n(x, vocab, -INFINITY);                       // all -inf
      if (kind == 1) std::fill_n(x, vocab, std::nanf(""));                    // all NaN
      if (kind == 2) x[vocab / 3] = x[vocab / 2] = INFINITY;                  // two +inf
      if (kind == 3) for (int c = 0; c < vocab; c += 3) x[c] = std::nanf(""); // NaN sprinkled
      if (kind == 4) for (int c = 1; c < vocab; c += 2) x[c] = -INFINITY;     // -inf sprinkled
      if (kind == 5) std::fill_n(x, vocab, -0.0f), x[vocab - 1] = 0.0f;       // +-0 ties
    }
    host[r].temperature = p.temperature;
    host[r].top_k = p.top_k;
    host[r].top_p = p.top_p;
    host[r].seed = p.seed;
  }
  DeviceBuffer<float> dl(logits.size());
  DeviceBuffer<K::SamplingRow> dp(rows);
  DeviceBuffer<int32_t> ids(rows);
  const size_t ws_bytes = K::sample_tokens_workspace_bytes(rows, vocab);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  dl.upload(logits);
  dp.upload(params);
  ids.poison();
  K::sample_tokens(dl.get(), dp.get(), rows, vocab, ws.get(), ws_bytes, ids.get(), 0);
  sync();
  const auto got = ids.download();
  long mism = 0;
  for (int r = 0; r < rows; ++r) {
    const int32_t want =
        eep::sample_token(logits.data() + size_t(r) * vocab, vocab, host[r], params[r].position);
    if (got[r] != want) {
      ++mism;
      std::printf("  row %d: device %d host %d (t=%g k=%d p=%g)\n", r, got[r], want,
                  params[r].temperature, params[r].top_k, params[r].top_p);
    }
  }
  report_exact("sample_tokens " + std::to_string(rows) + "x" + std::to_string(vocab) +
                   (specials ? " +specials" : ""),
               mism);
}

// rows = 0 (n = 0): nothing is launched or written, nothing throws.
void test_glue_empty() {
  DeviceBuffer<float> f(16);
  DeviceBuffer<bf16> b(16);
  DeviceBuffer<int32_t> i(16);
  f.poison();
  b.poison();
  i.poison();
  K::embedding_gather(b.get(), i.get(), 0, 8, 2, f.get(), 0);
  K::add_rmsnorm(f.get(), b.get(), b.get(), b.get(), 0, 8, 1e-6f, 0);
  K::gather_rows(b.get(), i.get(), 0, 8, b.get(), 0);
  K::gather_rows_f32(f.get(), i.get(), 0, 8, f.get(), 0);
  K::f32_to_bf16(f.get(), b.get(), 0, 0);
  K::bf16_to_f32(b.get(), f.get(), 0, 0);
  K::kv_write(b.get(), b.get(), i.get(), 0, 8, b.get(), b.get(), 0);
  K::argmax_rows(f.get(), 0, 8, i.get(), nullptr, 0, 0);
  K::paged_prefill_attention(b.get(), b.get(), b.get(), i.get(), i.get(), i.get(), i.get(),
                             b.get(), 0, 4, 8, 2, 64, 16, 1, 0);
  sync();
  long touched = 0;
  for (float v : f.download()) touched += !std::isnan(v);
  for (bf16 v : b.download()) touched += !std::isnan(__bfloat162float(v));
  for (int32_t v : i.download()) touched += v != -1;
  report_exact("glue + prefill with rows=0 write nothing", touched);
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

  // The combine folded into the next residual norm: bitwise what unpermute + add_rmsnorm give.
  if (!K::add_combine_rmsnorm_supported(hidden)) return;
  std::vector<float> wf, res(size_t(tokens) * hidden);
  auto wh = random_bf16(g_rng, hidden, 1.0f, wf);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : res) v = nd(g_rng);
  DeviceBuffer<float> x_two(res.size()), x_one(res.size()), f_two(res.size()), f_one(res.size());
  DeviceBuffer<bf16> nw(hidden), h_two(res.size()), h_one(res.size());
  nw.upload(wh);
  x_two.upload(res);
  x_one.upload(res);
  K::add_rmsnorm(x_two.get(), out.get(), nw.get(), h_two.get(), f_two.get(), tokens, hidden, 1e-6f,
                 0);
  K::add_combine_rmsnorm(x_one.get(), K::MoeCombine{y.get(), drows.get(), dw.get(), k}, nw.get(),
                         h_one.get(), f_one.get(), tokens, hidden, 1e-6f, 0);
  sync();
  long diff = 0;
  {
    const auto a = x_two.download(), b = x_one.download(), fa = f_two.download(),
               fb = f_one.download();
    const auto ha = h_two.download(), hb = h_one.download();
    diff += std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0;
    diff += std::memcmp(fa.data(), fb.data(), fa.size() * sizeof(float)) != 0;
    diff += std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(bf16)) != 0;
  }
  report_exact("add_combine_rmsnorm = unpermute + add_rmsnorm " + tag, diff);
}

// ---- whole MoE block ------------------------------------------------------------------------
// router -> permute -> grouped gate_up -> silu_mul_fused -> grouped down -> unpermute, against
// the CPU router and swiglu_expert per (token, expert).
// device_gemm: grouped_gemm_swiglu_device + grouped_gemm_device on the device offsets that
// permute_tokens wrote (no host copy), instead of cuBLAS + silu_mul_fused.
void test_moe_block(K::GroupedGemm& gg, int tokens, int num_experts, int k, int hidden, int inter,
                    bool device_gemm = false) {
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
  if (device_gemm) {
    K::grouped_gemm_swiglu_device(perm.get(), wgu.get(), act.get(), doff.get(), num_experts,
                                  pairs, inter, hidden, 0);
    K::grouped_gemm_device(act.get(), wdown.get(), ye.get(), doff.get(), num_experts, pairs,
                           hidden, inter, 0);
  } else {
    const auto off = doff.download();  // the host needs the group sizes for cuBLAS
    gg.run(K::GroupedGemmImpl::kCublasGrouped, perm.get(), wgu.get(), gu.get(), off.data(),
           num_experts, 2 * inter, hidden, 0);
    K::silu_mul_fused(gu.get(), act.get(), pairs, inter, 0);
    gg.run(K::GroupedGemmImpl::kCublasGrouped, act.get(), wdown.get(), ye.get(), off.data(),
           num_experts, hidden, inter, 0);
  }
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
  report(std::string(device_gemm ? "moe_block(device gemm) T=" : "moe_block T=") + std::to_string(tokens) + " E=" + std::to_string(num_experts) + " k=" +
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
    K::paged_prefill_attention(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                               nullptr, 1, 1, 32, 4, 96, 16, 1, 0);
    ++missed;
  } catch (const K::CudaError&) {
  }
  try {
    K::paged_prefill_attention(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                               nullptr, 1, 1, 30, 4, 128, 16, 1, 0);
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

#include "kernels_test_fused.cuh"

}  // namespace

int main() {
  skip_without_device();
  cudaDeviceProp prop{};
  TEST_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs), seed %u (EEP_TEST_SEED)\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, g_seed);
  try {
    // EEP_TEST_ONLY=ggd: only the device-offset grouped GEMM checks (with EEP_TEST_QUICK set,
    // only their small cases: for compute-sanitizer).
    const char* only = std::getenv("EEP_TEST_ONLY");
    if (only && std::string(only) == "ggd") {
      test_grouped_gemm_device_all(std::getenv("EEP_TEST_QUICK") != nullptr);
      if (std::getenv("EEP_TEST_QUICK") == nullptr) {
        K::GroupedGemm gg(128);
        test_moe_block(gg, 64, 8, 2, 256, 128, true);
      }
      std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "ALL PASSED", g_failures);
      return g_failures ? 1 : 0;
    }
    test_rmsnorm(37, 2048, "rows 37x2048");
    test_rmsnorm(37 * 32, 128, "per-head 1184x128");
    test_rmsnorm(5, 1001, "odd 5x1001");
    test_rope(19, 32, 128, 1e6f);
    test_rope(7, 4, 64, 1e4f);
    test_router(300, 128, 8, true);
    test_router(300, 128, 8, false);
    test_router(17, 60, 4, true);
    // 8-row tiles (33, 77, 40, 70, 45, 5 rows), 16-row (256; 200 x 4096: several staged chunks;
    // 300 with 1024 experts: one warp group over k), 32-row (1000; 3000 with a short hidden: one
    // split, no cluster); hidden 100 (a split cut by hidden), 1001 (scalar copies), k = 32; the
    // 1024-expert cases take router_topk_warp, the others the block's ranking.
    test_router_tiled(33, 2048, 128, 8, true);
    test_router_tiled(256, 2048, 128, 8, true);
    test_router_tiled(1000, 2048, 128, 8, false);
    test_router_tiled(77, 100, 60, 4, true);
    test_router_tiled(40, 4096, 256, 8, true);
    test_router_tiled(300, 1024, 1024, 8, true);
    test_router_tiled(70, 2048, 1024, 32, false);
    test_router_tiled(200, 4096, 128, 8, false);
    test_router_tiled(3000, 128, 64, 6, false);
    test_router_tiled(45, 1001, 128, 8, true);
    test_router_tiled(5, 2048, 128, 8, true);
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
    test_grouped_gemm_device_all(false);
    test_paged_attention(6, 32, 4, 128, 16, 700);
    test_paged_attention(3, 8, 8, 64, 32, 100);
    test_paged_attention(2, 16, 2, 256, 16, 300);
    // The per-KV-head kernel: Qwen3's 32/4 heads, groups of 1, 2 and 8, tiles cut by lengths.
    for (auto impl : {K::DecodeAttention::kPerKvHead, K::DecodeAttention::kAuto}) {
      test_paged_attention(70, 32, 4, 128, 16, 700, impl);
      test_paged_attention(3, 8, 8, 64, 32, 100, impl);
      test_paged_attention(5, 16, 2, 256, 16, 300, impl);
      test_paged_attention(9, 4, 2, 128, 16, 33, impl);
    }
    // The tensor-core kernel: groups of 1, 2, 8 and 16, head_dim 64 and 128, lengths that cut
    // tiles, a one-position sequence (lens[0] = 1), block sizes 16 and 32.
    test_paged_attention(70, 32, 4, 128, 16, 700, K::DecodeAttention::kMma);
    test_paged_attention(3, 8, 8, 64, 32, 100, K::DecodeAttention::kMma);
    test_paged_attention(9, 4, 2, 128, 16, 33, K::DecodeAttention::kMma);
    test_paged_attention(4, 32, 2, 64, 16, 200, K::DecodeAttention::kMma);
    test_paged_attention(2, 16, 2, 128, 32, 1000, K::DecodeAttention::kMma);
    // Split over warps (few sequences, long ones), empty trailing ranges included.
    // One V buffer (kMmaOneV): single-tile and many-tile sequences, head_dim 64 and 128, split.
    test_paged_attention(70, 32, 4, 128, 16, 700, K::DecodeAttention::kMmaOneV);
    test_paged_attention(3, 8, 8, 64, 32, 100, K::DecodeAttention::kMmaOneV);
    test_paged_attention(9, 4, 2, 128, 16, 33, K::DecodeAttention::kMmaOneV);
    test_paged_attention(20, 32, 4, 128, 16, 700, K::DecodeAttention::kMmaOneV, true);
    // kAuto past one wave of the two-buffer kernel (head_dim 128: 1200 pairs, where an H100 or
    // H200 holds 792; head_dim 64: 4800, more than 32 blocks an SM), so the one-V kernel:
    // checked bitwise against kMma and against the CPU.
    test_paged_attention(300, 32, 4, 128, 16, 300, K::DecodeAttention::kAuto);
    test_paged_attention(600, 8, 8, 64, 16, 100, K::DecodeAttention::kAuto);
    test_paged_attention(20, 32, 4, 128, 16, 700, K::DecodeAttention::kMma, true);
    test_paged_attention(3, 8, 8, 64, 32, 300, K::DecodeAttention::kMma, true);
    test_paged_attention(2, 32, 4, 128, 16, 2000, K::DecodeAttention::kMma, true);
    test_paged_attention(4, 32, 2, 64, 16, 200, K::DecodeAttention::kMma, true);
    test_paged_attention(2, 16, 2, 128, 32, 1000, K::DecodeAttention::kMma, true);
    test_prefill_attention(6, 32, 4, 128, 16, 700, 150, false);
    test_prefill_attention(5, 8, 2, 64, 16, 300, 100, false);
    test_prefill_attention(7, 32, 4, 128, 16, 500, 1, true);
    test_prefill_attention(5, 28, 4, 128, 16, 400, 90, false);
    test_prefill_attention(3, 16, 2, 256, 16, 260, 70, false);
    test_prefill_attention(3, 8, 8, 64, 32, 200, 130, false);
    test_permute(300, 8, 2048, 128);
    test_permute(1000, 8, 40, 128);
    test_permute(50, 2, 256, 1000);
    // The inline copy from registers (decode): one token, four (4 chunks a thread), a short row.
    test_permute(1, 8, 2048, 128);
    test_permute(4, 8, 2048, 128);
    test_permute(3, 8, 40, 128);
    test_moe_block(gg, 64, 8, 2, 256, 128);
    test_moe_block(gg, 64, 8, 2, 256, 128, true);
    test_moe_block(gg, 100, 128, 8, 2048, 768, true);
    test_moe_block(gg, 1, 128, 8, 2048, 768, true);  // decode sizes (the mma.sync tiles)
    test_moe_block(gg, 8, 128, 8, 2048, 768, true);
    test_embedding_gather(37, 2048, 1000);
    test_embedding_gather(5, 1001, 77);
    test_add_rmsnorm(37, 2048, true);
    test_add_rmsnorm(37, 2048, false);
    test_add_rmsnorm(3, 1001, true);
    test_add_rmsnorm(1, 7, true);
    test_gather_rows(300, 2048, 500);
    test_gather_rows(13, 33, 4);
    test_conversions(3000001);
    test_conversions(7);
    test_kv_write(40, 4, 128, 16);
    test_kv_write(9, 3, 36, 16);
    test_kv_write(5, 5, 7, 4);
    test_attention_prep(37, 32, 4, 128, 1e6f);
    test_attention_prep(1, 8, 2, 64, 1e4f);
    test_attention_prep(5, 4, 4, 256, 1e6f);
    test_attention_prep(9, 4, 2, 16, 1e4f);
    test_attention_prep(3, 8, 8, 64, 1e4f);  // a block of v heads only (no rotation table)
    // Up to 128 experts a row's blocks are one cluster (8 blocks at 128, 4 at 60, 3 at 40);
    // from 129 on, blocks of 8 experts and arrival counters.
    test_router_fused(1, 2048, 128, 8, true);
    test_router_fused(32, 2048, 128, 8, true);
    test_router_fused(7, 100, 60, 4, false);
    test_router_fused(4, 512, 129, 8, true);
    test_router_fused(3, 256, 1000, 8, true);  // 1000 experts: 125 blocks a row
    test_router_fused(2, 98, 40, 4, true);     // hidden % 4 != 0: scalar loads
    test_route_local(1, 128, 128);
    test_route_local(2048, 128, 144);
    test_route_local(300, 16, 24);
    test_route_permute(1, 8, 128, 128, 2048);     // decode: one launch
    test_route_permute(8, 8, 128, 144, 2048);     // the copy kernel (4 tokens are the most inline)
    test_route_permute(256, 8, 128, 136, 2048);   // plan, then the copy kernel
    test_route_permute(33, 4, 16, 24, 40);
    // 1000 experts over 1024 slots: the plan's counts fill its 48 KiB of shared memory (no
    // bucket cache).
    test_route_permute(64, 8, 1000, 1024, 64);
    test_skinny_gemm(1, 4096, 2048, false);
    test_skinny_gemm(8, 512, 2048, false);
    test_skinny_gemm(3, 2047, 4096, true);
    test_skinny_gemm(5, 1, 24, false);
    // 2-8 rows: x staged once, a warp per 4 columns; 20000 columns loop the grid's warps, an x
    // of 8 x 8192 does not fit the stage and takes the block-per-group kernel.
    test_skinny_gemm(8, 20000, 2048, true);
    test_skinny_gemm(2, 5120, 2048, false);
    test_skinny_gemm(8, 40, 8192, false);
    // One row, the stacked q|k|v shape: more column groups than resident blocks, so the
    // persistent blocks loop; 7 rows of a width that ends in a short group.
    test_skinny_gemm(1, 5120, 2048, false);
    test_skinny_gemm(7, 100, 256, false);
    test_argmax(9, 151936);
    test_argmax(300, 4097);  // 2 blocks a row, the second holding one logit
    test_argmax(6, 1000);
    test_argmax(5, 33);
    test_argmax(2, 1);
    test_sample_tokens(48, 151936, true);
    test_sample_tokens(500, 1000, true);
    test_sample_tokens(300, 50, false);
    test_glue_empty();
    test_errors();
  } catch (const K::CudaError& e) {
    std::printf("FAIL CUDA error: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "ALL PASSED", g_failures);
  return g_failures ? 1 : 0;
}
