// Plan: shape checks, derived maps, JSON, balancedness, movement and alignment.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "eep/common.h"
#include "eep/eplb.h"
#include "eplb/internal.h"

namespace eep::eplb {

namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw Error(ErrorCode::kInvalidArgument, message);
}

void check_shape(const Plan& p) {
  if (p.num_layers <= 0) invalid("plan has no layers");
  if (p.num_logical <= 0) invalid("plan has no logical experts");
  if (p.num_gpus <= 0) invalid("plan needs at least one GPU");
  if (p.num_slots <= 0 || p.num_slots % p.num_gpus != 0)
    invalid("plan slots (" + std::to_string(p.num_slots) + ") not divisible by GPUs (" +
            std::to_string(p.num_gpus) + ")");
  if (static_cast<int>(p.phy2log.size()) != p.num_layers)
    invalid("phy2log has " + std::to_string(p.phy2log.size()) + " layers, expected " +
            std::to_string(p.num_layers));
  for (int l = 0; l < p.num_layers; ++l) {
    const auto& row = p.phy2log[l];
    if (static_cast<int>(row.size()) != p.num_slots)
      invalid("phy2log layer " + std::to_string(l) + " has " + std::to_string(row.size()) +
              " slots, expected " + std::to_string(p.num_slots));
    for (int e : row)
      if (static_cast<unsigned>(e) >= static_cast<unsigned>(p.num_logical))
        invalid("phy2log layer " + std::to_string(l) + " names expert " + std::to_string(e) +
                " outside [0, " + std::to_string(p.num_logical) + ")");
  }
  // (That every expert has a replica is checked by finalize, on log2phy's counts.)
}

}  // namespace

const char* algo_name(Algo algo) { return algo == Algo::kDeepseek ? "deepseek" : "default"; }

Algo parse_algo(const std::string& name) {
  if (name == "deepseek") return Algo::kDeepseek;
  if (name == "default") return Algo::kDefault;
  invalid("unknown algorithm '" + name + "' (deepseek|default)");
}

Log2Phy::Log2Phy(const std::vector<std::vector<int>>& phy2log, int num_logical)
    : layers_(static_cast<int>(phy2log.size())), logical_(num_logical),
      num_slots_(phy2log.empty() ? 0 : static_cast<int>(phy2log[0].size())), width_(1),
      start_(static_cast<size_t>(layers_) * (num_logical + 1)),
      slots_(static_cast<size_t>(layers_) * num_slots_) {
  std::vector<int> fill(num_logical);
  for (int l = 0; l < layers_; ++l) {
    // Counting sort of the slots by expert (stable: ascending slots per expert).
    int* start = start_.data() + static_cast<size_t>(l) * (num_logical + 1);
    int* slots = slots_.data() + static_cast<size_t>(l) * num_slots_;
    std::fill(fill.begin(), fill.end(), 0);
    for (int e : phy2log[l]) ++fill[e];
    start[0] = 0;
    for (int e = 0; e < num_logical; ++e) {
      width_ = std::max(width_, fill[e]);
      start[e + 1] = start[e] + fill[e];
      fill[e] = start[e];
    }
    for (int s = 0; s < num_slots_; ++s) slots[fill[phy2log[l][s]]++] = s;
  }
}

void Plan::finalize() {
  check_shape(*this);
  log2phy = Log2Phy(phy2log, num_logical);
  logcnt.assign(num_layers, std::vector<int>(num_logical));
  for (int l = 0; l < num_layers; ++l)
    for (int e = 0; e < num_logical; ++e) {
      logcnt[l][e] = static_cast<int>(log2phy[l][e].size());
      if (logcnt[l][e] == 0)
        invalid("phy2log layer " + std::to_string(l) + " has no replica of expert " +
                std::to_string(e));
    }
}

void Plan::validate() const {
  check_shape(*this);
  Plan derived = *this;
  derived.finalize();
  if (logcnt != derived.logcnt) invalid("logcnt disagrees with phy2log");
  if (static_cast<int>(log2phy.size()) != num_layers) invalid("log2phy has the wrong layer count");
  for (int l = 0; l < num_layers; ++l) {
    if (static_cast<int>(log2phy[l].size()) != num_logical)
      invalid("log2phy layer " + std::to_string(l) + " has the wrong expert count");
    for (int e = 0; e < num_logical; ++e) {
      auto got = log2phy[l][e], want = derived.log2phy[l][e];
      if (!std::equal(got.begin(), got.end(), want.begin(), want.end()))
        invalid("log2phy disagrees with phy2log at layer " + std::to_string(l) + " expert " +
                std::to_string(e));
    }
  }
}

