// Checks of the fused decode-path kernels (included into kernels_test.cu's anonymous namespace,
// after its helpers): attention_prep against rmsnorm + rope + kv_write of the CPU reference,
// router_fused against matmul_nt + router_topk, route_local against the host's replica rule and
// its error record.

// ---- attention_prep -------------------------------------------------------------------------
void test_attention_prep(int rows, int heads, int kv_heads, int head_dim, float theta) {
  const int q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;
  const int entries = rows + 7;  // cache entries; each row writes a distinct shuffled one
  std::vector<float> qf, kf, vf, qwf, kwf, kcf, vcf;
  auto qh = random_bf16(g_rng, size_t(rows) * q_dim, 1.5f, qf);
  auto kh = random_bf16(g_rng, size_t(rows) * kv_dim, 1.5f, kf);
  auto vh = random_bf16(g_rng, size_t(rows) * kv_dim, 1.0f, vf);
  auto qwh = random_bf16(g_rng, head_dim, 1.0f, qwf);
  auto kwh = random_bf16(g_rng, head_dim, 1.0f, kwf);
  auto kch = random_bf16(g_rng, size_t(entries) * kv_dim, 1.0f, kcf);  // the rest stays
  auto vch = random_bf16(g_rng, size_t(entries) * kv_dim, 1.0f, vcf);
  std::vector<int32_t> pos(rows), slots(entries);
  std::uniform_int_distribution<int> pd(0, 40000);
  for (auto& p : pos) p = pd(g_rng);
  pos[0] = 0;
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), g_rng);
  slots.resize(rows);
  // The kernel reads the stacked projection's rows: [q | k | v].
  const int qkv_dim = q_dim + 2 * kv_dim;
  std::vector<bf16> qkvh(size_t(rows) * qkv_dim);
  for (int r = 0; r < rows; ++r) {
    std::copy_n(&qh[size_t(r) * q_dim], q_dim, &qkvh[size_t(r) * qkv_dim]);
    std::copy_n(&kh[size_t(r) * kv_dim], kv_dim, &qkvh[size_t(r) * qkv_dim + q_dim]);
    std::copy_n(&vh[size_t(r) * kv_dim], kv_dim, &qkvh[size_t(r) * qkv_dim + q_dim + kv_dim]);
  }
  DeviceBuffer<bf16> qkv(qkvh.size()), q(qh.size()), qw(head_dim), kw(head_dim), kc(kch.size()),
      vc(vch.size());
  DeviceBuffer<int32_t> dpos(rows), dslots(rows);
  qkv.upload(qkvh);
  q.poison();
  qw.upload(qwh);
  kw.upload(kwh);
  kc.upload(kch);
  vc.upload(vch);
  dpos.upload(pos);
  dslots.upload(slots);
  K::attention_prep(qkv.get(), q.get(), qw.get(), kw.get(), dpos.get(), dslots.get(), rows, heads,
                    kv_heads, head_dim, 1e-6f, theta, kc.get(), vc.get(), 0);
  sync();
  // Reference: per-head rmsnorm, rounded to bf16 (what the separate norm kernel stores), rope.
  auto norm_rope = [&](std::vector<float>& x, const std::vector<float>& w, int nh) {
    std::vector<float> n(x.size());
    eep::ops::rmsnorm(x.data(), w.data(), n.data(), rows * nh, head_dim, 1e-6f);
    for (auto& e : n) e = __bfloat162float(__float2bfloat16(e));
    eep::ops::rope(n.data(), pos.data(), rows, nh, head_dim, theta);
    x = n;
  };
  norm_rope(qf, qwf, heads);
  norm_rope(kf, kwf, kv_heads);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < kv_dim; ++c) {
      kcf[size_t(slots[r]) * kv_dim + c] = kf[size_t(r) * kv_dim + c];
      vcf[size_t(slots[r]) * kv_dim + c] = vf[size_t(r) * kv_dim + c];
    }
  const std::string tag = "attention_prep " + std::to_string(rows) + "x" + std::to_string(heads) +
                          "/" + std::to_string(kv_heads) + "x" + std::to_string(head_dim);
  report(tag + " q", rel_err(to_float(q.download()), qf), 1e-2);
  // The input is left as it was.
  report(tag + " qkv unchanged", rel_err(to_float(qkv.download()), to_float(qkvh)), 0.0);
  report(tag + " k cache", rel_err(to_float(kc.download()), kcf), 1e-2);
  report(tag + " v cache", rel_err(to_float(vc.download()), vcf), 0.0);
}

