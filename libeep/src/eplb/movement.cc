// Movement-aware rebalancing. Moving an expert costs a weight transfer per slot, so each layer's
// search starts from the current placement and rewrites single slots, greedily taking the
// operation with the best reduction of overload per newly moved slot:
//   - swap: two slots on different GPUs exchange experts (two moves, counts unchanged);
//   - add a replica of an expert held by the heaviest GPU in a slot elsewhere whose expert has
//     spare replicas (one move: the hot expert's per-replica load drops everywhere it lives);
//   - rewrite a slot of the heaviest GPU to another expert, taking a replica from the expert it
//     held (one move);
//   - a swap chain: GPUs above the floor each hand one replica on along a chain that ends at a
//     GPU below it (m GPUs fixed with m + 1 moves; chain_search).
// Overload is the sum over GPUs of max(0, load - floor). No operation ever adds a duplicate
// replica to a GPU. Each layer's search records its trajectory (slots moved and heaviest GPU
// after every operation); movement_rows then spends the plan's tolerance GLOBALLY, as the
// balancedness is global (sum of means / sum of maxima): a greedy over the layers' trajectories
// takes the steps with the largest drop of the heaviest GPU per moved slot until the sum of the
// maxima fits. Layers where moving is cheap go below their share so that expensive ones move
// less. Each layer is then searched again (two pilot searches: each step takes the candidate
// from which a greedy roll-out reaches the target with the fewest moves) down to exactly the
// maximum allocated to it, and the allocation redone, twice. The best plan relabelled to overlap the current one most (align_layer) is
// every layer's last point, so the budget is always met.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <queue>
#include <unordered_map>
#include <vector>

#include "eplb/internal.h"

namespace eep::eplb {

namespace {

// Each layer's first searches go down to best / (1 - f * tolerance), once for each f here: at
// and below its even share (1), so that layers where moving is cheap can fund the others. The
// allocation of the tolerance over the layers then gives each layer a target, and more searches
// go exactly there (kTargetRounds). Measured at 320/64 under 10% drift (5 steps, with the chains
// and one target round of two variants): floors {0.5, 1} 10.25% moved/step, {0.25, 0.75} 10.33%,
// {0.25, 0.5, 0.75} 10.30% at 1.3x the time, {0.25, 1} 10.35%, {0.5} 10.39%.
constexpr double kMovementFloors[] = {0.5, 1.0};
// Rounds of searches at the allocated targets (kTargetSearches), each followed by a new
// allocation: 320/64 10.83% (none, three floors, no chains) -> 10.25% (one round, two variants)
// -> 10.17% (two rounds, four variants); three rounds 10.15% at 1.3x the time of two. With the
// pilot searches a third round moved the same (seeds 1-2, two steps).
constexpr int kTargetRounds = 2;

// The search's variants: each finds other trajectories, and each layer keeps the best points.
enum class Variant {
  kGreedy,    // the best operation per new move, chains included
  kLightTie,  // on equal scores the swap that moves the least load
};

// The searches of each target round: a variant, and how many of its best candidates each step
// weighs by a pilot roll-out (pilot_pick: the greedy of that variant run to the target from each
// candidate; the candidate whose roll-out gets there with the fewest moves is taken). Mean
// moved/step at 320/64 over load seeds 1-8 (5 steps each): the four searches before (greedy,
// chains first, light tie, light tie with a one-step look-ahead over 3 candidates) 10.13% at
// 0.87 s per plan; two pilot searches over 3 candidates 9.92%, over 4 9.87% at 3.7 s; one greedy
// pilot over 3 candidates beside the first three of the old searches 9.97%.
struct TargetSearch {
  Variant variant;
  int pilot;
};
constexpr TargetSearch kTargetSearches[] = {{Variant::kGreedy, 4}, {Variant::kLightTie, 4}};

// Search state of one layer. Loads are recomputed from scratch after every operation (O(slots)),
// so the recorded maxima are exact; candidate gains use incremental deltas.
struct Search {
  const double* w;
  const int* orig;  // current layout; -1: a slot without predecessor (always counts as moved)
  int E, G, k, S;
  double floor;
  std::vector<int> phy, cnt, on;  // on[g * E + e]: replicas of e on GPU g
  std::vector<int> gpu;           // gpu[s] = s / k (integer division is slow in the hot loops)
  // Per expert: load per replica now, and with one replica more (the candidate loops read them
  // thousands of times per step; kept up to date by set()).
  std::vector<double> per, per_next;
  std::vector<std::vector<int>> slots_of;
  std::vector<double> load;
  int moved = 0;
  uint64_t hash = 0;  // Zobrist hash of phy (zkey per slot and expert)
  // scratch for rewrite_gain: per-GPU deltas and the GPUs touched
  std::vector<double> delta;
  std::vector<char> mark;
  std::vector<int> touched;

