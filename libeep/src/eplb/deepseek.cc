// DeepSeek's published EPLB (github.com/deepseek-ai/eplb), reimplemented per layer for
// compatibility: balanced packing of groups onto nodes, replication of the expert with the
// highest load per replica, balanced packing of replicas onto GPUs. Arithmetic is float, as the
// reference works on float32 tensors, so near-ties break the same way. On exact ties the
// reference's order is unspecified (torch sort/max); here the lower index wins.
//
// Speed: the reference's linear scans (lightest pack, heaviest expert) are min trees keyed on
// (weight, index), which pick exactly the same element; sorting uses packed 64-bit keys; scratch
// memory is reused across layers.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "eep/common.h"
#include "eplb/internal.h"

namespace eep::eplb {

void order_desc(const float* w, int n, std::vector<uint64_t>& keys, int* order) {
  // The order of the 64-bit keys desc_key (weight bits above the index). n < 64: std::sort is as
  // fast. Else, when the keys' top 16 bits (sign, exponent, 7 mantissa bits: buckets 1/128
  // apart) span at most 8 n + 1024 values, one stable counting pass on them and an insertion
  // sort on the whole keys, which only has to order keys within a bucket; otherwise an LSD radix
  // sort on the 32 weight bits (8 bits a pass, stable; passes where every key has the same byte
  // are skipped). (Four radix passes cost twice the counting pass: the exponent byte's few
  // values serialise the counter increments.)
  keys.resize(2 * static_cast<size_t>(n));
  uint64_t* a = keys.data();
  uint64_t* b = a + n;
  uint32_t lo = ~0u, hi = 0;
  for (int i = 0; i < n; ++i) {
    a[i] = desc_key(w[i], i);
    uint32_t top = static_cast<uint32_t>(a[i] >> 48);
    lo = std::min(lo, top), hi = std::max(hi, top);
  }
  if (n < 64) {
    std::sort(a, a + n);
  } else if (hi - lo <= 8u * n + 1024) {
    thread_local std::vector<int> count;
    count.assign(hi - lo + 2, 0);
    for (int i = 0; i < n; ++i) ++count[(a[i] >> 48) - lo + 1];
    for (uint32_t d = 1; d <= hi - lo; ++d) count[d] += count[d - 1];
    for (int i = 0; i < n; ++i) b[count[(a[i] >> 48) - lo]++] = a[i];
    for (int i = 1; i < n; ++i) {
      uint64_t key = b[i];
      int j = i;
      for (; j > 0 && b[j - 1] > key; --j) b[j] = b[j - 1];
      b[j] = key;
    }
    a = b;
  } else {
    int count[256];
    for (int shift = 32; shift < 64; shift += 8) {
      std::fill(count, count + 256, 0);
      for (int i = 0; i < n; ++i) ++count[(a[i] >> shift) & 0xff];
      if (count[(a[0] >> shift) & 0xff] == n) continue;
      for (int d = 0, sum = 0; d < 256; ++d) {
        int c = count[d];
        count[d] = sum;
        sum += c;
      }
      for (int i = 0; i < n; ++i) b[count[(a[i] >> shift) & 0xff]++] = a[i];
      std::swap(a, b);
    }
  }
  for (int i = 0; i < n; ++i) order[i] = static_cast<int>(a[i] & 0xffffffffu);
}

namespace {

// Minimum of n 64-bit keys with point updates: a tree of fan-out 4 whose levels are arrays padded
// to whole groups of 4 (with ~0). An update's new root depends on the new key through one min per
// level (three levels for 64 leaves); the siblings' minima depend only on the position, so they
// are computed while the key still is. The placement loop below is one long chain of updates:
// with a binary tree (six dependent min-and-store steps for 64 GPUs) it took ~30 cycles per
// replica; fan-out 4 cut the whole plan by ~7% at 320 slots / 64 GPUs, fan-out 8 by ~2%.
class MinTree4 {
 public:
  // Leaves = keys[0..n), padded; returns the root.
  uint64_t build(const uint64_t* keys, int n) {
    levels_ = 0;
    int size = n;
    size_t total = 0;
    do {
      offset_[levels_++] = total;
      total += (static_cast<size_t>(size) + 3) / 4 * 4;
      size = (size + 3) / 4;
    } while (size > 1 && levels_ < kMaxLevels);
    node_.assign(total, ~uint64_t{0});
    std::copy(keys, keys + n, node_.begin());
    uint64_t root = ~uint64_t{0};
    for (int l = 0, count = n; l < levels_; ++l, count = (count + 3) / 4) {
      const uint64_t* a = node_.data() + offset_[l];
      for (int g = 0; g < count; g += 4) {
        uint64_t m = a[g];
        for (int j = 1; j < 4; ++j) m = std::min(m, a[g + j]);
        if (l + 1 < levels_) node_[offset_[l + 1] + g / 4] = m;
        else root = m;
      }
    }
    return root;
  }
  // Sets leaf p to key; returns the new root.
  uint64_t set(int p, uint64_t key) {
    int x = p;
    for (int l = 0; l < levels_; ++l, x >>= 2) {
      uint64_t* a = node_.data() + offset_[l];
      // The 3 others of x's group of 4: x ^ 1 .. x ^ 3.
      uint64_t o = std::min(std::min(a[x ^ 1], a[x ^ 2]), a[x ^ 3]);
      a[x] = key;
      key = std::min(key, o);
    }
    return key;
  }

