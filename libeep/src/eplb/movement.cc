// Movement-aware rebalancing of one layer. Moving an expert costs a weight transfer per slot, so
// the search starts from the current placement and rewrites single slots, greedily taking the
// operation with the best reduction of overload per newly moved slot:
//   - swap: two slots on different GPUs exchange experts (two moves, counts unchanged);
//   - add a replica of an expert held by the heaviest GPU in a slot elsewhere whose expert has
//     spare replicas (one move: the hot expert's per-replica load drops everywhere it lives);
//   - rewrite a slot of the heaviest GPU to a lighter expert, taking a replica from the expert
//     it held (one move).
// Overload is the sum over GPUs of max(0, load - target). It stops when the heaviest GPU is
// within target. When the search cannot get there (or the aligned best plan moves fewer
// slots), the best plan relabelled to overlap the current one most (align_layer) is used; it
// meets the target by construction. No operation ever adds a duplicate replica to a GPU, and
// with node locality every expert stays on the node its group lives on.
#include <algorithm>
#include <cmath>
#include <vector>

#include "eplb/internal.h"

namespace eep::eplb {

namespace {

struct State {
  const std::vector<double>& w;
  const std::vector<int>& orig;
  std::vector<int> phy;
  int num_gpus, k, num_experts;
  std::vector<int> cnt;
  std::vector<int> on;  // [gpu * E + e]
  std::vector<double> load;
  std::vector<std::vector<int>> hosts;  // expert -> GPUs (with multiplicity)
  double target;

  // orig: the current layout (-1: a slot with no predecessor, moved whatever it gets); start:
  // a full layout to search from.
  State(const std::vector<double>& w_, const std::vector<int>& cur, std::vector<int> start,
        int gpus, double t)
      : w(w_), orig(cur), phy(std::move(start)), num_gpus(gpus), target(t) {
    k = static_cast<int>(phy.size()) / num_gpus;
    num_experts = static_cast<int>(w.size());
    rebuild();
  }

  void rebuild() {
    cnt.assign(num_experts, 0);
    on.assign(static_cast<size_t>(num_gpus) * num_experts, 0);
    hosts.assign(num_experts, {});
    for (size_t s = 0; s < phy.size(); ++s) {
      ++cnt[phy[s]];
      ++on[(s / k) * num_experts + phy[s]];
      hosts[phy[s]].push_back(static_cast<int>(s / k));
    }
    load.assign(num_gpus, 0.0);
    for (size_t s = 0; s < phy.size(); ++s) load[s / k] += w[phy[s]] / cnt[phy[s]];
  }

  double excess(double l) const { return l > target ? l - target : 0.0; }
  int holds(int g, int e) const { return on[static_cast<size_t>(g) * num_experts + e]; }
  // Newly moved slots if slot s takes expert e.
  int move_cost(int s, int e) const { return (e != orig[s]) - (phy[s] != orig[s]); }