  Search(const double* weight, int num_experts, const int* current, std::vector<int> start,
         int num_gpus, double floor_target)
      : w(weight), orig(current), E(num_experts), G(num_gpus), floor(floor_target),
        phy(std::move(start)) {
    S = static_cast<int>(phy.size());
    k = S / G;
    gpu.resize(S);
    for (int s = 0; s < S; ++s) gpu[s] = s / k;
    cnt.assign(E, 0);
    on.assign(static_cast<size_t>(G) * E, 0);
    slots_of.assign(E, {});
    for (int s = 0; s < S; ++s) {
      ++cnt[phy[s]];
      ++on[(s / k) * E + phy[s]];
      slots_of[phy[s]].push_back(s);
      moved += phy[s] != orig[s];
      hash ^= zkey(s, phy[s]);
    }
    per.resize(E), per_next.resize(E);
    for (int e = 0; e < E; ++e) update_per(e);
    delta.assign(G, 0.0);
    mark.assign(G, 0);
    recompute();
  }
  void recompute() {
    load.assign(G, 0.0);
    for (int s = 0; s < S; ++s) load[gpu[s]] += per[phy[s]];
  }
  void update_per(int e) {
    per[e] = w[e] / cnt[e];
    per_next[e] = w[e] / (cnt[e] + 1);
  }
  // max(l - floor, 0) (branch-free; the same value as l > floor ? l - floor : 0)
  double ex(double l) const { return std::max(l - floor, 0.0); }
  bool holds(int g, int e) const { return on[static_cast<size_t>(g) * E + e] > 0; }
  // Newly moved slots if slot s takes expert e.
  int move_cost(int s, int e) const { return (e != orig[s]) - (phy[s] != orig[s]); }
  double max_load() const { return *std::max_element(load.begin(), load.end()); }

  // Change of overload when slot t is rewritten from its expert y to z.
  double rewrite_gain(int t, int z) {
    int y = phy[t];
    touched.clear();
    auto add = [&](int g, double d) {
      if (!mark[g]) mark[g] = 1, touched.push_back(g);
      delta[g] += d;
    };
    double oz = w[z] / cnt[z], nz = w[z] / (cnt[z] + 1);
    double oy = w[y] / cnt[y], ny = w[y] / (cnt[y] - 1);
    for (int u : slots_of[z]) add(gpu[u], nz - oz);
    for (int u : slots_of[y]) add(gpu[u], u == t ? nz - oy : ny - oy);
    double gain = 0;
    for (int g : touched) {
      gain += ex(load[g]) - ex(load[g] + delta[g]);
      delta[g] = 0.0, mark[g] = 0;
    }
    return gain;
  }

  // rewrite_gain(t, x) for an added replica of x (t's GPU lacks x), given ax = the change of
  // overload on x's GPUs alone (sum of ex(l) - ex(l - dx), dx = x's drop per replica): only y's
  // other GPUs are visited. Needs a layout without duplicates (one replica per GPU and expert).
  double add_gain(int t, int x, double ax, double dx) const {
    int y = phy[t];
    double nx = w[x] / (cnt[x] + 1), oy = w[y] / cnt[y], ry = w[y] / (cnt[y] - 1) - oy;
    double lb = load[gpu[t]];
    double gain = ax + ex(lb) - ex(lb + nx - oy);
    for (int u : slots_of[y]) {
      if (u == t) continue;
      int g = gpu[u];
      double l = load[g];
      gain += holds(g, x) ? ex(l - dx) - ex(l - dx + ry) : ex(l) - ex(l + ry);
    }
    return gain;
  }

