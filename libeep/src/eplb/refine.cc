// Swap refinement (step 4 of the default algorithm, docs/eplb.md): while exchanging one replica
// of the heaviest GPU with a lighter replica of another GPU lowers the pair's maximum without
// creating a duplicate, do the best such exchange.
//
// Speed: a swap only exchanges two replicas between GPUs, so the multiset of replica weights
// never changes. The replicas are sorted by weight once; for a replica x of the heaviest GPU
// (load la) the partners y that can win lie in one window of that order,
//   w(x) - (best - lightest) < w(y) < w(x) - (la - best),
// (la - d < best and load(y's GPU) + d < best, d = w(x) - w(y)), which narrows as the best swap
// found so far improves. Only the two swapped replicas change GPU, so the bookkeeping per swap is
// O(1) plus two leaf-to-root updates of the trees that give the heaviest and the lightest GPU.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "eplb/internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EEP_EPLB_AVX512 1
// GCC 12's AVX-512 header warns about its own _mm512_undefined_pd() (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#define EEP_EPLB_AVX512 0
#endif

namespace eep::eplb {

namespace {

struct RefineScratch {
  std::vector<int> rcnt, stamp;
  std::vector<double> load, rw, pw;  // per GPU; per slot; per expert
  // Replicas ("items") sorted by weight, heaviest first: weight, expert, GPU; and the item in
  // each slot / the slot of each item.
  std::vector<double> iw, il;
  std::vector<int> ie, igpu, islot, slot_item, slot_gpu;
  std::vector<int> lower, hi_tree;
  std::vector<uint64_t> hv;
  std::vector<uint16_t> key16;
  std::vector<int> tmp;
  std::vector<uint64_t> mask;
  std::vector<double> window, mins;  // the vector search's pair maxima and their minima
};

// Items past the last (weight -inf) that end every partner scan; the vector search reads up to
// two blocks of 8 past a window's start without a bounds check.
constexpr int kPad = 16;

RefineScratch& scratch() {
  thread_local RefineScratch s;
  return s;
}

bool holds(const int* gpu_slots, int k, int e) {
  for (int i = 0; i < k; ++i)
    if (gpu_slots[i] == e) return true;
  return false;
}

// Whether a GPU of the range holds two replicas of one expert: one pass over the slots, marking
// each expert with the last GPU seen holding it.
bool any_duplicate(const int* p, int num_experts, int n, int k, RefineScratch& s) {
  s.stamp.assign(num_experts, -1);
  bool dup = false;
  for (int g = 0; g < n; ++g)
    for (int i = g * k; i < (g + 1) * k; ++i) {
      dup |= s.stamp[p[i]] == g;
      s.stamp[p[i]] = g;
    }
  return dup;
}

// Repairs duplicates: swaps a duplicate with a replica of another GPU of the range that creates
// none, choosing the closest load. Returns whether a duplicate is left (usually there is none to
// begin with).
bool repair_duplicates(int* p, double* rw, double* load, int num_experts, int n, int k,
                       RefineScratch& s) {
  if (!any_duplicate(p, num_experts, n, k, s)) return false;
  for (int g = 0; g < n; ++g) {
    for (int i = 0; i < k; ++i) {
      int si = g * k + i, e = p[si];
      int copies = 0;
      for (int j = 0; j < k; ++j) copies += p[g * k + j] == e;
      if (copies < 2) continue;
      int best = -1;
      double best_d = 0;
      for (int h = 0; h < n; ++h) {
        if (h == g || holds(p + h * k, k, e)) continue;
        for (int j = 0; j < k; ++j) {
          int t = h * k + j;
          if (holds(p + g * k, k, p[t])) continue;
          double d = std::abs(rw[si] - rw[t]);
          if (best < 0 || d < best_d) best = t, best_d = d;
        }
      }
      if (best < 0) continue;
      double d = rw[si] - rw[best];
      load[g] -= d, load[best / k] += d;
      std::swap(p[si], p[best]);
      std::swap(rw[si], rw[best]);
    }
  }
  return any_duplicate(p, num_experts, n, k, s);
}

// Sorts idx[0..m) by w[idx] descending; equal weights keep their order. Linear on nearly sorted
// input.
void insertion_sort_desc(const double* w, int m, int* idx) {
  for (int t = 1; t < m; ++t)
    for (int u = t; u > 0 && w[idx[u]] > w[idx[u - 1]]; --u) std::swap(idx[u], idx[u - 1]);
}

// idx[0..m) = indices of w by weight descending, equal weights in index order. Two LSD radix
// passes on the top 16 bits of the float weight (sign, exponent, 7 mantissa bits: 1/128 apart),
// then insertion sort on the exact weights, which only has to fix neighbours within a bucket.
void sort_desc(const double* w, int m, int* idx, RefineScratch& s) {
  s.key16.resize(m);
  s.tmp.resize(m);
  uint16_t* key = s.key16.data();
  for (int i = 0; i < m; ++i) {
    float f = static_cast<float>(w[i]);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    key[i] = static_cast<uint16_t>(~(bits >> 16));  // non-negative: descending weight
  }
  int* a = idx;
  int* b = s.tmp.data();
  std::iota(a, a + m, 0);
  for (int shift = 0; shift < 16; shift += 8) {
    int count[257] = {};
    for (int i = 0; i < m; ++i) ++count[((key[i] >> shift) & 0xff) + 1];
    for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
    for (int i = 0; i < m; ++i) b[count[(key[a[i]] >> shift) & 0xff]++] = a[i];
    std::swap(a, b);
  }
  // Two passes: the result is back in idx (a == idx).
  insertion_sort_desc(w, m, idx);
}

// What the swap search reads: the replicas ("items") sorted by weight, heaviest first.
struct Items {
  const double* iw;         // weight; -inf on kPad items past the last
  const double* il;         // the load of the item's GPU
  const int* ie;            // expert
  const int* igpu;          // GPU
  const int* lower;         // the first item lighter than this one
  const int* slot_item;     // the item in each slot (GPU-major, k per GPU)
  const uint64_t* mask;     // which experts each GPU holds, `words` words per GPU
  int words, k, m;          // m: the items
  double* window;           // scratch of the vector search: k x (m + kPad)
  double* mins;             // scratch of the vector search: 8 lane-wise minima per x
  bool holds(int g, unsigned e) const { return (mask[g * words + e / 64] >> (e % 64)) & 1; }
};

struct Swap {
  int x = -1, y = -1;  // the heaviest GPU's item and its partner; -1: no swap helps
};

// The swap the refinement takes on heaviest GPU a (load la; lmin: the lightest GPU's load): an
// item x of a (in slot order) and a lighter item y of another GPU b whose exchange lowers the
// pair's maximum max(la - d, lb + d), d = w(x) - w(y), below la (by a relative kEps) without a
// duplicate. Which one, exactly (the vector search must take the same one):
//  - the first pair in scan order (x by slot, then y by weight descending) with maximum <= good
//    (no need for the best then);
//  - else the first pair in scan order with the smallest maximum.
// Scans each x's window of partners from its first lighter item, narrowing it as the best
// improves: w(x) - (best - lmin) < w(y) < w(x) - (la - best). Items above the window, and those
// of a itself (load la), fail nm < best on their own, so the loop has one rarely taken branch
// besides its end.
Swap find_swap_in_order(const Items& it, int a, double la, double lmin, double good) {
  double best = la - kEps * std::max(1.0, la);
  Swap sw;
  for (int i = 0; i < it.k && best > good; ++i) {
    int x = it.slot_item[a * it.k + i];
    double wx = it.iw[x];
    if (wx <= la - best) continue;  // no partner: d = w(x) - w(y) <= w(x)
    int ex = it.ie[x];
    double end = wx - (best - lmin);
    for (int t = it.lower[x];; ++t) {  // iw = -inf past the items ends it
      double wy = it.iw[t];
      if (wy <= end) break;
      double d = wx - wy;
      double nm = std::max(la - d, it.il[t] + d);
      if (nm >= best) continue;
      if (it.holds(it.igpu[t], ex) || it.holds(a, it.ie[t])) continue;
      best = nm, sw = {x, t};
      end = wx - (best - lmin);
      if (best <= good) break;  // good enough: no need for the best
    }
  }
  return sw;
}

#if EEP_EPLB_AVX512
#define EEP_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,bmi")))

// Items j..j+7 of a window (weights wy, their GPUs' loads ly) against x (weight wx, on the
// heaviest GPU, load la): the pairs' maxima, +inf for items at or below `end` (outside the
// window), to out[j..j+7] and into the lane-wise minimum. Returns whether all 8 were inside.
EEP_AVX512 inline __attribute__((always_inline)) bool pair_maxima(
    const double* wy_at, const double* ly_at, int j, __m512d wx, __m512d la, __m512d end,
    double* out, __m512d& vmin) {
  __m512d wy = _mm512_loadu_pd(wy_at + j), ly = _mm512_loadu_pd(ly_at + j);
  __mmask8 in = _mm512_cmp_pd_mask(wy, end, _CMP_GT_OQ);
  __m512d d = _mm512_sub_pd(wx, wy);
  __m512d nm = _mm512_mask_max_pd(_mm512_set1_pd(HUGE_VAL), in, _mm512_sub_pd(la, d),
                                  _mm512_add_pd(ly, d));
  _mm512_storeu_pd(out + j, nm);
  vmin = _mm512_min_pd(vmin, nm);
  return in == 0xff;
}

// find_swap_in_order with AVX-512: the same pair. The windows are short (~14 items per x at
// 320 slots / 64 GPUs), and the in-order scan spends most of its time on mispredicted branches
// (each improvement of the best, each window's end). Here each x's window, taken at its widest
// (best = la - kEps, before any improvement), is evaluated 8 items at a time without a branch
// per item: the pair maxima (+inf outside the window) are stored, with their lane-wise minimum
// per x. The smallest over the x's, first in scan order, is the in-order search's pair: items
// outside its narrowed windows could not beat the best it had then. The in-order search decides
// only when that pair (or the first pair reaching `good`) would add a duplicate.
EEP_AVX512 Swap find_swap_avx512(const Items& it, int a, double la, double lmin, double good) {
  const double best0 = la - kEps * std::max(1.0, la);
  const __m512d inf = _mm512_set1_pd(HUGE_VAL), vla = _mm512_set1_pd(la);
  const size_t stride = static_cast<size_t>(it.m) + kPad;
  __m512d all = inf;
  for (int i = 0; i < it.k; ++i) {
    __m512d vmin = inf;
    int x = it.slot_item[a * it.k + i];
    double wx = it.iw[x];
    if (wx > la - best0) {  // else no partner: d = w(x) - w(y) <= w(x)
      const __m512d vwx = _mm512_set1_pd(wx), end = _mm512_set1_pd(wx - (best0 - lmin));
      double* out = it.window + i * stride;
      const double* wy_at = it.iw + it.lower[x];
      const double* ly_at = it.il + it.lower[x];
      // Two blocks without a branch between them (most windows are shorter), then the rest.
      bool more = pair_maxima(wy_at, ly_at, 0, vwx, vla, end, out, vmin);
      more = pair_maxima(wy_at, ly_at, 8, vwx, vla, end, out, vmin) && more;
      for (int j = 16; more; j += 8)  // iw = -inf past the items ends it
        more = pair_maxima(wy_at, ly_at, j, vwx, vla, end, out, vmin);
    }
    _mm512_storeu_pd(it.mins + 8 * i, vmin);
    all = _mm512_min_pd(all, vmin);
  }
  double least = _mm512_reduce_min_pd(all);
  if (!(least < best0)) return {};
  // The first pair in scan order at or below `target`: the best, or, when a pair reaches `good`,
  // the first that does.
  // (Bit masks instead of a branch per x and per block: which x and which item win is random.)
  const __m512d target = _mm512_set1_pd(least <= good ? good : least);
  for (int base = 0; base < it.k; base += 64) {
    uint64_t which = 0;  // the x's holding such a pair
    for (int i = base; i < it.k && i < base + 64; ++i)
      which |= static_cast<uint64_t>(
                   _mm512_cmp_pd_mask(_mm512_loadu_pd(it.mins + 8 * i), target, _CMP_LE_OQ) != 0)
               << (i - base);
    if (!which) continue;
    int i = base + __builtin_ctzll(which);
    const double* out = it.window + i * stride;  // at least 16 items were stored
    uint32_t hit = _mm512_cmp_pd_mask(_mm512_loadu_pd(out), target, _CMP_LE_OQ) |
                   (_mm512_cmp_pd_mask(_mm512_loadu_pd(out + 8), target, _CMP_LE_OQ) << 8);
    int j = 0;
    if (!hit)
      for (j = 16; !(hit = _mm512_cmp_pd_mask(_mm512_loadu_pd(out + j), target, _CMP_LE_OQ));)
        j += 8;
    int x = it.slot_item[a * it.k + i], y = it.lower[x] + j + __builtin_ctz(hit);
    if (it.holds(it.igpu[y], it.ie[x]) || it.holds(a, it.ie[y])) break;
    return {x, y};
  }
  return find_swap_in_order(it, a, la, lmin, good);  // a duplicate in the way: rare
}

// load[g] = v, written as the whole block of 8 loads that heaviest_avx512 reads back (a scalar
// store under that vector load would stall store forwarding). load: padded to a multiple of 8.
EEP_AVX512 void set_load_avx512(double* load, int g, double v) {
  double* at = load + (g & ~7);
  __m512d blk = _mm512_loadu_pd(at);
  _mm512_storeu_pd(at, _mm512_mask_mov_pd(blk, static_cast<__mmask8>(1u << (g & 7)),
                                          _mm512_set1_pd(v)));
}

// The heaviest of n loads (the first on ties, as the scalar path's tree) and the lightest load,
// 8 at a time (+-inf fill the last block). load: padded to a multiple of 8.
EEP_AVX512 int heaviest_avx512(const double* load, int n, double* lightest) {
  __m512d hi = _mm512_set1_pd(-HUGE_VAL), lo = _mm512_set1_pd(HUGE_VAL);
  for (int g = 0; g < n; g += 8) {
    __mmask8 valid = n - g >= 8 ? 0xff : static_cast<__mmask8>((1u << (n - g)) - 1);
    hi = _mm512_max_pd(hi, _mm512_mask_loadu_pd(_mm512_set1_pd(-HUGE_VAL), valid, load + g));
    lo = _mm512_min_pd(lo, _mm512_mask_loadu_pd(_mm512_set1_pd(HUGE_VAL), valid, load + g));
  }
  *lightest = _mm512_reduce_min_pd(lo);
  const __m512d top = _mm512_set1_pd(_mm512_reduce_max_pd(hi));
  // The first GPU at the top: 64 at a time as one bit mask (no branch per block).
  for (int base = 0; base < n; base += 64) {
    uint64_t at = 0;
    for (int g = base; g < n && g < base + 64; g += 8) {
      __mmask8 valid = n - g >= 8 ? 0xff : static_cast<__mmask8>((1u << (n - g)) - 1);
      at |= static_cast<uint64_t>(_mm512_mask_cmp_pd_mask(valid, _mm512_loadu_pd(load + g), top,
                                                          _CMP_EQ_OQ))
            << (g - base);
    }
    if (at) return base + __builtin_ctzll(at);
  }
  return 0;  // not reached: the loads are finite, so one equals their maximum
}
#endif

// AVX-512 where the CPU has it, unless EEP_EPLB_SCALAR is set (other than "0") or
// force_scalar_swap_search(true) was called; the layouts are the same either way.
std::atomic<int> scalar_forced{-1};  // -1: not decided yet
bool use_avx512() {
#if EEP_EPLB_AVX512
  static const bool has_avx512 = vector_swap_search_available();
  int forced = scalar_forced.load(std::memory_order_relaxed);
  if (forced < 0) {
    const char* env = std::getenv("EEP_EPLB_SCALAR");
    forced = env && *env && std::strcmp(env, "0") != 0;
    scalar_forced.store(forced, std::memory_order_relaxed);
  }
  return has_avx512 && !forced;
#else
  return false;
#endif
}

// Swap refinement on GPUs [first, first + n) of phy2log (pw: each expert's load per replica).
// Keeps counts; never adds duplicates. Returns the heaviest GPU's load of the range; *dup:
// whether a duplicate is left (one that no swap could repair).
double refine_range(const double* pw, int num_experts, int* phy, int first, int n, int k,
                    const int* slot_order, bool* dup, RefineScratch& s) {
  int* p = phy + static_cast<size_t>(first) * k;  // the range's slots, GPU-major
  int m = n * k;
  s.load.assign(n + 8, 0.0);  // padded: the vector path reads and writes whole blocks of 8
  s.rw.resize(m);
  double* load = s.load.data();
  double* rw = s.rw.data();
  // (GPU-major loops instead of slot / k: integer divisions by a variable dominated the setup.)
  s.slot_gpu.resize(m);
  int* slot_gpu = s.slot_gpu.data();
  // Which experts each GPU holds, one bit each: the duplicate test of a candidate swap is then
  // two loads instead of two scans of k slots. Built here, it also tells whether a GPU holds an
  // expert twice (a bit already set), which spares a separate pass.
  int words = (num_experts + 63) / 64;
  s.mask.assign(static_cast<size_t>(n) * words, 0);
  uint64_t* mask = s.mask.data();
  auto flip = [&](int g, unsigned e) { mask[g * words + e / 64] ^= uint64_t{1} << (e % 64); };
  uint64_t twice = 0;
  for (int g = 0; g < n; ++g)
    for (int i = g * k; i < (g + 1) * k; ++i) {
      rw[i] = pw[p[i]];
      load[g] += rw[i];
      slot_gpu[i] = g;
      uint64_t& word = mask[g * words + static_cast<unsigned>(p[i]) / 64];
      uint64_t bit = uint64_t{1} << (static_cast<unsigned>(p[i]) % 64);
      twice |= word & bit;
      word |= bit;
    }
  // Duplicates (rare: a start with more replicas of an expert than GPUs, or DeepSeek's own
  // layout) are repaired first; the set of a layout that keeps one is rebuilt by flips as before.
  bool rebuild_mask = twice != 0;
  *dup = twice && repair_duplicates(p, rw, load, num_experts, n, k, s);
  // Lower bound of the heaviest GPU: the mean, and the GPU holding the heaviest replica must
  // carry it. Within kGoodEnough of it no swap is worth its time.
  double bound = 0, heaviest = 0;
  for (int g = 0; g < n; ++g) bound += load[g];
  bound /= n;
  for (int i = 0; i < m; ++i) heaviest = std::max(heaviest, rw[i]);
  bound = std::max(bound, heaviest);
  double good = bound * (1 + kGoodEnough);
  s.islot.resize(m);
  int* islot = s.islot.data();
  if (slot_order) {  // nearly sorted (float weights, or a repaired duplicate): insertion sort
    std::copy(slot_order, slot_order + m, islot);
    insertion_sort_desc(rw, m, islot);
  } else {
    sort_desc(rw, m, islot, s);
  }
  s.iw.resize(m + kPad), s.ie.resize(m), s.igpu.resize(m), s.slot_item.resize(m);
  s.lower.resize(m + 1);
  double* iw = s.iw.data();
  int* ie = s.ie.data();
  int* igpu = s.igpu.data();
  int* slot_item = s.slot_item.data();
  s.il.resize(m + kPad);
  double* il = s.il.data();  // the load of each item's GPU
  for (int t = 0; t < m; ++t) {
    int slot = islot[t];
    iw[t] = rw[slot], ie[t] = p[slot], igpu[t] = slot_gpu[slot], slot_item[slot] = t;
    il[t] = load[igpu[t]];
  }
  for (int t = m; t < m + kPad; ++t) iw[t] = -HUGE_VAL, il[t] = 0;  // ends every partner scan
  // lower[t]: the first item lighter than item t (replicas of one expert weigh the same).
  int* lower = s.lower.data();
  lower[m] = m;
  for (int t = m - 1, next = m; t >= 0; --t) {  // (next in a register, without a branch)
    int differs = iw[t + 1] != iw[t];
    next += (t + 1 - next) & -differs;
    lower[t] = next;
  }
  if (rebuild_mask) {  // replicas moved (repair)
    std::fill(mask, mask + static_cast<size_t>(n) * words, 0);
    for (int i = 0; i < m; ++i) flip(slot_gpu[i], p[i]);
  }
  // The heaviest GPU and the lightest load: with AVX-512 a pass over the loads per swap;
  // otherwise a tournament tree over the loads (a swap changes two loads: two leaf-to-root
  // updates) and the lightest load kept as below.
  const bool vector = use_avx512();
  Items items{iw, il, ie, igpu, lower, slot_item, mask, words, k, m, nullptr, nullptr};
  if (vector) {
    s.window.resize(static_cast<size_t>(k) * (m + kPad));
    s.mins.resize(static_cast<size_t>(k) * 8);
    items.window = s.window.data(), items.mins = s.mins.data();
  }
  // Tree: a node holds its winner's load (as bits: loads are non-negative, so the bits order as
  // the values) and index; an update carries the path's winner in registers and compares
  // integers, so it compiles without branches. Ties go to the lower index (the left child).
  int size = 1;
  while (size < n) size *= 2;
  uint64_t* hv = nullptr;
  int* hi_tree = nullptr;
  auto bits = [](double v) {
    uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
  };
  if (!vector) {
    s.hv.resize(2 * size), s.hi_tree.resize(2 * size);
    hv = s.hv.data(), hi_tree = s.hi_tree.data();
    for (int x = 0; x < size; ++x) {
      hi_tree[size + x] = std::min(x, n - 1);
      hv[size + x] = x < n ? bits(load[x]) : 0;
    }
    for (int x = size - 1; x >= 1; --x) {
      bool h = hv[2 * x + 1] > hv[2 * x];
      hv[x] = hv[2 * x + h], hi_tree[x] = hi_tree[2 * x + h];
    }
  }
  auto update = [&](int g) {  // after load[g] changed: its path to the root
    uint64_t hb = bits(load[g]);
    int hg = g;
    int x = g + size;
    hv[x] = hb;
    for (; x > 1; x >>= 1) {
      int sib = x ^ 1;
      uint64_t sh = hv[sib];
      int shg = hi_tree[sib];
      bool th = sh + static_cast<uint64_t>(x & 1) > hb;  // x & 1: the sibling is the left child
      hb = th ? sh : hb, hg = th ? shg : hg;
      hv[x >> 1] = hb, hi_tree[x >> 1] = hg;
    }
  };
  // The lightest GPU's load: a swap never lowers it (a keeps more than lmin, b gains), so the
  // scalar path recomputes it only when b (or, through rounding, a) was at or below it.
  auto min_load = [&] {
    double m0 = load[0], m1 = load[0];
    int g = 1;
    for (; g + 1 < n; g += 2) m0 = std::min(m0, load[g]), m1 = std::min(m1, load[g + 1]);
    if (g < n) m0 = std::min(m0, load[g]);
    return std::min(m0, m1);
  };
  double lmin = vector ? 0 : min_load();
  for (int iter = 0; iter < 8 * n; ++iter) {
#if EEP_EPLB_AVX512
    int a = vector ? heaviest_avx512(load, n, &lmin) : hi_tree[1];
#else
    int a = hi_tree[1];
#endif
    double la = load[a];
    if (la <= good) break;
#if EEP_EPLB_AVX512
    Swap sw = vector ? find_swap_avx512(items, a, la, lmin, good)
                     : find_swap_in_order(items, a, la, lmin, good);
#else
    Swap sw = find_swap_in_order(items, a, la, lmin, good);
#endif
    int bx = sw.x, by = sw.y;
    if (bx < 0) break;
    int b = igpu[by];
    double d = iw[bx] - iw[by];
    bool was_min = load[b] <= lmin;
    const double na = load[a] - d, nb = load[b] + d;
    if (vector) {
      set_load_avx512(load, a, na);
      set_load_avx512(load, b, nb);
    } else {
      load[a] = na, load[b] = nb;
    }
    if (!vector) {
      if (was_min || load[a] < lmin) lmin = min_load();
      update(a);
      update(b);
    }
    flip(a, ie[bx]), flip(b, ie[bx]), flip(a, ie[by]), flip(b, ie[by]);
    std::swap(igpu[bx], igpu[by]);
    std::swap(islot[bx], islot[by]);
    slot_item[islot[bx]] = bx, slot_item[islot[by]] = by;
    for (int i = 0; i < k; ++i) il[slot_item[a * k + i]] = na, il[slot_item[b * k + i]] = nb;
  }
  for (int t = 0; t < m; ++t) p[islot[t]] = ie[t];
  double mx = 0;
  for (int g = 0; g < n; ++g) mx = std::max(mx, load[g]);
  return mx;
}

}  // namespace

bool vector_swap_search_available() {
#if EEP_EPLB_AVX512
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

void force_scalar_swap_search(bool scalar) {
  scalar_forced.store(scalar ? 1 : 0, std::memory_order_relaxed);
}

double refine_layer(const double* weight, int num_experts, int* phy2log, int num_slots,
                    int num_gpus, int gpus_per_domain, const int* slot_order,
                    const double* per_replica, bool* duplicate) {
  RefineScratch& s = scratch();
  int k = num_slots / num_gpus;
  if (!per_replica) {
    s.rcnt.assign(num_experts, 0);
    for (int i = 0; i < num_slots; ++i) ++s.rcnt[phy2log[i]];
    s.pw.resize(num_experts);
    for (int e = 0; e < num_experts; ++e)
      if (s.rcnt[e] > 0) s.pw[e] = weight[e] / s.rcnt[e];
    per_replica = s.pw.data();
  }
  double mx = 0;
  bool dup = false;
  for (int first = 0; first < num_gpus; first += gpus_per_domain) {
    bool d = false;
    mx = std::max(mx, refine_range(per_replica, num_experts, phy2log, first, gpus_per_domain, k,
                                   gpus_per_domain == num_gpus ? slot_order : nullptr, &d, s));
    dup |= d;
  }
  if (duplicate) *duplicate = dup;
  return mx;
}

}  // namespace eep::eplb
