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

  // Round-robin default: slot s holds expert s % num_experts, with replicas of the first
  // (num_slots - num_experts) experts spread so no rank holds two replicas of one expert where
  // avoidable.
  static Placement round_robin(int num_layers, int num_experts, int num_slots, int num_ranks);
};

}  // namespace eep
