// The default algorithm, per layer:
//  1. with node locality, groups onto nodes by LPT with capacity (as DeepSeek) plus pairwise
//     swaps that lower the heaviest node;
//  2. within each domain (node, or the whole cluster), replica counts by repeatedly giving a
//     replica to the expert with the highest load per replica, capped at the domain's GPU count
//     so that no GPU needs two replicas of one expert; this greedy minimises the largest
//     per-replica load;
//  3. LPT packing of replicas onto GPUs (heaviest first onto the lightest GPU that has room and
//     does not hold the expert yet);
//  4. swap refinement: move the heaviest GPU's load down by exchanging one of its replicas with a
//     lighter replica of another GPU while no duplicate appears.
// The DeepSeek plans allowed by the locality rule are refined the same way and the layer keeps
// whichever candidate has the lowest heaviest GPU, so the result is never less balanced than them
// (unless they held duplicates that had to be repaired).
#include <algorithm>
#include <numeric>
#include <queue>
#include <vector>

#include "eplb/internal.h"

namespace eep::eplb {

namespace {

constexpr double kEps = 1e-12;
// Relative distance to the lower bound at which refinement stops (balancedness >= ~0.9999).
constexpr double kGoodEnough = 1e-4;

// Replica counts for a domain: each expert >= 1, sum = num_slots, <= cap where possible.
std::vector<int> replica_counts(const double* w, int n, int num_slots, int cap) {
  std::vector<int> cnt(n, 1);
  if (static_cast<int64_t>(n) * cap < num_slots) cap = num_slots;  // duplicates unavoidable
  using Item = std::pair<double, int>;  // (load per replica after one more, expert)
  auto cmp = [](const Item& a, const Item& b) {
    return a.first < b.first || (a.first == b.first && a.second > b.second);
  };
  std::priority_queue<Item, std::vector<Item>, decltype(cmp)> heap(cmp);
  for (int e = 0; e < n; ++e)
    if (cap > 1) heap.push({w[e], e});
  for (int extra = num_slots - n; extra > 0 && !heap.empty(); --extra) {
    int e = heap.top().second;
    heap.pop();
    ++cnt[e];
    if (cnt[e] < cap) heap.push({w[e] / cnt[e], e});
  }
  return cnt;
}

// LPT packing of replicas onto num_gpus GPUs with k slots each, avoiding duplicates. Returns
// local expert ids by slot (GPU-major).
std::vector<int> pack_replicas(const double* w, const std::vector<int>& cnt, int num_gpus, int k) {
  int n = static_cast<int>(cnt.size());
  std::vector<int> experts(n);
  std::iota(experts.begin(), experts.end(), 0);
  std::sort(experts.begin(), experts.end(), [&](int a, int b) {
    double wa = w[a] / cnt[a], wb = w[b] / cnt[b];
    return wa > wb || (wa == wb && a < b);
  });
  std::vector<int> out(static_cast<size_t>(num_gpus) * k, -1);
  std::vector<int> fill(num_gpus, 0);
  using Gpu = std::pair<double, int>;
  std::priority_queue<Gpu, std::vector<Gpu>, std::greater<Gpu>> heap;
  for (int g = 0; g < num_gpus; ++g) heap.push({0.0, g});
  std::vector<Gpu> taken;
  for (int e : experts) {
    double r = w[e] / cnt[e];
    // Replicas of one expert are consecutive, so the GPUs that take them are popped together
    // and never offered twice: no duplicates unless fewer GPUs than replicas have room.
    taken.clear();
    for (int c = 0; c < cnt[e]; ++c) {
      // GPUs filled by the fallback below are still queued: drop them here.
      while (!heap.empty() && fill[heap.top().second] >= k) heap.pop();
      if (heap.empty()) break;
      Gpu g = heap.top();
      heap.pop();
      out[g.second * k + fill[g.second]++] = e;
      taken.push_back({g.first + r, g.second});
    }
    for (const Gpu& g : taken)
      if (fill[g.second] < k) heap.push(g);
    // Left over only when fewer GPUs than replicas had room: put them anywhere with room.
    int placed = static_cast<int>(taken.size());
    for (int g = 0; placed < cnt[e] && g < num_gpus; ++g)
      while (placed < cnt[e] && fill[g] < k) {
        out[g * k + fill[g]++] = e, ++placed;
      }
  }
  return out;
}

// Swap refinement on GPUs [first, first + n) of phy2log. Keeps counts; never adds duplicates.
void refine_range(const std::vector<double>& w, std::vector<int>& phy2log, int first, int n, int k,
                  const std::vector<int>& cnt, std::vector<unsigned char>& on) {
  int num_experts = static_cast<int>(w.size());
  std::vector<double> load(n, 0.0);
  auto rep = [&](int slot) { int e = phy2log[slot]; return w[e] / cnt[e]; };
  for (int g = 0; g < n; ++g)
    for (int i = 0; i < k; ++i) load[g] += rep((first + g) * k + i);
  auto holds = [&](int g, int e) -> unsigned char& {
    return on[static_cast<size_t>(first + g) * num_experts + e];
  };
  // Repair duplicates first: swap a duplicate with a replica of another GPU in the domain that
  // creates none, choosing the closest load.
  for (int g = 0; g < n; ++g) {
    for (int i = 0; i < k; ++i) {
      int s = (first + g) * k + i, e = phy2log[s];
      if (holds(g, e) < 2) continue;
      int best = -1;
      double best_d = 0;
      for (int h = 0; h < n; ++h) {
        if (h == g || holds(h, e)) continue;
        for (int j = 0; j < k; ++j) {
          int t = (first + h) * k + j, f = phy2log[t];
          if (holds(g, f)) continue;
          double d = std::abs(rep(s) - rep(t));
          if (best < 0 || d < best_d) best = t, best_d = d;
        }
      }
      if (best < 0) continue;
      int h = best / k - first, f = phy2log[best];
      double dl = rep(s) - rep(best);
      --holds(g, e), ++holds(h, e), --holds(h, f), ++holds(g, f);
      std::swap(phy2log[s], phy2log[best]);
      load[g] -= dl, load[h] += dl;
    }
  }
  // Swap refinement: lower the heaviest GPU while it can be lowered. Per-slot replica loads are
  // cached: this loop is the hot spot of the whole planner.
  std::vector<double> rw(static_cast<size_t>(n) * k);
  for (int g = 0; g < n; ++g)
    for (int i = 0; i < k; ++i) rw[g * k + i] = rep((first + g) * k + i);
  // Lower bound of the heaviest GPU: the mean, and the GPU holding the heaviest replica must
  // carry it. Within kGoodEnough of it no swap is worth its time.
  double bound = 0, heaviest = 0;
  for (double l : load) bound += l;
  bound /= n;
  for (double r : rw) heaviest = std::max(heaviest, r);
  bound = std::max(bound, heaviest);
  for (int iter = 0; iter < 8 * n; ++iter) {
    int a = static_cast<int>(std::max_element(load.begin(), load.end()) - load.begin());
    if (load[a] <= bound * (1 + kGoodEnough)) break;
    double best_new = load[a] - kEps * std::max(1.0, load[a]);
    int bs = -1, bt = -1;
    const double* ra = &rw[a * k];
    double min_wa = *std::min_element(ra, ra + k), max_wa = *std::max_element(ra, ra + k);
    for (int b = 0; b < n; ++b) {
      double gap = load[a] - load[b];
      if (b == a || gap <= 0) continue;
      // The best new maximum with b is above load[a] - gap / 2: skip b when that cannot win.
      if (load[a] - gap / 2 >= best_new) continue;
      const double* rb = &rw[b * k];
      for (int j = 0; j < k; ++j) {
        double wy = rb[j];
        if (wy >= max_wa || min_wa - wy >= gap) continue;
        for (int i = 0; i < k; ++i) {
          double d = ra[i] - wy;
          if (d <= 0 || d >= gap) continue;
          double nm = std::max(load[a] - d, load[b] + d);
          if (nm >= best_new) continue;
          int s = (first + a) * k + i, t = (first + b) * k + j;
          if (holds(b, phy2log[s]) || holds(a, phy2log[t])) continue;
          best_new = nm, bs = s, bt = t;
        }
      }
    }
    if (bs < 0) break;
    int b = bt / k - first, x = phy2log[bs], y = phy2log[bt];
    int ia = bs - (first + a) * k, jb = bt - (first + b) * k;
    double d = rw[a * k + ia] - rw[b * k + jb];
    --holds(a, x), ++holds(b, x), --holds(b, y), ++holds(a, y);
    std::swap(phy2log[bs], phy2log[bt]);
    std::swap(rw[a * k + ia], rw[b * k + jb]);
    load[a] -= d, load[b] += d;
  }
}

// Groups onto nodes: LPT with capacity, then swaps between the heaviest node and the others.
std::vector<int> pack_groups(const std::vector<double>& group_w, int num_nodes) {
  int n = static_cast<int>(group_w.size());
  int per = n / num_nodes;
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return group_w[a] > group_w[b]; });
  std::vector<int> node_of(n);
  std::vector<double> nw(num_nodes, 0);
  std::vector<int> nn(num_nodes, 0);
  for (int g : order) {
    int best = -1;
    for (int p = 0; p < num_nodes; ++p)
      if (nn[p] < per && (best < 0 || nw[p] < nw[best])) best = p;
    node_of[g] = best, ++nn[best], nw[best] += group_w[g];
  }
  for (int iter = 0; iter < 4 * n; ++iter) {
    int a = static_cast<int>(std::max_element(nw.begin(), nw.end()) - nw.begin());
    double best_new = nw[a] - kEps * std::max(1.0, nw[a]);
    int bx = -1, by = -1;
    for (int x = 0; x < n; ++x) {
      if (node_of[x] != a) continue;
      for (int y = 0; y < n; ++y) {
        int b = node_of[y];
        if (b == a) continue;
        double d = group_w[x] - group_w[y];
        if (d <= 0) continue;
        double nm = std::max(nw[a] - d, nw[b] + d);
        if (nm < best_new) best_new = nm, bx = x, by = y;
      }
    }
    if (bx < 0) break;
    int b = node_of[by];
    double d = group_w[bx] - group_w[by];
    nw[a] -= d, nw[b] += d;
    std::swap(node_of[bx], node_of[by]);
  }
  return node_of;
}

}  // namespace

