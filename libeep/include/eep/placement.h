// Expert placement as the engines use it (design.md §3): phy2log[layer][slot] names the logical
// expert each physical slot holds; slot s lives on rank s / slots_per_rank. log2phy and logcnt
// are derived. Plans from eep-eplb (eep::eplb::Plan) convert to this through JSON.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace eep {

struct Placement {
  int num_layers = 0;
  int num_experts = 0;
  int num_slots = 0;
  int num_ranks = 0;
  std::vector<std::vector<int>> phy2log;               // [layers][slots]
  std::vector<std::vector<std::vector<int>>> log2phy;  // [layers][experts][replicas]

  int slots_per_rank() const { return num_slots / num_ranks; }
  int owner(int slot) const { return slot / slots_per_rank(); }
  // Fills log2phy from phy2log and checks the shape: slots divisible by ranks, every expert
  // has at least one replica, ids in range. Throws Error(kInvalidArgument) naming the problem.
  void finalize();

  // {"phy2log": [[...]], "num_gpus": R, ...}: the eep-eplb plan shape. from_json also takes
  // "num_ranks" for R; num_experts comes from the model.
  nlohmann::json to_json() const;
  static Placement from_json(const nlohmann::json& j, int num_experts);

  // Default placement without load information: experts fill the ranks in order, and the extra
  // (redundant) slots get replicas of the least replicated experts on ranks that do not hold
  // them yet.
  static Placement round_robin(int num_layers, int num_experts, int num_slots, int num_ranks);

  // Placement for a new group size that moves as few experts as it can (the built-in policy of
  // scale operations): keep[r] is the old rank whose slots new rank r inherits (-1 for a new
  // engine). Each kept rank keeps as many of its experts as fit its new slots; experts left
  // without a replica go first to ranks with free slots that do not hold them (new engines
  // first, since they receive weights anyway); remaining free slots get extra replicas, spread
  // so no rank holds two of one expert where avoidable.
  static Placement resize(const Placement& old, const std::vector<int>& keep, int num_slots);
};

}  // namespace eep