nlohmann::json Log2Phy::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (int l = 0; l < layers_; ++l) {
    nlohmann::json layer = nlohmann::json::array();
    for (int e = 0; e < logical_; ++e) {
      auto r = (*this)[l][e];
      std::vector<int> row(width_, -1);
      std::copy(r.begin(), r.end(), row.begin());
      layer.push_back(std::move(row));
    }
    j.push_back(std::move(layer));
  }
  return j;
}

nlohmann::json Plan::to_json() const {
  return {{"num_layers", num_layers}, {"num_logical_experts", num_logical},
          {"num_slots", num_slots},   {"num_gpus", num_gpus},
          {"phy2log", phy2log},       {"logcnt", logcnt},
          {"log2phy", log2phy.to_json()}};
}

Plan Plan::from_json(const nlohmann::json& j) {
  if (!j.is_object()) invalid("plan is not a JSON object");
  if (!j.contains("phy2log")) invalid("plan has no phy2log");
  if (!j.contains("num_gpus")) invalid("plan has no num_gpus");
  Plan p;
  try {
    p.phy2log = j.at("phy2log").get<std::vector<std::vector<int>>>();
    p.num_gpus = j.at("num_gpus").get<int>();
  } catch (const nlohmann::json::exception&) {
    invalid("plan phy2log must be an array of integer arrays and num_gpus an integer");
  }
  p.num_layers = static_cast<int>(p.phy2log.size());
  if (p.num_layers == 0) invalid("plan phy2log is empty");
  p.num_slots = static_cast<int>(p.phy2log[0].size());
  int max_id = -1;
  for (const auto& row : p.phy2log)
    for (int e : row) max_id = std::max(max_id, e);
  p.num_logical = max_id + 1;
  try {
    if (j.contains("num_logical_experts")) p.num_logical = j.at("num_logical_experts").get<int>();
    if (j.contains("num_slots") && j.at("num_slots").get<int>() != p.num_slots)
      invalid("plan num_slots disagrees with phy2log");
    if (j.contains("num_layers") && j.at("num_layers").get<int>() != p.num_layers)
      invalid("plan num_layers disagrees with phy2log");
  } catch (const nlohmann::json::exception&) {
    invalid("plan counts must be integers");
  }
  p.finalize();
  try {
    if (j.contains("logcnt") &&
        j.at("logcnt").get<std::vector<std::vector<int>>>() != p.logcnt)
      invalid("plan logcnt disagrees with phy2log");
  } catch (const nlohmann::json::exception&) {
    invalid("plan logcnt must be an array of integer arrays");
  }
  return p;
}

Plan make_plan(std::vector<std::vector<int>> phy2log, int num_logical, int num_gpus) {
  Plan p;
  p.num_layers = static_cast<int>(phy2log.size());
  p.num_slots = p.num_layers > 0 ? static_cast<int>(phy2log[0].size()) : 0;
  p.num_logical = num_logical;
  p.num_gpus = num_gpus;
  p.phy2log = std::move(phy2log);
  p.finalize();
  return p;
}

Plan uniform_plan(int num_layers, int num_experts, int num_slots, int num_gpus) {
  if (num_layers <= 0 || num_experts <= 0 || num_gpus <= 0)
    invalid("uniform plan needs layers, experts and GPUs");
  if (num_slots % num_gpus != 0) invalid("slots not divisible by GPUs");
  if (num_slots < num_experts) invalid("fewer slots than experts");
  // Slot s holds expert s % E: consecutive slots differ, so one GPU (k consecutive slots) holds a
  // duplicate only when k > E, which no placement can avoid. Replicas (the wrap-around) go to the
  // first experts and land on the GPUs after the ones holding their first copy.
  std::vector<int> row(num_slots);
  for (int s = 0; s < num_slots; ++s) row[s] = s % num_experts;
  return make_plan(std::vector<std::vector<int>>(num_layers, row), num_experts, num_gpus);
}