bool node_local(const Options& o) {
  return o.num_nodes > 1 && o.num_groups % o.num_nodes == 0;
}

double max_gpu_load(const std::vector<double>& weight, const std::vector<int>& phy2log,
                    int num_gpus) {
  auto loads = gpu_loads(weight, phy2log, num_gpus);
  return *std::max_element(loads.begin(), loads.end());
}

void refine_layer(const std::vector<double>& weight, std::vector<int>& phy2log, int num_gpus,
                  int gpus_per_domain) {
  int num_experts = static_cast<int>(weight.size());
  int k = static_cast<int>(phy2log.size()) / num_gpus;
  std::vector<int> cnt(num_experts, 0);
  for (int e : phy2log) ++cnt[e];
  std::vector<unsigned char> on(static_cast<size_t>(num_gpus) * num_experts, 0);
  for (size_t s = 0; s < phy2log.size(); ++s) ++on[(s / k) * num_experts + phy2log[s]];
  for (int first = 0; first < num_gpus; first += gpus_per_domain)
    refine_range(weight, phy2log, first, gpus_per_domain, k, cnt, on);
}

namespace {

// My packing of one layer: domains are nodes (groups packed onto them) when local, else the whole
// cluster.
std::vector<int> pack_layer(const std::vector<double>& weight, const Options& o, bool local) {
  int num_experts = static_cast<int>(weight.size());
  int num_nodes = local ? o.num_nodes : 1;
  int gpus_per_node = o.num_gpus / num_nodes;
  int slots_per_node = o.num_slots / num_nodes;
  int k = o.num_slots / o.num_gpus;
  std::vector<std::vector<int>> members(num_nodes);
  if (local) {
    int group_size = num_experts / o.num_groups;
    std::vector<double> group_w(o.num_groups, 0);
    for (int e = 0; e < num_experts; ++e) group_w[e / group_size] += weight[e];
    auto node_of = pack_groups(group_w, num_nodes);
    for (int e = 0; e < num_experts; ++e) members[node_of[e / group_size]].push_back(e);
  } else {
    members[0].resize(num_experts);
    std::iota(members[0].begin(), members[0].end(), 0);
  }
  std::vector<int> out(o.num_slots);
  std::vector<double> w;
  for (int node = 0; node < num_nodes; ++node) {
    const auto& m = members[node];
    w.resize(m.size());
    for (size_t i = 0; i < m.size(); ++i) w[i] = weight[m[i]];
    auto cnt = replica_counts(w.data(), static_cast<int>(m.size()), slots_per_node, gpus_per_node);
    auto local_slots = pack_replicas(w.data(), cnt, gpus_per_node, k);
    for (int i = 0; i < slots_per_node; ++i) out[node * slots_per_node + i] = m[local_slots[i]];
  }
  refine_layer(weight, out, o.num_gpus, gpus_per_node);
  return out;
}

}  // namespace

