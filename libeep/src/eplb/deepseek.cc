// DeepSeek's published EPLB (github.com/deepseek-ai/eplb), reimplemented per layer for
// compatibility: balanced packing of groups onto nodes, replication of the expert with the
// highest load per replica, balanced packing of replicas onto GPUs. Arithmetic is float, as the
// reference works on float32 tensors, so near-ties break the same way. On exact ties the
// reference's order is unspecified (torch sort/max); here the lower index wins.
#include <algorithm>
#include <numeric>
#include <vector>

#include "eep/common.h"
#include "eplb/internal.h"

namespace eep::eplb {

namespace {

// Packs n items onto num_packs packs of exactly n / num_packs items each: heaviest first, each
// onto the lightest pack that still has room (lowest index on ties).
void balanced_packing(const std::vector<float>& w, int num_packs, std::vector<int>& pack,
                      std::vector<int>& rank) {
  int n = static_cast<int>(w.size());
  int per_pack = n / num_packs;
  pack.assign(n, 0);
  rank.assign(n, 0);
  if (per_pack == 1) {
    std::iota(pack.begin(), pack.end(), 0);
    return;
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return w[a] > w[b]; });
  std::vector<float> pack_w(num_packs, 0.f);
  std::vector<int> pack_n(num_packs, 0);
  for (int item : order) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p)
      if (pack_n[p] < per_pack && (best < 0 || pack_w[p] < pack_w[best])) best = p;
    pack[item] = best;
    rank[item] = pack_n[best]++;
    pack_w[best] += w[item];
  }
}

// Replicates num_phy - n extra slots, each to the expert with the highest load per replica.
// phy2log[i] = i for the first n slots.
void replicate(const std::vector<float>& w, int num_phy, std::vector<int>& phy2log,
               std::vector<int>& cnt) {
  int n = static_cast<int>(w.size());
  phy2log.resize(num_phy);
  std::iota(phy2log.begin(), phy2log.begin() + n, 0);
  cnt.assign(n, 1);
  for (int i = n; i < num_phy; ++i) {
    int best = 0;
    float best_v = w[0] / static_cast<float>(cnt[0]);
    for (int e = 1; e < n; ++e) {
      float v = w[e] / static_cast<float>(cnt[e]);
      if (v > best_v) best = e, best_v = v;
    }
    phy2log[i] = best;
    ++cnt[best];
  }
}

}  // namespace

std::vector<int> deepseek_layer(const std::vector<double>& weight, int num_slots, int num_groups,
                                int num_nodes, int num_gpus) {
  int num_experts = static_cast<int>(weight.size());
  int group_size = num_experts / num_groups;
  int groups_per_node = num_groups / num_nodes;
  int experts_per_node = num_experts / num_nodes;
  int slots_per_node = num_slots / num_nodes;
  int gpus_per_node = num_gpus / num_nodes;
  int slots_per_gpu = num_slots / num_gpus;

  std::vector<float> w(weight.begin(), weight.end());
  // Step 1: groups onto nodes. mlog ("middle" logical id) numbers experts node by node.
  std::vector<float> group_w(num_groups, 0.f);
  for (int e = 0; e < num_experts; ++e) group_w[e / group_size] += w[e];
  std::vector<int> gpack, grank;
  balanced_packing(group_w, num_nodes, gpack, grank);
  std::vector<int> mlog2log(num_experts);
  for (int e = 0; e < num_experts; ++e) {
    int g = e / group_size;
    int mlog = (gpack[g] * groups_per_node + grank[g]) * group_size + e % group_size;
    mlog2log[mlog] = e;
  }

  std::vector<int> out(num_slots);
  std::vector<float> node_w(experts_per_node), phy_w(slots_per_node);
  std::vector<int> phy2mlog, mcnt, pack, rank;
  for (int node = 0; node < num_nodes; ++node) {
    // Step 2: replicas within the node.
    for (int i = 0; i < experts_per_node; ++i)
      node_w[i] = w[mlog2log[node * experts_per_node + i]];
    replicate(node_w, slots_per_node, phy2mlog, mcnt);
    // Step 3: replicas onto the node's GPUs.
    for (int i = 0; i < slots_per_node; ++i)
      phy_w[i] = node_w[phy2mlog[i]] / static_cast<float>(mcnt[phy2mlog[i]]);
    balanced_packing(phy_w, gpus_per_node, pack, rank);
    for (int i = 0; i < slots_per_node; ++i) {
      int pphy = pack[i] * slots_per_gpu + rank[i];
      out[node * slots_per_node + pphy] = mlog2log[node * experts_per_node + phy2mlog[i]];
    }
  }
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
  std::vector<std::vector<int>> rows(load.size());
  for (size_t l = 0; l < load.size(); ++l)
    rows[l] = deepseek_layer(load[l], num_slots, o.num_groups, o.num_nodes, num_gpus);
  return make_plan(std::move(rows), static_cast<int>(load[0].size()), num_gpus);
}

}  // namespace eep::eplb