// ---- router_fused -----------------------------------------------------------------------------
void test_router_fused(int rows, int hidden, int num_experts, int k, bool renorm) {
  // Inputs on grids of 1/8 (|x| <= 2, |w| <= 1): every product is a multiple of 1/64 and every
  // partial sum is exact in fp32, so GPU and CPU logits are equal whatever the summation order
  // and the top-k ids must match exactly.
  std::uniform_int_distribution<int> xd(-16, 16), wd(-8, 8);
  std::vector<float> x(size_t(rows) * hidden), w(size_t(num_experts) * hidden);
  for (auto& e : x) e = float(xd(g_rng)) / 8.0f;
  for (auto& e : w) e = float(wd(g_rng)) / 8.0f;
  DeviceBuffer<float> dx(x.size()), dw(w.size()), dwt(size_t(rows) * k),
      dl(size_t(rows) * num_experts);
  DeviceBuffer<int32_t> di(size_t(rows) * k);
  DeviceBuffer<unsigned> dc(rows);
  dx.upload(x);
  dw.upload(w);
  TEST_CUDA(cudaMemset(dc.get(), 0, rows * sizeof(unsigned)));
  // Twice: the counters must be back at zero after a launch for the next one to work.
  for (int pass = 0; pass < 2; ++pass) {
    dwt.poison();
    di.poison();
    K::router_fused(dx.get(), dw.get(), rows, hidden, num_experts, k, renorm, dl.get(), dc.get(),
                    di.get(), dwt.get(), 0);
  }
  sync();
  std::vector<float> logits(size_t(rows) * num_experts), wt(size_t(rows) * k);
  std::vector<int32_t> ids(size_t(rows) * k);
  eep::ops::matmul_nt(x.data(), w.data(), logits.data(), rows, hidden, num_experts);
  eep::ops::router_topk(logits.data(), rows, num_experts, k, renorm, ids.data(), wt.data());
  auto gi = di.download();
  long mism = 0;
  for (size_t i = 0; i < ids.size(); ++i) mism += gi[i] != ids[i];
  const std::string tag = "router_fused " + std::to_string(rows) + "x" + std::to_string(hidden) +
                          " E=" + std::to_string(num_experts) + " k=" + std::to_string(k);
  report_exact(tag + " ids", mism);
  report(tag + " weights", rel_err(dwt.download(), wt), 1e-5);
}

// ---- route_local ------------------------------------------------------------------------------
// A random placement of `slots` slots on one rank (every expert once, then replicas of random
// experts) as route_local's table.
struct RouteTable {
  std::vector<int32_t> slot_expert, table;
  std::vector<std::vector<int32_t>> reps;  // slots of each expert, in replica order
  int max_rep = 1;
};

RouteTable make_route_table(int num_experts, int slots) {
  RouteTable t;
  t.slot_expert.resize(slots);
  t.reps.resize(num_experts);
  std::uniform_int_distribution<int> ed(0, num_experts - 1);
  for (int s = 0; s < slots; ++s) t.slot_expert[s] = s < num_experts ? s : ed(g_rng);
  std::shuffle(t.slot_expert.begin(), t.slot_expert.end(), g_rng);
  for (int s = 0; s < slots; ++s) t.reps[t.slot_expert[s]].push_back(s);
  for (auto& r : t.reps) t.max_rep = std::max<int>(t.max_rep, int(r.size()));
  t.table.assign(size_t(num_experts) * (1 + t.max_rep) + slots, -1);
  for (int e = 0; e < num_experts; ++e) {
    t.table[e] = int32_t(t.reps[e].size());
    for (size_t r = 0; r < t.reps[e].size(); ++r)
      t.table[num_experts + size_t(e) * t.max_rep + r] = t.reps[e][r];
  }
  std::copy(t.slot_expert.begin(), t.slot_expert.end(),
            t.table.begin() + num_experts * (1 + t.max_rep));
  return t;
}