std::vector<int> default_layer(const std::vector<double>& weight, const Options& o) {
  // Node-local candidates first (each group's replicas on one node, refined within nodes); a
  // global candidate replaces them only when strictly better balanced, so locality is kept
  // whenever it costs nothing and the result is never worse than either DeepSeek mode.
  std::vector<int> best;
  double best_max = 0;
  auto consider = [&](std::vector<int> cand, int gpus_per_domain) {
    // A DeepSeek layout already heavier than the best so far cannot make the result less
    // balanced than it: skip the (costly) refinement.
    if (!best.empty() && max_gpu_load(weight, cand, o.num_gpus) >= best_max) return;
    refine_layer(weight, cand, o.num_gpus, gpus_per_domain);
    double mx = max_gpu_load(weight, cand, o.num_gpus);
    if (best.empty() || mx < best_max * (1 - 1e-12)) best_max = mx, best = std::move(cand);
  };
  if (node_local(o)) {
    int gpn = o.num_gpus / o.num_nodes;
    consider(pack_layer(weight, o, true), gpn);
    consider(deepseek_layer(weight, o.num_slots, o.num_groups, o.num_nodes, o.num_gpus), gpn);
  }
  // Global candidates only when the node-local layout is heavier than DeepSeek's global one:
  // then locality would cost balance, which the default does not accept.
  auto global_ds = deepseek_layer(weight, o.num_slots, 1, 1, o.num_gpus);
  if (best.empty() || best_max > max_gpu_load(weight, global_ds, o.num_gpus)) {
    consider(pack_layer(weight, o, false), o.num_gpus);
    consider(std::move(global_ds), o.num_gpus);
  }
  // With one node DeepSeek's own choice is "hierarchical" over that node: the same packing up to
  // the order of groups, which can break ties differently.
  if (o.num_nodes == 1 && o.num_groups > 1)
    consider(deepseek_layer(weight, o.num_slots, o.num_groups, 1, o.num_gpus), o.num_gpus);
  return best;
}

}  // namespace eep::eplb