  // Change of overload when slot t (on GPU b) is rewritten from its expert z to x.
  double rewrite_gain(int t, int x) const {
    int b = t / k, z = phy[t];
    double before = 0, after = 0;
    // GPUs touched: hosts of x, hosts of z, b. Accumulate per-GPU deltas in a tiny list.
    thread_local std::vector<int> touched;
    thread_local std::vector<double> delta;
    touched.clear();
    delta.clear();
    auto add = [&](int g, double d) {
      for (size_t i = 0; i < touched.size(); ++i)
        if (touched[i] == g) {
          delta[i] += d;
          return;
        }
      touched.push_back(g);
      delta.push_back(d);
    };
    double ox = w[x] / cnt[x], nx = w[x] / (cnt[x] + 1);
    double oz = w[z] / cnt[z], nz = w[z] / (cnt[z] - 1);
    for (int g : hosts[x]) add(g, nx - ox);
    for (int g : hosts[z]) add(g, nz - oz);
    // Slot t itself: it held z (counted above at the new per-replica load) and now holds x.
    add(b, -nz + nx);
    for (size_t i = 0; i < touched.size(); ++i) {
      before += excess(load[touched[i]]);
      after += excess(load[touched[i]] + delta[i]);
    }
    return before - after;
  }
};

bool on_gpu(const std::vector<int>& phy, int g, int k, int e) {
  return std::find(phy.begin() + g * k, phy.begin() + (g + 1) * k, e) != phy.begin() + (g + 1) * k;
}

// A full layout from a partial one (-1: empty slot), rewriting only empty slots where it can:
// experts left without a replica go first (heaviest first, each to the lightest GPU with an
// empty slot that does not hold it); when there are fewer empty slots than such experts, the
// replicas whose loss raises the load per replica least are cleared first. Remaining empty slots
// get replicas of the expert with the highest load per replica that the GPU lacks.
std::vector<int> complete(const std::vector<double>& w, std::vector<int> phy, int num_gpus) {
  int S = static_cast<int>(phy.size()), k = S / num_gpus, E = static_cast<int>(w.size());
  std::vector<int> cnt(E, 0);
  int empty = 0;
  for (int e : phy) e >= 0 ? ++cnt[e] : ++empty;
  std::vector<int> missing;
  for (int e = 0; e < E; ++e)
    if (!cnt[e]) missing.push_back(e);
  std::sort(missing.begin(), missing.end(), [&](int a, int b) { return w[a] > w[b]; });
  while (static_cast<int>(missing.size()) > empty) {
    int best = -1;
    double best_v = 0;
    for (int s = 0; s < S; ++s) {
      int e = phy[s];
      if (e < 0 || cnt[e] < 2) continue;
      double v = w[e] / (cnt[e] - 1);
      if (best < 0 || v < best_v) best = s, best_v = v;
    }
    --cnt[phy[best]];
    phy[best] = -1;
    ++empty;
  }
  auto loads = [&] {
    std::vector<double> l(num_gpus, 0.0);
    for (int s = 0; s < S; ++s)
      if (phy[s] >= 0) l[s / k] += w[phy[s]] / cnt[phy[s]];
    return l;
  };
  std::vector<double> load = loads();
  // The lightest GPU with an empty slot, optionally one that lacks expert e.
  auto lightest = [&](int e) {
    int best = -1;
    for (int g = 0; g < num_gpus; ++g) {
      if (!on_gpu(phy, g, k, -1) || (e >= 0 && on_gpu(phy, g, k, e))) continue;
      if (best < 0 || load[g] < load[best]) best = g;
    }
    return best;
  };
  auto put = [&](int g, int e) {
    *std::find(phy.begin() + g * k, phy.begin() + (g + 1) * k, -1) = e;
    ++cnt[e];
    load[g] += w[e] / cnt[e];
    --empty;
  };
  for (int e : missing) put(lightest(e), e);
  while (empty > 0) {
    int g = lightest(-1), best = -1;
    for (int e = 0; e < E; ++e) {
      if (on_gpu(phy, g, k, e)) continue;
      if (best < 0 || w[e] / (cnt[e] + 1) > w[best] / (cnt[best] + 1)) best = e;
    }
    if (best < 0) best = static_cast<int>(std::max_element(w.begin(), w.end()) - w.begin());
    put(g, best);
  }
  return phy;
}

}  // namespace

std::vector<int> movement_layer(const std::vector<double>& weight, const std::vector<int>& current,
                                const std::vector<int>& best, double target,
                                const Options& o) {
  // Locality is not enforced slot by slot here: the default may itself pick a global layout.
  bool local = false;
  int nodes = local ? o.num_nodes : 1;
  auto aligned = align_layer(current, best, o.num_gpus, nodes);
  auto moves = [&](const std::vector<int>& p) {
    int n = 0;
    for (size_t s = 0; s < p.size(); ++s) n += p[s] != current[s];
    return n;
  };
  int aligned_moves = moves(aligned);
  target *= 1 + 1e-12;

  // A projected plan may have empty slots and experts without a replica: complete it first.
  State st(weight, current, complete(weight, current, o.num_gpus), o.num_gpus, target);
  int k = st.k, E = st.num_experts;
  int gpus_per_node = o.num_gpus / nodes;
  // With locality every expert may only live on the node its group lives on now; a current plan
  // that breaks locality is not repaired slot by slot: the aligned best plan is used instead.
  std::vector<int> node_of(E, 0);
  if (local) {
    int group_size = E / o.num_groups;
    std::vector<int> votes(static_cast<size_t>(o.num_groups) * nodes, 0);
    for (size_t s = 0; s < current.size(); ++s)
      ++votes[(current[s] / group_size) * nodes + (s / k) / gpus_per_node];
    for (int g = 0; g < o.num_groups; ++g) {
      int bn = static_cast<int>(std::max_element(votes.begin() + g * nodes,
                                                 votes.begin() + (g + 1) * nodes) -
                                (votes.begin() + g * nodes));
      for (int e = g * group_size; e < (g + 1) * group_size; ++e) node_of[e] = bn;
    }
    for (size_t s = 0; s < current.size(); ++s)
      if (node_of[current[s]] != static_cast<int>((s / k) / gpus_per_node)) return aligned;
  }
  auto node = [&](int g) { return g / gpus_per_node; };

  int budget = std::min(aligned_moves, static_cast<int>(current.size()));
  for (int iter = 0; iter < 4 * static_cast<int>(current.size()); ++iter) {
    int a = static_cast<int>(std::max_element(st.load.begin(), st.load.end()) - st.load.begin());
    if (st.load[a] <= target) break;
    // Current moved count; stop early once the search cannot beat the aligned plan.
    if (moves(st.phy) >= budget) break;
    double best_score = 0;
    int op = -1, s1 = -1, s2 = -1, ex = -1;
    auto offer = [&](double gain, int cost, int kind, int p, int q, int e) {
      if (gain <= 1e-12 * std::max(1.0, target)) return;
      // Operations that move nothing new (undoing an earlier move) come first.
      double score = cost <= 0 ? 1e300 + gain : gain / cost;
      if (score > best_score) best_score = score, op = kind, s1 = p, s2 = q, ex = e;
    };
    for (int i = 0; i < k; ++i) {
      int s = a * k + i, x = st.phy[s];
      double wx = weight[x] / st.cnt[x];
      for (int t = 0; t < static_cast<int>(st.phy.size()); ++t) {
        int b = t / k;
        if (b == a || node(b) != node(a)) continue;
        int y = st.phy[t];
        // Swap s <-> t.
        if (!st.holds(b, x) && !st.holds(a, y)) {
          double d = wx - weight[y] / st.cnt[y];
          if (d > 0) {
            double before = st.excess(st.load[a]) + st.excess(st.load[b]);
            double after = st.excess(st.load[a] - d) + st.excess(st.load[b] + d);
            offer(before - after, st.move_cost(s, y) + st.move_cost(t, x), 0, s, t, -1);
          }
        }
        // Add a replica of x in slot t, taking it from y.
        if (!st.holds(b, x) && st.cnt[y] >= 2 && x != y)
          offer(st.rewrite_gain(t, x), st.move_cost(t, x), 1, t, -1, x);
      }
      // Rewrite slot s of the heaviest GPU to another expert z.
      if (st.cnt[x] >= 2) {
        for (int z = 0; z < E; ++z) {
          if (z == x || st.holds(a, z) || (local && node_of[z] != node(a))) continue;
          offer(st.rewrite_gain(s, z), st.move_cost(s, z), 1, s, -1, z);
        }
      }
    }
    if (op < 0) break;
    if (op == 0) {
      std::swap(st.phy[s1], st.phy[s2]);
    } else {
      st.phy[s1] = ex;
    }
    st.rebuild();
  }
  double mx = *std::max_element(st.load.begin(), st.load.end());
  if (mx <= target && moves(st.phy) < aligned_moves) return st.phy;
  return aligned;
}

}  // namespace eep::eplb
