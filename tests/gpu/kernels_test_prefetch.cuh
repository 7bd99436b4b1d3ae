// Checks of EEP_CUDA_L2_PREFETCH's modes (included into kernels_test.cu's anonymous namespace,
// after its helpers). A prefetch only moves lines into L2, so every mode must give results
// bitwise equal to mode 0; what these catch is a prefetch that faults (an address past a
// buffer), a kernel whose arguments the new parameter shifted, or a launcher that drops the
// mode. Whether the modes are faster is eep-bench's question (docs/cuda.md, "Session 11").

long bit_differences(const std::vector<bf16>& a, const std::vector<bf16>& b) {
  if (a.size() != b.size()) return long(std::max(a.size(), b.size()));
  long diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], sizeof(bf16)) != 0;
  return diff;
}

// skinny_gemm at one row with kL2PrefetchSkinny: n columns in groups of 8 over the persistent
// blocks. Matrices up to half the L2 with more groups than blocks request later groups; fewer
// groups than blocks, or a matrix over the budget, request none (and must not change either).
void test_prefetch_skinny(int n, int k) {
  std::vector<float> xf, wf;
  auto xh = random_bf16(g_rng, size_t(k), 1.0f, xf);
  auto wh = random_bf16(g_rng, size_t(n) * k, 0.05f, wf);
  DeviceBuffer<bf16> x(xh.size()), w(wh.size()), y{size_t(n)};
  x.upload(xh);
  w.upload(wh);
  std::vector<bf16> base;
  long diff = 0;
  for (int mode : {0, K::kL2PrefetchSkinny, K::kL2PrefetchAll}) {
    K::set_l2_prefetch_mode(mode);
    y.poison();
    K::skinny_gemm(x.get(), w.get(), y.get(), false, 1, n, k, 0);
    sync();
    if (mode == 0)
      base = y.download();
    else
      diff += bit_differences(y.download(), base);
  }
  std::vector<float> ref(static_cast<size_t>(n));
  eep::ops::matmul_nt(xf.data(), wf.data(), ref.data(), 1, k, n);
  const std::string tag = "skinny_gemm 1x" + std::to_string(n) + "x" + std::to_string(k);
  report(tag + " mode 0", rel_err(to_float(base), ref), 1e-2);
  report_exact(tag + " with L2 prefetch: bitwise as mode 0", diff);
}

// grouped_gemm_swiglu_device with next weights at decode sizes: `total` rows over 128 experts,
// next weights of next_bytes a slot (not a multiple of 128: the last line of a slot is cut).
// With 8 rows the next weights fit half the L2 and are requested; with 512 rows (~100 experts
// of 3 MB) they do not, and the kernel must skip them.
void test_prefetch_swiglu_next(int total, size_t next_bytes) {
  const int num_experts = 128, inter = 768, k = 2048, n = 2 * inter;
  const auto off = random_offsets(num_experts, total, true);
  std::vector<float> xf;
  auto xh = random_bf16(g_rng, size_t(total) * k, 1.0f, xf);
  const auto& wts = ggd_weights(num_experts, n, k);
  DeviceBuffer<bf16> x(xh.size()), act(size_t(total) * inter);
  DeviceBuffer<int32_t> doff(off.size());
  // The next weights end exactly where the last slot's do: a line past them would be past the
  // allocation (cudaMalloc rounds up, so this cannot fault, but compute-sanitizer would say).
  DeviceBuffer<unsigned char> next(size_t(num_experts) * next_bytes);
  x.upload(xh);
  doff.upload(std::vector<int32_t>(off.begin(), off.end()));
  const K::NextExpertWeights nw{next.get(), next_bytes};
  std::vector<bf16> base;
  long diff = 0;
  for (int mode : {0, K::kL2PrefetchNext, K::kL2PrefetchNext | K::kL2PrefetchEvictLast,
                   K::kL2PrefetchAll}) {
    K::set_l2_prefetch_mode(mode);
    act.poison();
    K::grouped_gemm_swiglu_device(x.get(), wts.d.get(), act.get(), doff.get(), num_experts, total,
                                  inter, k, 0, nw);
    sync();
    if (mode == 0)
      base = act.download();
    else
      diff += bit_differences(act.download(), base);
  }
  const auto ref = grouped_ref(xf, wts.f, off, n, k, true);
  const std::string tag = "ggd_swiglu next-weight prefetch rows=" + std::to_string(total) +
                          " next=" + std::to_string(next_bytes) + " B/slot";
  report(tag + " mode 0", rel_err(to_float(base), ref), 1e-2);
  report_exact(tag + ": bitwise as mode 0", diff);
}

void test_l2_prefetch() {
  const int saved = K::l2_prefetch_mode();
  test_prefetch_skinny(5120, 2048);   // the stacked q|k|v shape, 21 MB: requested
  test_prefetch_skinny(2048, 4096);   // o, 16.8 MB: requested
  test_prefetch_skinny(20000, 2048);  // 82 MB: over half the L2, not requested
  test_prefetch_skinny(40, 2048);     // 5 groups: no block has a later one
  test_prefetch_swiglu_next(8, size_t(2048) * 768 * 2 + 80);
  test_prefetch_swiglu_next(512, size_t(2048) * 768 * 2);
  long refused = 0;
  for (int bad : {-1, K::kL2PrefetchAll + 1}) {
    try {
      K::set_l2_prefetch_mode(bad);
    } catch (const K::CudaError&) {
      ++refused;
    }
  }
  report_exact("set_l2_prefetch_mode refuses -1 and 8", 2 - refused);
  K::set_l2_prefetch_mode(saved);
}