  // rewrite_gain(s, z) when x = phy[s] loses this replica, given rx = the rise of each of x's
  // other replicas and rest = the change of overload on x's other GPUs alone: only z's GPUs are
  // visited. Needs a layout without duplicates.
  double drop_gain(int s, int z, double rest, double rx) const {
    int x = phy[s];
    double oz = w[z] / cnt[z], dz = oz - w[z] / (cnt[z] + 1);
    double la = load[gpu[s]];
    double gain = rest + ex(la) - ex(la + oz - dz - w[x] / cnt[x]);
    for (int u : slots_of[z]) {
      int g = gpu[u];
      double l = load[g];
      gain += holds(g, x) ? ex(l + rx) - ex(l + rx - dz) : ex(l) - ex(l - dz);
    }
    return gain;
  }

  void move_slot(int s, int from, int to) {  // slots_of bookkeeping
    auto& v = slots_of[from];
    v.erase(std::find(v.begin(), v.end(), s));
    slots_of[to].push_back(s);
  }
  uint64_t zkey(int s, int e) const {  // splitmix64 of (slot, expert)
    uint64_t z = static_cast<uint64_t>(s) * E + e + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  void set(int s, int e) {
    int y = phy[s], g = gpu[s];
    hash ^= zkey(s, y) ^ zkey(s, e);
    moved += move_cost(s, e);
    --on[g * E + y], ++on[g * E + e];
    --cnt[y], ++cnt[e];
    update_per(y), update_per(e);
    move_slot(s, y, e);
    phy[s] = e;
  }
  void swap(int s, int t) {
    int x = phy[s], y = phy[t];
    set(s, y);
    set(t, x);  // counts return to what they were
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


// One operation of a layer's trajectory: slot s2 >= 0 swaps with s1; else s1 takes expert e.
struct Op {
  int s1, s2, e;
};

struct Trajectory {
  std::vector<int> start;       // the current layout, completed
  std::vector<Op> ops;
  std::vector<int> moves;       // moves[i]: slots moved after the first i operations
  std::vector<double> maxima;   // heaviest GPU after the first i operations
};

// A swap chain: slot `to` on a GPU below the floor takes the expert of from[0], whose slot takes
// to's expert; then from[1]'s expert, which sends from[0]'s expert there; and so on. Every GPU of
// `from` (all above the floor) ends at or below the floor with one new move each; the receiver
// ends with the last expert, at most the floor. Replica loads rise along the chain by at least
// the excess of the GPU that takes each step.
struct Chain {
  int to = -1;
  std::vector<int> from;
  double score = 0, gain = 0;  // gain: overload removed
  int cost = 0;                // new moves
};

struct ChainItem {
  double w;
  int s;
};

// The best chain (total overload removed per new move) over all receiving slots, by a DP over the
// replicas of the GPUs above the floor sorted by load per replica; chains of 2 or more GPUs only
// (one GPU is a swap, which the greedy offers itself).
Chain chain_search(const Search& st, std::vector<ChainItem>& items, double beat) {
  Chain best;
  int k = st.k;
  items.clear();
  for (int g = 0; g < st.G; ++g)
    if (st.load[g] > st.floor)
      for (int s = g * k; s < (g + 1) * k; ++s)
        items.push_back({st.w[st.phy[s]] / st.cnt[st.phy[s]], s});
  if (items.size() < static_cast<size_t>(2 * k)) return best;
  std::sort(items.begin(), items.end(),
            [](const ChainItem& a, const ChainItem& b) { return a.w < b.w; });
  int n = static_cast<int>(items.size());
  std::vector<double> val(n), cost(n);
  std::vector<int> par(n), len(n);
  for (int t = 0; t < st.S; ++t) {
    int b = st.gpu[t];
    double room = st.floor - st.load[b];
    // A chain through b removes at most its room with at least 3 moves (fewer only when it
    // undoes earlier moves).
    if (room <= 0 || room / 3 <= std::max(beat, best.score)) {
      t += k - 1;
      continue;
    }
    int y = st.phy[t];
    double wy = st.w[y] / st.cnt[y];
    int y_moved = y != st.orig[t];
    int lo =
        static_cast<int>(std::upper_bound(items.begin(), items.end(), wy,
                                          [](double v, const ChainItem& it) { return v < it.w; }) -
                         items.begin());
    for (int i = lo; i < n && items[i].w <= wy + room; ++i) {
      val[i] = -1;
      int s = items[i].s, a = st.gpu[s], x = st.phy[s];
      if (st.holds(b, x)) continue;
      double e = st.load[a] - st.floor, wi = items[i].w;
      double best_r = -1;
      auto consider = [&](int p, double v, double c, int l) {
        double tc = (x != st.orig[t]) - y_moved;
        double r = c + tc > 0 ? v / (c + tc) : 1e300 + v;
        if (r > best_r) best_r = r, val[i] = v, cost[i] = c, par[i] = p, len[i] = l;
      };
      if (wi - e >= wy && !st.holds(a, y))
        consider(-1, e, (y != st.orig[s]) - (x != st.orig[s]), 1);
      for (int p = lo; p < i && items[p].w <= wi - e; ++p) {
        if (val[p] < 0) continue;
        int xp = st.phy[items[p].s];
        if (xp == x || st.holds(a, xp)) continue;
        bool repeat = false;
        for (int q = p; q >= 0 && !repeat; q = par[q]) repeat = st.gpu[items[q].s] == a;
        if (repeat) continue;
        consider(p, val[p] + e, cost[p] + (xp != st.orig[s]) - (x != st.orig[s]), len[p] + 1);
      }
      double tc = (x != st.orig[t]) - y_moved;
      double fr = cost[i] + tc > 0 ? val[i] / (cost[i] + tc) : 1e300 + val[i];
      if (val[i] > 0 && len[i] >= 2 && fr > best.score) {
        best.score = fr;
        best.gain = val[i];
        best.cost = static_cast<int>(cost[i] + tc);
        best.to = t;
        best.from.clear();
        for (int q = i; q >= 0; q = par[q]) best.from.push_back(items[q].s);
        std::reverse(best.from.begin(), best.from.end());
      }
    }
  }
  return best;
}

// One candidate step of the search: a single operation, or a chain (chain.to >= 0).
struct Choice {
  double score = 0, gain = 0, waste = 0;
  int cost = 0;
  Op op{-1, -1, -1};
  Chain chain;
};

// Scratch of one layer's search, reused across its steps.
struct StepScratch {
  std::vector<ChainItem> chain_items;
  std::vector<double> excess;
};

// The candidates of one greedy step, best first: the `keep` best single operations that touch
// the heaviest GPU (swap, add a replica, rewrite), and a swap chain ahead of them when it is
// strictly better per move (chains_first: whenever there is one). Empty when nothing helps.
std::vector<Choice> step_choices(Search& st, Variant variant, bool dup_free, size_t keep,
                                 StepScratch& sc) {
  const double* weight = st.w;
  int k = st.k, E = st.E, S = st.S, G = st.G;
  int a = static_cast<int>(std::max_element(st.load.begin(), st.load.end()) - st.load.begin());
  double la = st.load[a];
  std::vector<Choice> top;  // best first, at most keep
  double tie = 1e-9 * std::max(1.0, st.floor);
  // Candidates are pruned against the score a new one must beat to enter the list.
  auto bar = [&] { return top.size() < keep ? 0.0 : top.back().score; };
  auto offer = [&](double gain, int cost, Op op, double waste = 0) {
    if (gain <= 1e-12 * std::max(1.0, st.floor)) return;
    // Operations that move nothing new (undoing an earlier move) come first.
    double score = cost <= 0 ? 1e300 + gain : gain / cost;
    // On equal scores (a swap's gain is capped by the heaviest GPU's overload) the swap that
    // moves the most load (waste = -d): the heaviest GPU drops below the floor and its moved
    // slot can take part in later swaps at one new move each. Measured at 320/64 (three
    // floors): 11.44% moved/step without a tie-break, 11.19% preferring the smallest d,
    // 10.75% preferring the largest.
    if (variant == Variant::kLightTie) waste = -waste;
    auto before = [&](const Choice& c) {
      return score > c.score + tie || (score > c.score - tie && waste < c.waste);
    };
    size_t pos = top.size();
    while (pos > 0 && before(top[pos - 1])) --pos;
    if (pos >= keep) return;
    Choice c;
    c.score = score, c.gain = gain, c.cost = cost, c.op = op, c.waste = waste;
    top.insert(top.begin() + pos, c);
    if (top.size() > keep) top.pop_back();
  };
  double ex_a = st.ex(la);
  const std::vector<double>& cur = st.per;
  const std::vector<double>& next = st.per_next;
  for (int i = 0; i < k; ++i) {
    int s = a * k + i, x = st.phy[s];
    double wx = cur[x];
    // A new replica of x lowers each of x's GPUs by wx - wx_new at most: the bound on the
    // gain of any "add a replica of x" (cost >= 1), checked before trying every slot.
    double dx = wx - next[x];
    double add_bound = 0, ax = 0;
    for (int u : st.slots_of[x]) {
      double l = st.load[st.gpu[u]];
      add_bound += std::min(st.ex(l), dx);
      ax += st.ex(l) - st.ex(l - dx);
    }
    bool try_add = add_bound > bar();
    for (int t = 0; t < S; ++t) {
      int b = st.gpu[t];
      if (b == a) {
        t += k - 1;
        continue;
      }
      int y = st.phy[t];
      if (st.holds(b, x)) continue;
      // Swap s <-> t: gain at most min(overload of a, d), cost >= 1.
      double d = wx - cur[y];
      // (Gains are bounded to skip hopeless candidates early; every cost here is >= 1.)
      if (d > 0 && std::min(ex_a, d) > bar() - tie && !st.holds(a, y)) {
        int cost = st.move_cost(s, y) + st.move_cost(t, x);
        // Its score is at most min(ex_a, d) / cost.
        if (cost <= 1 || std::min(ex_a, d) / cost > bar() - tie) {
          double lb = st.load[b];
          double gain = ex_a + st.ex(lb) - st.ex(la - d) - st.ex(lb + d);
          offer(gain, cost, {s, t, -1}, -d);
        }
      }
      // Add a replica of x in slot t, taking it from y: at most x's GPUs' drop and b's own
      // change (y's other GPUs only rise).
      if (try_add && st.cnt[y] >= 2 && x != y) {
        double lb = st.load[b];
        double ub = add_bound + st.ex(lb) - st.ex(lb + wx - dx - cur[y]);
        if (ub > bar())
          offer(dup_free ? st.add_gain(t, x, ax, dx) : st.rewrite_gain(t, x), st.move_cost(t, x),
                {t, -1, x});
      }
    }
    // Rewrite slot s of the heaviest GPU to another expert z.
    if (st.cnt[x] >= 2) {
      double rx = weight[x] / (st.cnt[x] - 1) - wx, rest = 0;
      if (dup_free)
        for (int u : st.slots_of[x])
          if (u != s) rest += st.ex(st.load[st.gpu[u]]) - st.ex(st.load[st.gpu[u]] + rx);
      for (int z = 0; z < E; ++z) {
        if (z == x || st.holds(a, z)) continue;
        // a sheds at most wx - (z's new per-replica load): prune before the full gain.
        double shed = wx - next[z];
        double other = st.cnt[z] * (cur[z] - next[z]);
        if (std::min(ex_a, std::max(shed, 0.0)) + other <= bar()) continue;
        offer(dup_free ? st.drop_gain(s, z, rest, rx) : st.rewrite_gain(s, z), st.move_cost(s, z),
              {s, -1, z});
      }
    }
  }
  // Swap chains (chain_search): taken when strictly better per move than every single
  // operation above. A chain of m >= 2 GPUs costs m + 1 new moves (fewer only when it undoes
  // earlier moves, rare): its score is at most the best prefix of the largest excesses over
  // m + 1.
  double best_score = top.empty() ? 0.0 : top.front().score;
  sc.excess.clear();
  for (int g = 0; g < G; ++g)
    if (st.load[g] > st.floor) sc.excess.push_back(st.load[g] - st.floor);
  std::sort(sc.excess.rbegin(), sc.excess.rend());
  double sum = 0, bound = 0;
  for (size_t m = 0; m < sc.excess.size(); ++m) {
    sum += sc.excess[m];
    if (m >= 1) bound = std::max(bound, sum / (m + 2));
  }
  if (bound <= best_score + tie) return top;
  Chain c = chain_search(st, sc.chain_items, best_score + tie);
  if (c.score > best_score + tie) {
    Choice ch;
    ch.score = c.score, ch.gain = c.gain, ch.cost = c.cost, ch.chain = std::move(c);
    top.insert(top.begin(), std::move(ch));
  }
  return top;
}

// Applies a step to the search state and records its points (a chain: one per swap).
void apply_choice(Search& st, const Choice& c, Trajectory& tr) {
  auto record = [&](Op op) {
    st.recompute();
    tr.ops.push_back(op);
    tr.moves.push_back(st.moved);
    tr.maxima.push_back(st.max_load());
  };
  if (c.chain.to >= 0) {
    for (int s : c.chain.from) {
      st.swap(c.chain.to, s);
      record({c.chain.to, s, -1});
    }
  } else if (c.op.s2 >= 0) {
    st.swap(c.op.s1, c.op.s2);
    record(c.op);
  } else {
    st.set(c.op.s1, c.op.e);
    record(c.op);
  }
}

// Pilot roll-out: where the greedy (variant v, one candidate per step) ends from a layout:
// whether it reached the floor, its moves and its heaviest GPU. The greedy's choice depends on
// the layout alone, so every layout a roll-out passes through is remembered with the roll-out's
// end (keyed by its Zobrist hash): the candidate the greedy itself would take next is then known
// without a roll-out (it continues the roll-out that the previous step picked), and a roll-out
// that reaches a remembered layout stops there (at 320/64 about 7% of the roll-outs).
struct PilotEnd {
  bool ok;
  int moves;
  double max;
};
using PilotMemo = std::unordered_map<uint64_t, PilotEnd>;

PilotEnd rollout(Search st, Variant v, bool dup_free, int max_moves, StepScratch& sc,
                 PilotMemo& memo, std::vector<uint64_t>& path) {
  Trajectory tr;
  path.clear();
  PilotEnd end;
  for (int iter = 0;; ++iter) {
    if (auto it = memo.find(st.hash); it != memo.end()) {
      end = it->second;
      break;
    }
    path.push_back(st.hash);
    std::vector<Choice> cands;
    if (st.max_load() > st.floor && st.moved < max_moves && iter < 4 * st.S)
      cands = step_choices(st, v, dup_free, 1, sc);
    if (cands.empty()) {
      end = {st.max_load() <= st.floor, st.moved, st.max_load()};
      break;
    }
    apply_choice(st, cands[0], tr);
  }
  for (uint64_t h : path) memo.emplace(h, end);
  return end;
}

// The hash of the layout after a step (without applying it).
uint64_t hash_after(const Search& st, const Choice& c) {
  uint64_t h = st.hash;
  auto swap_h = [&](int s, int t, int x, int y) {  // s: x -> y, t: y -> x
    h ^= st.zkey(s, x) ^ st.zkey(s, y) ^ st.zkey(t, y) ^ st.zkey(t, x);
  };
  if (c.chain.to >= 0) {
    int t = c.chain.to, yt = st.phy[t];
    for (int s : c.chain.from) {
      swap_h(t, s, yt, st.phy[s]);
      yt = st.phy[s];
    }
  } else if (c.op.s2 >= 0) {
    swap_h(c.op.s1, c.op.s2, st.phy[c.op.s1], st.phy[c.op.s2]);
  } else {
    h ^= st.zkey(c.op.s1, st.phy[c.op.s1]) ^ st.zkey(c.op.s1, c.op.e);
  }
  return h;
}

// Of the candidates, the one whose roll-out ends at the floor with the fewest moves (then the
// lowest heaviest GPU); free steps (undoing a move) first, as the greedy does.
size_t pilot_pick(const Search& st, const std::vector<Choice>& cands, Variant v, bool dup_free,
                  int max_moves, StepScratch& sc, PilotMemo& memo, std::vector<uint64_t>& path) {
  size_t pick = 0;
  PilotEnd best{false, 1 << 30, 1e300};
  Trajectory scratch_tr;
  for (size_t i = 0; i < cands.size(); ++i) {
    if (cands[i].cost <= 0) return i;
    PilotEnd e;
    if (auto it = memo.find(hash_after(st, cands[i])); it != memo.end()) {
      e = it->second;
    } else {
      Search next = st;
      apply_choice(next, cands[i], scratch_tr);
      e = rollout(std::move(next), v, dup_free, max_moves, sc, memo, path);
    }
    bool better = e.ok != best.ok ? e.ok
                  : e.ok          ? e.moves < best.moves ||
                                (e.moves == best.moves && e.max < best.max - 1e-9)
                                  : e.max < best.max - 1e-9;
    if (i == 0 || better) pick = i, best = e;
  }
  return pick;
}

// The greedy search of one layer from `current` towards max load <= floor; stops there, when no
// operation helps, or when it has moved max_moves slots. With pilot > 1 each step takes, of the
// greedy's `pilot` best candidates, the one whose roll-out reaches the floor with the fewest
// moves (pilot_pick; the greedy's own choice on ties).
Trajectory search_layer(const std::vector<double>& weight, const std::vector<int>& current,
                        double floor, int max_moves, int num_gpus, Variant variant,
                        int pilot = 1) {
  Trajectory tr;
  tr.start = complete(weight, current, num_gpus);
  Search st(weight.data(), static_cast<int>(weight.size()), current.data(), tr.start, num_gpus,
            floor * (1 + 1e-12));
  tr.moves.push_back(st.moved);
  tr.maxima.push_back(st.max_load());
  // add_gain needs one replica per GPU and expert; operations never add a duplicate, so a
  // layout that starts without one keeps none.
  bool dup_free = std::none_of(st.on.begin(), st.on.end(), [](int c) { return c > 1; });
  StepScratch sc;
  PilotMemo memo;
  std::vector<uint64_t> path;
  for (int iter = 0; iter < 4 * st.S; ++iter) {
    if (st.max_load() <= st.floor || st.moved >= max_moves) break;
    std::vector<Choice> cands = step_choices(st, variant, dup_free, pilot, sc);
    if (cands.empty()) break;
    size_t pick = pilot > 1 ? pilot_pick(st, cands, variant, dup_free, max_moves, sc, memo, path)
                            : 0;
    apply_choice(st, cands[pick], tr);
  }
  return tr;
}


int count_moves(const std::vector<int>& phy, const std::vector<int>& current) {
  int n = 0;
  for (size_t s = 0; s < phy.size(); ++s) n += phy[s] != current[s];
  return n;
}

std::vector<int> replay(const Trajectory& tr, int n) {
  std::vector<int> phy = tr.start;
  for (int i = 0; i < n; ++i) {
    const Op& op = tr.ops[i];
    if (op.s2 >= 0) {
      std::swap(phy[op.s1], phy[op.s2]);
    } else {
      phy[op.s1] = op.e;
    }
  }
  return phy;
}


}  // namespace

std::vector<std::vector<int>> movement_rows(const std::vector<std::vector<double>>& load,
                                            const std::vector<std::vector<int>>& current,
                                            const std::vector<std::vector<int>>& best,
                                            const Options& o) {
  int L = static_cast<int>(load.size());
  // Budget: sum over layers of the heaviest GPU may reach sum(best) / (1 - tolerance), which
  // bounds the plan's balancedness loss by the tolerance.
  std::vector<double> best_max(L);
  double budget = 0;
  for (int l = 0; l < L; ++l) {
    best_max[l] = max_gpu_load(load[l], best[l], o.num_gpus);
    budget += best_max[l];
  }
  budget /= 1.0 - o.tolerance;
  // Each layer: its trajectories, searched down to floors at and below its even share of the
  // tolerance (cheap layers fund the others) and later to its allocated targets, and the aligned
  // best plan as its last point.
  struct Layer {
    std::vector<Trajectory> trs;  // one per search (floor or target, variant)
    std::vector<int> aligned;
    std::vector<int> moves;    // per point: the trajectories' points and the aligned plan
    std::vector<double> maxima;
    std::vector<std::pair<int, int>> src;  // per point: (trajectory, operations); -1: aligned
    std::vector<int> hull;     // points on the lower convex hull of (moves, max), fewest first
    size_t at = 0;             // the allocation's hull point
    int chosen = -1;           // the chosen point (off the hull when the last step needed less)
    double searched = -1;      // the target the last round searched to
  };
  std::vector<Layer> ls(L);
  auto add = [&](Layer& y, Trajectory tr) {
    y.trs.push_back(std::move(tr));
    const Trajectory& t = y.trs.back();
    for (size_t i = 0; i < t.moves.size(); ++i) {
      y.moves.push_back(t.moves[i]);
      y.maxima.push_back(t.maxima[i]);
      y.src.push_back({static_cast<int>(y.trs.size()) - 1, static_cast<int>(i)});
    }
  };
  // Lower convex hull of the layer's points (moves, max), fewest moves first.
  auto build_hull = [](Layer& y) {
    int n = static_cast<int>(y.moves.size());
    std::vector<int> idx(n);
    for (int i = 0; i < n; ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](int p, int q) {
      return y.moves[p] < y.moves[q] || (y.moves[p] == y.moves[q] && y.maxima[p] < y.maxima[q]);
    });
    auto slope = [&](int p, int q) {  // drop of the max per moved slot from p to q
      return (y.maxima[p] - y.maxima[q]) / (y.moves[q] - y.moves[p]);
    };
    y.hull.clear();
    for (int i : idx) {
      if (!y.hull.empty() && y.maxima[i] >= y.maxima[y.hull.back()]) continue;  // dominated
      while (y.hull.size() >= 2 && slope(y.hull[y.hull.size() - 2], y.hull.back()) <=
                                       slope(y.hull.back(), i))
        y.hull.pop_back();
      y.hull.push_back(i);
    }
  };
  std::vector<int> aligned_moves(L);
  for (int l = 0; l < L; ++l) {
    Layer& y = ls[l];
    y.aligned = align_layer(current[l], best[l], o.num_gpus, 1);
    aligned_moves[l] = count_moves(y.aligned, current[l]);
    for (double f : kMovementFloors)
      add(y, search_layer(load[l], current[l], best_max[l] / (1.0 - f * o.tolerance),
                          aligned_moves[l], o.num_gpus, Variant::kGreedy));
    y.moves.push_back(aligned_moves[l]);
    y.maxima.push_back(best_max[l]);
    y.src.push_back({-1, 0});
  }
  // Greedy over layers: the hull step with the largest drop of the max per move first, until
  // the budget holds. Hull slopes fall along each layer, so this is the cheapest way there.
  // Returns each layer's chosen point.
  auto allocate = [&] {
    double total = 0;
    for (Layer& y : ls) {
      build_hull(y);
      y.at = 0, y.chosen = -1;
      total += y.maxima[y.hull[0]];
    }
    auto step_slope = [&](int l) {
      const Layer& y = ls[l];
      int p = y.hull[y.at], q = y.hull[y.at + 1];
      return (y.maxima[p] - y.maxima[q]) / (y.moves[q] - y.moves[p]);
    };
    std::priority_queue<std::pair<double, int>> heap;
    for (int l = 0; l < L; ++l)
      if (ls[l].hull.size() > 1) heap.push({step_slope(l), l});
    while (total > budget && !heap.empty()) {
      int l = heap.top().second;
      heap.pop();
      Layer& y = ls[l];
      double before = y.maxima[y.hull[y.at]];
      ++y.at;
      total += y.maxima[y.hull[y.at]] - before;
      if (y.at + 1 < y.hull.size()) heap.push({step_slope(l), l});
      if (total <= budget) {
        // The last step may overshoot: any point of this layer that fits with fewer moves will
        // do.
        double allowed = budget - (total - y.maxima[y.hull[y.at]]);
        int pick = y.hull[y.at];
        for (size_t i = 0; i < y.moves.size(); ++i)
          if (y.maxima[i] <= allowed && y.moves[i] < y.moves[pick]) pick = static_cast<int>(i);
        y.chosen = pick;
      }
    }
    for (Layer& y : ls)
      if (y.chosen < 0) y.chosen = y.hull[y.at];
  };
  allocate();
  // Each allocation gives every layer an exact target (its chosen point's maximum); the searches
  // in every variant go exactly there (the first searches' floors only bracket it), and the
  // allocation is redone with their points added.
  // Not when scaling (slots without predecessor): there the rounds moved 48.1% / 61.3% instead of
  // 48.2% / 61.5% (shrinking 320/64 -> 288/32, growing back), at 4-5x the time.
  bool scaling = false;
  for (const auto& row : current) scaling |= std::count(row.begin(), row.end(), -1) > 0;
  for (int round = 0; round < (scaling ? 0 : kTargetRounds); ++round) {
    for (int l = 0; l < L; ++l) {
      Layer& y = ls[l];
      if (y.moves[y.chosen] == 0 || y.src[y.chosen].first < 0) continue;
      // The searches are deterministic: a layer whose target has not changed since its last
      // round (at 320/64 about half of them in the second round) has their points already.
      if (y.maxima[y.chosen] == y.searched) continue;
      y.searched = y.maxima[y.chosen];
      for (const TargetSearch& ts : kTargetSearches)
        add(y, search_layer(load[l], current[l], y.maxima[y.chosen], aligned_moves[l],
                            o.num_gpus, ts.variant, ts.pilot));
    }
    allocate();
  }
  std::vector<std::vector<int>> rows(L);
  for (int l = 0; l < L; ++l) {
    const Layer& y = ls[l];
    auto [t, n] = y.src[y.chosen];
    rows[l] = t >= 0 ? replay(y.trs[t], n) : y.aligned;
  }
  return rows;
}

}  // namespace eep::eplb