void test_route_local(int items, int num_experts, int slots) {
  RouteTable rt = make_route_table(num_experts, slots);
  auto& slot_expert = rt.slot_expert;
  auto& reps = rt.reps;
  auto& table = rt.table;
  const int max_rep = rt.max_rep;
  std::uniform_int_distribution<int> ed(0, num_experts - 1);
  std::vector<int32_t> ids(items);
  for (auto& e : ids) e = ed(g_rng);
  std::vector<int32_t> want(items);
  std::vector<unsigned long long> want_load(slots, 0);
  for (int i = 0; i < items; ++i) {
    want[i] = reps[ids[i]][size_t(i) % reps[ids[i]].size()];
    ++want_load[want[i]];
  }
  DeviceBuffer<int32_t> dids(items), droute(table.size()), dlocal(items), derr(5);
  DeviceBuffer<unsigned long long> dload(slots);
  dids.upload(ids);
  droute.upload(table);
  dlocal.poison();
  TEST_CUDA(cudaMemset(dload.get(), 0, slots * sizeof(unsigned long long)));
  TEST_CUDA(cudaMemset(derr.get(), 0, 5 * sizeof(int32_t)));
  K::route_local(dids.get(), items, droute.get(), num_experts, max_rep, 0, slots, 3, dlocal.get(),
                 dload.get(), derr.get(), 0);
  sync();
  auto got = dlocal.download();
  auto load = dload.download();
  auto err = derr.download();
  long mism = err[0] != 0;
  for (int i = 0; i < items; ++i) mism += got[i] != want[i];
  for (int s = 0; s < slots; ++s) mism += load[s] != want_load[s];
  const std::string tag = "route_local items=" + std::to_string(items) + " E=" +
                          std::to_string(num_experts) + " slots=" + std::to_string(slots);
  report_exact(tag, mism);

  // A slot that holds another expert than the table routes to: its items get -1 and the
  // error record names the layer, the expert, the slot and what it holds.
  const int bad_slot = want[0];
  const int other = (slot_expert[bad_slot] + 1) % num_experts;
  table[num_experts * (1 + max_rep) + bad_slot] = other;
  droute.upload(table);
  dlocal.poison();
  TEST_CUDA(cudaMemset(derr.get(), 0, 5 * sizeof(int32_t)));
  K::route_local(dids.get(), items, droute.get(), num_experts, max_rep, 0, slots, 3, dlocal.get(),
                 dload.get(), derr.get(), 0);
  sync();
  got = dlocal.download();
  err = derr.download();
  mism = !(err[0] == 1 && err[1] == 3 && err[3] >= 0 && err[3] < slots &&
           table[num_experts * (1 + max_rep) + err[3]] == err[4] && err[4] != err[2]);
  for (int i = 0; i < items; ++i) mism += got[i] != (want[i] == bad_slot ? -1 : want[i]);
  report_exact(tag + " wrong slot refused", mism);
}