 private:
  static constexpr int kMaxLevels = 16;  // 4^16 leaves
  int levels_ = 0;
  size_t offset_[kMaxLevels] = {};
  std::vector<uint64_t> node_;
};

// A pack's key in a MinTree4: its weight's bits above its index, so the lightest pack wins and
// ties go to the lower index (pack weights are sums from +0 of non-negative floats, never -0,
// and non-negative floats order as their bits).
uint64_t pack_key(float weight, int p) {
  uint32_t bits;
  std::memcpy(&bits, &weight, sizeof bits);
  return (static_cast<uint64_t>(bits) << 32) | static_cast<uint32_t>(p);
}
constexpr uint64_t kFullPack = ~uint64_t{0};

struct Scratch {
  std::vector<uint64_t> keys;
  std::vector<int> order, fill;
  std::vector<float> w, group_w, node_w, phy_w;
  std::vector<int> gpack, grank, mlog2log, mcnt, picks, items, node_order;
  std::vector<uint64_t> rleaves, leaves;
  std::vector<int> leaf_of;
  MinTree4 tree, rtree;
  std::vector<int> holder_start, holder_fill, holders;
  std::vector<float> item_w, pack_w;
  std::vector<char> seen;
};

// Packs n items onto num_packs packs of exactly n / num_packs items each: heaviest first, each
// onto the lightest pack that still has room (lowest index on ties).
void balanced_packing(const float* w, int n, int num_packs, int* pack, int* rank, Scratch& s) {
  int per_pack = n / num_packs;
  if (per_pack == 1) {
    std::iota(pack, pack + n, 0);
    std::fill(rank, rank + n, 0);
    return;
  }
  s.order.resize(n);
  order_desc(w, n, s.keys, s.order.data());
  // The lightest pack with room, lowest index on ties (what the reference's scan picks).
  s.fill.assign(num_packs, 0);
  s.pack_w.assign(num_packs, 0.f);
  s.leaves.resize(num_packs);
  for (int p = 0; p < num_packs; ++p) s.leaves[p] = pack_key(0.f, p);
  uint64_t root = s.tree.build(s.leaves.data(), num_packs);
  for (int i = 0; i < n; ++i) {
    int item = s.order[i], p = static_cast<int>(root & 0xffffffffu);
    pack[item] = p;
    rank[item] = s.fill[p]++;
    s.pack_w[p] += w[item];
    root = s.tree.set(p, s.fill[p] < per_pack ? pack_key(s.pack_w[p], p) : kFullPack);
  }
}

// Node loads (double) of DeepSeek's packing of groups onto nodes; returns the packing in s.gpack
// and s.grank.
void pack_groups_ds(const double* weight, int num_experts, int num_groups, int num_nodes,
                    Scratch& s) {
  int group_size = num_experts / num_groups;
  s.w.resize(num_experts);
  for (int e = 0; e < num_experts; ++e) s.w[e] = static_cast<float>(weight[e]);
  s.group_w.assign(num_groups, 0.f);
  for (int g = 0, e = 0; g < num_groups; ++g)  // (no e / group_size: divisions are slow)
    for (int i = 0; i < group_size; ++i, ++e) s.group_w[g] += s.w[e];
  s.gpack.resize(num_groups);
  s.grank.resize(num_groups);
  balanced_packing(s.group_w.data(), num_groups, num_nodes, s.gpack.data(), s.grank.data(), s);
}

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

void deepseek_domain(const float* w, int n, const int* order, int num_slots, int num_packs,
                     int* out, bool avoid_duplicates, int* slot_order) {
  Scratch& s = scratch();
  int extra = num_slots - n;
  // Without duplicates no expert may have more replicas than there are GPUs (unless the slots
  // cannot be filled otherwise).
  int cap = avoid_duplicates && static_cast<int64_t>(n) * num_packs >= num_slots ? num_packs
                                                                                : num_slots;
  // Step 2: replication, each extra slot to the expert with the highest load per replica (lowest
  // index on ties). Only the `extra` heaviest experts can get one: a lighter expert is never
  // the highest while a heavier one still has a single replica.
  s.mcnt.assign(n, 1);
  s.picks.resize(extra);
  // The highest key of the candidates: a min tree (MinTree4) over the complement of one 64-bit
  // key per expert, the load per replica's bits (non-negative floats order as their bits) above
  // ~expert, so ties go to the lower index. Each pick updates the picked expert's leaf (its next
  // load per replica, or "none" at the cap) without a branch, where a heap's sift-down took
  // mispredicted ones.
  auto rkey = [](float v, int e) {
    if (v == 0) v = 0;  // -0 counts as 0
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    return ~((static_cast<uint64_t>(bits) << 32) | static_cast<uint32_t>(~e));
  };
  constexpr uint64_t kNone = ~uint64_t{0};  // no real key is ~0 (it would need expert 2^32 - 1)
  int candidates = std::min(extra, n);
  s.rleaves.resize(candidates);
  s.leaf_of.resize(n);
  for (int i = 0; i < candidates; ++i) {
    s.rleaves[i] = rkey(w[order[i]], order[i]);
    s.leaf_of[order[i]] = i;
  }
  uint64_t top = candidates > 0 ? s.rtree.build(s.rleaves.data(), candidates) : kNone;
  for (int j = 0; j < extra && top != kNone; ++j) {
    int e = static_cast<int>(static_cast<uint32_t>(top));
    s.picks[j] = e;
    ++s.mcnt[e];
    top = s.rtree.set(s.leaf_of[e],
                      s.mcnt[e] < cap ? rkey(w[e] / static_cast<float>(s.mcnt[e]), e) : kNone);
  }
  int per_pack = num_slots / num_packs;
  if (per_pack == 1) {  // the reference keeps slot order: expert e, then the extras as picked
    std::iota(out, out + n, 0);
    std::copy(s.picks.begin(), s.picks.end(), out + n);
    return;
  }
  // Step 3: replicas by load per replica descending, then by slot position (expert e's first
  // replica sits at e, the j-th extra one at n + j), as the reference's stable sort orders them:
  // the replicated experts' replicas, sorted, merged into the others (already in order).
  // Usually one key per replicated expert (its first replica's) is enough: its extra replicas
  // follow it. Not when it has the same load per replica as another replicated expert, or as a
  // single replica of a higher index, which their positions put in between: then every replica
  // gets its key.
  auto& rk = s.keys;
  auto per_replica = [&](int e) { return w[e] / static_cast<float>(s.mcnt[e]); };
  s.items.resize(num_slots);
  s.item_w.resize(num_slots);
  size_t r = 0;
  int t = 0;
  auto merge = [&](auto&& take, auto&& tie) {  // the replicas in rk[r..) merged into the others
    for (int i = 0; i < n; ++i) {
      int e = order[i];
      if (s.mcnt[e] > 1) continue;
      uint64_t key = desc_key(w[e], e);
      for (; r < rk.size() && rk[r] < key; ++r) {
        if (tie(rk[r], key)) return false;
        take(rk[r]);
      }
      s.items[t] = e, s.item_w[t++] = w[e];
    }
    for (; r < rk.size(); ++r) take(rk[r]);
    return true;
  };
  auto same_load = [](uint64_t a, uint64_t b) { return (a >> 32) == (b >> 32); };
  rk.clear();
  for (int i = 0; i < std::min(extra, n); ++i)
    if (s.mcnt[order[i]] > 1) rk.push_back(desc_key(per_replica(order[i]), order[i]));
  std::sort(rk.begin(), rk.end());
  bool blocks = true;
  for (size_t q = 1; q < rk.size() && blocks; ++q) blocks = !same_load(rk[q - 1], rk[q]);
  auto take_block = [&](uint64_t key) {
    int e = static_cast<int>(key & 0xffffffffu);
    float pr = per_replica(e);
    for (int c = 0; c < s.mcnt[e]; ++c) s.items[t] = e, s.item_w[t++] = pr;
  };
  if (!blocks || !merge(take_block, same_load)) {
    r = 0, t = 0;
    rk.clear();
    s.seen.assign(n, 0);
    for (int j = 0; j < extra; ++j) {
      int e = s.picks[j];
      rk.push_back(desc_key(per_replica(e), n + j));
      if (!s.seen[e]) s.seen[e] = 1, rk.push_back(desc_key(per_replica(e), e));  // first replica
    }
    std::sort(rk.begin(), rk.end());
    auto take_replica = [&](uint64_t key) {
      uint32_t pos = static_cast<uint32_t>(key & 0xffffffffu);
      int e = pos < static_cast<uint32_t>(n) ? static_cast<int>(pos) : s.picks[pos - n];
      s.items[t] = e, s.item_w[t++] = per_replica(e);
    };
    merge(take_replica, [](uint64_t, uint64_t) { return false; });
  }
  // Each onto the lightest GPU with room (lowest index on ties): a min tree over the GPUs whose
  // keys are the weight's bits (non-negative floats order as their bits) above the index, so
  // ties go to the lower index; full GPUs are kFull.
  constexpr uint64_t kFull = kFullPack;
  s.fill.assign(num_packs, 0);
  s.pack_w.assign(num_packs, 0.f);
  auto leaf = [&](int p) { return s.fill[p] == per_pack ? kFull : pack_key(s.pack_w[p], p); };
  // avoid_duplicates: the GPUs already holding a replicated expert count as full while its next
  // replica is placed (holders[e] lists them). When DeepSeek's own choice creates no duplicate,
  // every choice is the same, so the layout is DeepSeek's; otherwise the lightest GPU with room
  // that lacks the expert (or, when there is none, DeepSeek's choice).
  if (avoid_duplicates) {
    s.holder_start.assign(n + 1, 0);
    for (int e = 0; e < n; ++e) s.holder_start[e + 1] = s.holder_start[e] + s.mcnt[e];
    s.holder_fill.assign(n, 0);
    s.holders.resize(num_slots);
  }
  // While every GPU is empty and the items weigh more than 0, item i goes to GPU i (the lightest,
  // lowest index first, is always the next empty one): the first num_packs items need no tree.
  int first = 0;
  if (num_slots >= num_packs && s.item_w[num_packs - 1] > 0) {
    for (; first < num_packs; ++first) {
      int e = s.items[first];
      if (avoid_duplicates && s.mcnt[e] > 1) s.holders[s.holder_start[e] + s.holder_fill[e]++] = first;
      if (slot_order) slot_order[first] = first * per_pack;
      out[first * per_pack] = e;
      s.fill[first] = 1;
      s.pack_w[first] = s.item_w[first];
    }
  }
  s.leaves.resize(num_packs);
  for (int p = 0; p < num_packs; ++p) s.leaves[p] = leaf(p);
  uint64_t root = s.tree.build(s.leaves.data(), num_packs);
  // The chosen GPU's key carries its weight: the update's new key needs no load of it (and no
  // reload of what the previous step stored), only the GPU's fill.
  int* fill = s.fill.data();
  float* pack_w = s.pack_w.data();
  for (int i = first; i < num_slots; ++i) {
    int e = s.items[i];
    uint64_t chosen = root;
    if (avoid_duplicates && s.mcnt[e] > 1) {
      int* held = &s.holders[s.holder_start[e]];
      int nheld = s.holder_fill[e]++;
      // Only when DeepSeek's choice holds e already: the lightest of the others.
      if (std::find(held, held + nheld, static_cast<int>(root & 0xffffffffu)) != held + nheld) {
        uint64_t r = root;
        for (int h = 0; h < nheld; ++h) r = s.tree.set(held[h], kFull);
        if (r != kFull) chosen = r;
        for (int h = 0; h < nheld; ++h) s.tree.set(held[h], leaf(held[h]));
      }
      held[nheld] = static_cast<int>(chosen & 0xffffffffu);
    }
    int p = static_cast<int>(chosen & 0xffffffffu);
    uint32_t bits = static_cast<uint32_t>(chosen >> 32);
    float weight;
    std::memcpy(&weight, &bits, sizeof weight);
    weight += s.item_w[i];
    int f = fill[p];
    if (slot_order) slot_order[i] = p * per_pack + f;
    out[p * per_pack + f] = e;
    fill[p] = f + 1;
    pack_w[p] = weight;
    root = s.tree.set(p, f + 1 == per_pack ? kFull : pack_key(weight, p));
  }
}

double deepseek_node_bound(const double* weight, int num_experts, int num_groups, int num_nodes,
                           int num_gpus) {
  Scratch& s = scratch();
  pack_groups_ds(weight, num_experts, num_groups, num_nodes, s);
  int group_size = num_experts / num_groups;
  thread_local std::vector<double> node_load;
  node_load.assign(num_nodes, 0.0);
  for (int g = 0, e = 0; g < num_groups; ++g)
    for (int i = 0; i < group_size; ++i, ++e) node_load[s.gpack[g]] += weight[e];
  return *std::max_element(node_load.begin(), node_load.end()) / (num_gpus / num_nodes);
}

void deepseek_layer(const double* weight, int num_experts, int num_slots, int num_groups,
                    int num_nodes, int num_gpus, int* out) {
  Scratch& s = scratch();
  int group_size = num_experts / num_groups;
  int groups_per_node = num_groups / num_nodes;
  int experts_per_node = num_experts / num_nodes;
  int slots_per_node = num_slots / num_nodes;
  int gpus_per_node = num_gpus / num_nodes;
  int slots_per_gpu = num_slots / num_gpus;

  // Step 1: groups onto nodes. mlog ("middle" logical id) numbers experts node by node.
  pack_groups_ds(weight, num_experts, num_groups, num_nodes, s);
  s.mlog2log.resize(num_experts);
  for (int e = 0; e < num_experts; ++e) {
    int g = e / group_size;
    int mlog = (s.gpack[g] * groups_per_node + s.grank[g]) * group_size + e % group_size;
    s.mlog2log[mlog] = e;
  }

  s.node_w.resize(experts_per_node);
  s.node_order.resize(experts_per_node);
  thread_local std::vector<int> local;
  local.resize(slots_per_node);
  for (int node = 0; node < num_nodes; ++node) {
    const int* m2l = &s.mlog2log[node * experts_per_node];
    for (int i = 0; i < experts_per_node; ++i) s.node_w[i] = s.w[m2l[i]];
    order_desc(s.node_w.data(), experts_per_node, s.keys, s.node_order.data());
    // Steps 2 and 3 within the node (scratch is reused inside, so work on copies).
    deepseek_domain(s.node_w.data(), experts_per_node, s.node_order.data(), slots_per_node,
                    gpus_per_node, local.data());
    for (int i = 0; i < slots_per_node; ++i) out[node * slots_per_node + i] = m2l[local[i]];
  }
  (void)slots_per_gpu;
}

std::vector<int> deepseek_layer(const std::vector<double>& weight, int num_slots, int num_groups,
                                int num_nodes, int num_gpus) {
  std::vector<int> out(num_slots);
  deepseek_layer(weight.data(), static_cast<int>(weight.size()), num_slots, num_groups, num_nodes,
                 num_gpus, out.data());
  return out;
}

Plan deepseek_plan(const std::vector<std::vector<double>>& load, int num_slots, int num_groups,
                   int num_nodes, int num_gpus, bool hierarchical) {
  Options o;
  o.num_gpus = num_gpus;
  o.num_slots = num_slots;
  o.num_groups = hierarchical ? num_groups : 1;
  o.num_nodes = hierarchical ? num_nodes : 1;
  check_inputs(load, o);
  if (hierarchical) {
    EEP_CHECK(num_groups % num_nodes == 0, ErrorCode::kInvalidArgument,
              "hierarchical mode needs nodes to divide groups");
    EEP_CHECK((num_slots / num_nodes) >= static_cast<int>(load[0].size()) / num_nodes,
              ErrorCode::kInvalidArgument, "fewer slots per node than experts per node");
  }
  std::vector<std::vector<int>> rows(load.size(), std::vector<int>(num_slots));
  for (size_t l = 0; l < load.size(); ++l)
    deepseek_layer(load[l].data(), static_cast<int>(load[l].size()), num_slots, o.num_groups,
                   o.num_nodes, num_gpus, rows[l].data());
  return make_plan(std::move(rows), static_cast<int>(load[0].size()), num_gpus);
}

}  // namespace eep::eplb