std::vector<double> gpu_loads(const std::vector<double>& layer_load,
                              const std::vector<int>& phy2log, int num_gpus) {
  std::vector<int> cnt(layer_load.size(), 0);
  for (int e : phy2log) ++cnt[e];
  std::vector<double> loads(num_gpus, 0.0);
  int per_gpu = static_cast<int>(phy2log.size()) / num_gpus;
  for (size_t s = 0; s < phy2log.size(); ++s) {
    int e = phy2log[s];
    loads[s / per_gpu] += layer_load[e] / cnt[e];
  }
  return loads;
}

double balancedness(const std::vector<std::vector<double>>& load, const Plan& plan,
                    std::vector<double>* per_layer) {
  if (static_cast<int>(load.size()) != plan.num_layers)
    invalid("load has " + std::to_string(load.size()) + " layers but the plan " +
            std::to_string(plan.num_layers));
  double sum_mean = 0, sum_max = 0;
  if (per_layer) per_layer->assign(plan.num_layers, 1.0);
  for (int l = 0; l < plan.num_layers; ++l) {
    if (static_cast<int>(load[l].size()) != plan.num_logical)
      invalid("load layer " + std::to_string(l) + " has " + std::to_string(load[l].size()) +
              " experts but the plan " + std::to_string(plan.num_logical));
    auto loads = gpu_loads(load[l], plan.phy2log[l], plan.num_gpus);
    double mx = *std::max_element(loads.begin(), loads.end());
    double mean = 0;
    for (double x : loads) mean += x;
    mean /= plan.num_gpus;
    sum_mean += mean;
    sum_max += mx;
    if (per_layer && mx > 0) (*per_layer)[l] = mean / mx;
  }
  return sum_max > 0 ? sum_mean / sum_max : 1.0;
}

int64_t duplicate_replicas(const Plan& plan) {
  int64_t dups = 0;
  int k = plan.slots_per_gpu();
  for (const auto& row : plan.phy2log) {
    for (int g = 0; g < plan.num_gpus; ++g) {
      std::vector<int> items(row.begin() + g * k, row.begin() + (g + 1) * k);
      std::sort(items.begin(), items.end());
      for (int i = 1; i < k; ++i) dups += items[i] == items[i - 1];
    }
  }
  return dups;
}

std::vector<int> keep_or_identity(const std::vector<int>& keep, int from_gpus, int to_gpus) {
  if (!keep.empty()) return keep;
  std::vector<int> k(to_gpus);
  for (int g = 0; g < to_gpus; ++g) k[g] = g < from_gpus ? g : -1;
  return k;
}

std::vector<int> project_layer(const std::vector<int>& from, int from_gpus, int to_slots,
                               int to_gpus, const std::vector<int>& keep) {
  int kf = static_cast<int>(from.size()) / from_gpus, kt = to_slots / to_gpus;
  std::vector<int> out(to_slots, -1);
  for (int g = 0; g < to_gpus; ++g)
    if (keep[g] >= 0)
      for (int i = 0; i < std::min(kf, kt); ++i) out[g * kt + i] = from[keep[g] * kf + i];
  return out;
}

void check_keep(const std::vector<int>& keep, int from_gpus, int to_gpus) {
  if (keep.empty()) return;
  if (static_cast<int>(keep.size()) != to_gpus)
    invalid("--keep lists " + std::to_string(keep.size()) + " GPUs, the plan has " +
            std::to_string(to_gpus));
  std::vector<char> seen(from_gpus, 0);
  for (int g : keep) {
    if (g < -1 || g >= from_gpus)
      invalid("--keep names GPU " + std::to_string(g) + " outside [-1, " +
              std::to_string(from_gpus) + ")");
    if (g >= 0 && seen[g]++) invalid("--keep names GPU " + std::to_string(g) + " twice");
  }
}

Movement movement(const Plan& from, const Plan& to, int64_t expert_bytes,
                  const std::vector<int>& keep) {
  if (from.num_layers != to.num_layers || from.num_logical != to.num_logical)
    invalid("plans differ in shape (layers or experts)");
  check_keep(keep, from.num_gpus, to.num_gpus);
  auto k = keep_or_identity(keep, from.num_gpus, to.num_gpus);
  Movement m;
  for (int l = 0; l < from.num_layers; ++l) {
    auto old = project_layer(from.phy2log[l], from.num_gpus, to.num_slots, to.num_gpus, k);
    for (int s = 0; s < to.num_slots; ++s) m.moved_slots += old[s] != to.phy2log[l][s];
  }
  m.moved_bytes = m.moved_slots * expert_bytes;
  return m;
}