// ---- route_permute_tokens ---------------------------------------------------------------------
// The fused routing + permutation against route_local followed by permute_tokens: the same
// offsets, rows, permuted buffer and load, bit for bit; a wrong slot is refused the same way.
void test_route_permute(int tokens, int k, int num_experts, int slots, int hidden) {
  RouteTable rt = make_route_table(num_experts, slots);
  const int items = tokens * k;
  std::uniform_int_distribution<int> ed(0, num_experts - 1);
  std::vector<int32_t> ids(items);
  for (auto& e : ids) e = ed(g_rng);
  std::vector<float> xf;
  auto xh = random_bf16(g_rng, size_t(tokens) * hidden, 1.0f, xf);
  DeviceBuffer<int32_t> dids(items), droute(rt.table.size()), dlocal(items), derr(5), derr2(5);
  DeviceBuffer<int32_t> off_a(slots + 1), off_b(slots + 1), rows_a(items), rows_b(items);
  DeviceBuffer<unsigned long long> load_a(slots), load_b(slots);
  DeviceBuffer<bf16> x(xh.size()), perm_a(size_t(items) * hidden), perm_b(size_t(items) * hidden);
  dids.upload(ids);
  x.upload(xh);
  const std::string tag = "route_permute_tokens T=" + std::to_string(tokens) + " k=" +
                          std::to_string(k) + " slots=" + std::to_string(slots) + " h=" +
                          std::to_string(hidden);
  for (int wrong = 0; wrong < 2; ++wrong) {
    if (wrong) rt.table[num_experts * (1 + rt.max_rep) + rt.reps[ids[0]][0]] = -1;
    droute.upload(rt.table);
    for (auto* b : {&off_a, &off_b, &rows_a, &rows_b}) b->poison();
    perm_a.poison();
    perm_b.poison();
    for (auto* e : {&derr, &derr2}) TEST_CUDA(cudaMemset(e->get(), 0, 5 * sizeof(int32_t)));
    // The counters start from earlier steps' counts: the kernel adds to what it read (before
    // its PDL wait) rather than storing this step's alone.
    std::vector<unsigned long long> load0(slots);
    for (int i = 0; i < slots; ++i) load0[i] = 1000ull * (i + 1) + unsigned(wrong);
    for (auto* l : {&load_a, &load_b}) l->upload(load0);
    K::route_local(dids.get(), items, droute.get(), num_experts, rt.max_rep, 0, slots, 5,
                   dlocal.get(), load_a.get(), derr.get(), 0);
    K::permute_tokens(x.get(), dlocal.get(), tokens, k, hidden, slots, off_a.get(), rows_a.get(),
                      perm_a.get(), 0);
    K::route_permute_tokens(x.get(), dids.get(), tokens, k, hidden, droute.get(), num_experts,
                            rt.max_rep, 0, slots, 5, load_b.get(), derr2.get(), off_b.get(),
                            rows_b.get(), perm_b.get(), 0);
    sync();
    long mism = off_a.download() != off_b.download();
    const auto ra = rows_a.download(), rb = rows_b.download();
    mism += ra != rb;
    mism += load_a.download() != load_b.download();
    const auto pa = perm_a.download(), pb = perm_b.download();
    for (int s = 0; s < items; ++s)  // rows nobody wrote stay poisoned in both
      if (ra[s] >= 0)
        mism += std::memcmp(&pa[size_t(ra[s]) * hidden], &pb[size_t(ra[s]) * hidden],
                            sizeof(bf16) * hidden) != 0;
    const auto ea = derr.download(), eb = derr2.download();
    mism += ea[0] != eb[0] || ea[1] != eb[1];
    if (wrong) mism += !(eb[0] == 1 && eb[1] == 5 && eb[4] == -1 && eb[2] >= 0);
    report_exact(tag + (wrong ? " wrong slot refused" : ""), mism);
  }
}

// ---- skinny_gemm --------------------------------------------------------------------------------
void test_skinny_gemm(int rows, int n, int k, bool f32_out) {
  std::vector<float> xf, wf;
  auto xh = random_bf16(g_rng, size_t(rows) * k, 1.0f, xf);
  auto wh = random_bf16(g_rng, size_t(n) * k, 0.05f, wf);
  DeviceBuffer<bf16> x(xh.size()), w(wh.size()), yb(size_t(rows) * n);
  DeviceBuffer<float> yf(size_t(rows) * n);
  x.upload(xh);
  w.upload(wh);
  yb.poison();
  yf.poison();
  K::skinny_gemm(x.get(), w.get(), f32_out ? (void*)yf.get() : (void*)yb.get(), f32_out, rows, n,
                 k, 0);
  sync();
  std::vector<float> ref(size_t(rows) * n);
  eep::ops::matmul_nt(xf.data(), wf.data(), ref.data(), rows, k, n);
  const std::string tag = "skinny_gemm " + std::to_string(rows) + "x" + std::to_string(n) + "x" +
                          std::to_string(k) + (f32_out ? " f32" : " bf16");
  report(tag, rel_err(f32_out ? yf.download() : to_float(yb.download()), ref),
         f32_out ? 1e-5 : 1e-2);
}

