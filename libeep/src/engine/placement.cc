#include "eep/placement.h"

#include <string>

#include "eep/common.h"

namespace eep {

void Placement::finalize() {
  EEP_CHECK(num_ranks > 0, ErrorCode::kInvalidArgument, "placement: no ranks");
  EEP_CHECK(num_slots > 0 && num_slots % num_ranks == 0, ErrorCode::kInvalidArgument,
            "placement: " + std::to_string(num_slots) + " slots do not divide over " +
                std::to_string(num_ranks) + " ranks");
  EEP_CHECK(num_slots >= num_experts, ErrorCode::kInvalidArgument,
            "placement: fewer slots than experts");
  EEP_CHECK(static_cast<int>(phy2log.size()) == num_layers, ErrorCode::kInvalidArgument,
            "placement: phy2log has " + std::to_string(phy2log.size()) + " layers, model has " +
                std::to_string(num_layers));
  log2phy.assign(num_layers, std::vector<std::vector<int>>(num_experts));
  for (int l = 0; l < num_layers; ++l) {
    EEP_CHECK(static_cast<int>(phy2log[l].size()) == num_slots, ErrorCode::kInvalidArgument,
              "placement: layer " + std::to_string(l) + " has " +
                  std::to_string(phy2log[l].size()) + " slots, expected " +
                  std::to_string(num_slots));
    for (int s = 0; s < num_slots; ++s) {
      int e = phy2log[l][s];
      EEP_CHECK(e >= 0 && e < num_experts, ErrorCode::kInvalidArgument,
                "placement: layer " + std::to_string(l) + " slot " + std::to_string(s) +
                    " holds expert " + std::to_string(e) + ", out of range");
      log2phy[l][e].push_back(s);
    }
    for (int e = 0; e < num_experts; ++e)
      EEP_CHECK(!log2phy[l][e].empty(), ErrorCode::kInvalidArgument,
                "placement: layer " + std::to_string(l) + " has no replica of expert " +
                    std::to_string(e));
  }
}

nlohmann::json Placement::to_json() const {
  // The same shape as an eep-eplb plan, so `eep-scale status --plan` feeds `eep-eplb --current`.
  return {{"num_layers", num_layers}, {"num_logical_experts", num_experts},
          {"num_slots", num_slots},   {"num_gpus", num_ranks},
          {"num_ranks", num_ranks},   {"phy2log", phy2log}};
}

Placement Placement::from_json(const nlohmann::json& j, int num_experts) {
  EEP_CHECK(j.is_object() && j.contains("phy2log") && j["phy2log"].is_array(),
            ErrorCode::kInvalidArgument, "placement: missing phy2log");
  Placement p;
  p.num_experts = num_experts;
  try {
    p.phy2log = j["phy2log"].get<std::vector<std::vector<int>>>();
    p.num_ranks = j.contains("num_ranks") ? j["num_ranks"].get<int>()
                                           : j.value("num_gpus", 0);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kInvalidArgument, std::string("placement: ") + e.what());
  }
  p.num_layers = static_cast<int>(p.phy2log.size());
  p.num_slots = p.phy2log.empty() ? 0 : static_cast<int>(p.phy2log[0].size());
  p.finalize();
  return p;
}

Placement Placement::round_robin(int num_layers, int num_experts, int num_slots, int num_ranks) {
  EEP_CHECK(num_ranks > 0 && num_slots > 0 && num_slots % num_ranks == 0,
            ErrorCode::kInvalidArgument,
            "placement: " + std::to_string(num_slots) + " slots do not divide over " +
                std::to_string(num_ranks) + " ranks");
  Placement p;
  p.num_layers = num_layers;
  p.num_experts = num_experts;
  p.num_slots = num_slots;
  p.num_ranks = num_ranks;
  // Slot order walks ranks first (slot k*ranks + r style), so consecutive experts land on
  // different ranks and a replica of expert e (slot >= num_experts) lands away from the original
  // whenever slots_per_rank allows.
  std::vector<int> row(num_slots);
  int spr = num_slots / num_ranks;
  for (int i = 0; i < num_slots; ++i) {
    int rank = i % num_ranks;
    int local = i / num_ranks;
    row[rank * spr + local] = i % num_experts;
  }
  p.phy2log.assign(num_layers, row);
  p.finalize();
  return p;
}

}  // namespace eep