namespace {

// Minimum-cost perfect assignment (Hungarian method with potentials), cost[n][n]; returns
// col_of_row.
std::vector<int> assign_min_cost(const std::vector<std::vector<double>>& cost) {
  int n = static_cast<int>(cost.size());
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0), v(n + 1, 0);
  std::vector<int> p(n + 1, 0), way(n + 1, 0);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::vector<double> minv(n + 1, inf);
    std::vector<char> used(n + 1, 0);
    do {
      used[j0] = 1;
      int i0 = p[j0], j1 = 0;
      double delta = inf;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        double cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  std::vector<int> col_of_row(n, -1);
  for (int j = 1; j <= n; ++j) col_of_row[p[j] - 1] = j - 1;
  return col_of_row;
}

// Number of experts (with multiplicity) two GPUs' slot lists share.
int overlap(const int* a, const int* b, int k) {
  std::vector<int> x(a, a + k), y(b, b + k);
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  int i = 0, j = 0, n = 0;
  while (i < k && j < k) {
    if (x[i] == y[j]) {
      ++n, ++i, ++j;
    } else if (x[i] < y[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return n;
}

}  // namespace

void place_like(const int* old_slots, const int* new_items, int k, int* out) {
  // Experts already in a slot of this GPU stay there; the rest fill the freed slots in order.
  std::vector<int> rest(new_items, new_items + k);
  std::vector<char> done(k, 0);
  for (int s = 0; s < k; ++s) {
    auto it = std::find(rest.begin(), rest.end(), old_slots[s]);
    if (it != rest.end()) {
      out[s] = *it;
      done[s] = 1;
      rest.erase(it);
    }
  }
  size_t next = 0;
  for (int s = 0; s < k; ++s)
    if (!done[s]) out[s] = rest[next++];
}

std::vector<int> align_layer(const std::vector<int>& from, const std::vector<int>& to,
                             int num_gpus, int num_nodes) {
  int k = static_cast<int>(from.size()) / num_gpus;
  int gpn = num_gpus / num_nodes;
  std::vector<std::vector<int>> ov(num_gpus, std::vector<int>(num_gpus));
  for (int a = 0; a < num_gpus; ++a)
    for (int b = 0; b < num_gpus; ++b) ov[a][b] = overlap(&from[a * k], &to[b * k], k);
  // Within each (old node, new node) pair, the best matching of GPUs; then the best matching of
  // nodes. With one node this is a plain matching of GPUs.
  std::vector<std::vector<std::vector<int>>> match(num_nodes,
                                                   std::vector<std::vector<int>>(num_nodes));
  std::vector<std::vector<double>> node_cost(num_nodes, std::vector<double>(num_nodes));
  for (int m = 0; m < num_nodes; ++m) {
    for (int n = 0; n < num_nodes; ++n) {
      std::vector<std::vector<double>> c(gpn, std::vector<double>(gpn));
      for (int i = 0; i < gpn; ++i)
        for (int j = 0; j < gpn; ++j) c[i][j] = -ov[m * gpn + i][n * gpn + j];
      match[m][n] = assign_min_cost(c);
      double total = 0;
      for (int i = 0; i < gpn; ++i) total += c[i][match[m][n][i]];
      node_cost[m][n] = total;
    }
  }
  auto node_match = assign_min_cost(node_cost);
  std::vector<int> out(from.size());
  for (int m = 0; m < num_nodes; ++m) {
    int n = node_match[m];
    for (int i = 0; i < gpn; ++i) {
      int a = m * gpn + i, b = n * gpn + match[m][n][i];
      place_like(&from[a * k], &to[b * k], k, &out[a * k]);
    }
  }
  return out;
}

Plan align_to(const Plan& from, const Plan& to, int num_nodes) {
  if (from.num_layers != to.num_layers || from.num_slots != to.num_slots ||
      from.num_gpus != to.num_gpus || from.num_logical != to.num_logical)
    invalid("plans differ in shape (layers, slots, GPUs or experts)");
  if (num_nodes <= 0 || to.num_gpus % num_nodes != 0) num_nodes = 1;
  std::vector<std::vector<int>> rows(to.num_layers);
  for (int l = 0; l < to.num_layers; ++l)
    rows[l] = align_layer(from.phy2log[l], to.phy2log[l], to.num_gpus, num_nodes);
  return make_plan(std::move(rows), to.num_logical, to.num_gpus);
}

}  // namespace eep::eplb
