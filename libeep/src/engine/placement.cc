#include "eep/placement.h"

#include <algorithm>
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
  // A resize from nothing: every rank is new, experts fill ranks in order, extra slots get
  // replicas on ranks that do not hold that expert yet.
  Placement none;
  none.num_layers = num_layers;
  none.num_experts = num_experts;
  none.num_slots = 1;
  none.num_ranks = 1;
  return resize(none, std::vector<int>(num_ranks, -1), num_slots);
}

Placement Placement::resize(const Placement& old, const std::vector<int>& keep, int num_slots) {
  const int num_ranks = static_cast<int>(keep.size());
  EEP_CHECK(num_ranks > 0 && num_slots % num_ranks == 0 && num_slots >= old.num_experts,
            ErrorCode::kInvalidArgument,
            "placement: " + std::to_string(num_slots) + " slots do not fit " +
                std::to_string(num_ranks) + " ranks and " + std::to_string(old.num_experts) +
                " experts");
  const int spr = num_slots / num_ranks;
  const int old_spr = old.slots_per_rank();
  Placement p;
  p.num_layers = old.num_layers;
  p.num_experts = old.num_experts;
  p.num_slots = num_slots;
  p.num_ranks = num_ranks;
  p.phy2log.assign(old.num_layers, std::vector<int>(num_slots, -1));
  for (int l = 0; l < old.num_layers; ++l) {
    std::vector<std::vector<int>> held(num_ranks);  // experts per new rank
    std::vector<int> replicas(old.num_experts, 0);
    auto holds = [&](int r, int e) {
      return std::find(held[r].begin(), held[r].end(), e) != held[r].end();
    };
    // 1. Kept ranks keep what fits, distinct experts first.
    for (int r = 0; r < num_ranks; ++r) {
      if (keep[r] < 0) continue;
      for (int s = keep[r] * old_spr; s < (keep[r] + 1) * old_spr; ++s) {
        int e = old.phy2log[l][s];
        if (static_cast<int>(held[r].size()) < spr && !holds(r, e)) {
          held[r].push_back(e);
          ++replicas[e];
        }
      }
    }
    // A kept rank over-full with first replicas is fine; but experts with no replica anywhere
    // must find a slot. Free slots: new engines first, then the emptiest kept ranks.
    std::vector<int> order(num_ranks);
    for (int r = 0; r < num_ranks; ++r) order[r] = r;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      if ((keep[a] < 0) != (keep[b] < 0)) return keep[a] < 0;
      return held[a].size() < held[b].size();
    });
    for (int e = 0; e < old.num_experts; ++e) {
      if (replicas[e] > 0) continue;
      int target = -1;
      for (int r : order)
        if (static_cast<int>(held[r].size()) < spr && !holds(r, e)) { target = r; break; }
      if (target < 0) {
        // Every rank with room holds it already or is full: take a slot from the rank holding
        // the most replicated expert.
        for (int r : order) {
          for (auto& x : held[r]) {
            if (replicas[x] > 1 && !holds(r, e)) {
              --replicas[x];
              x = e;
              target = r;
              break;
            }
          }
          if (target >= 0) break;
        }
        EEP_CHECK(target >= 0, ErrorCode::kInternal, "placement: no slot for an expert");
      } else {
        held[target].push_back(e);
      }
      ++replicas[e];
    }
    // 2. Remaining free slots: extra replicas of the least replicated experts, never twice on
    // one rank when avoidable.
    for (int r = 0; r < num_ranks; ++r) {
      while (static_cast<int>(held[r].size()) < spr) {
        int best = -1;
        for (int e = 0; e < old.num_experts; ++e)
          if (!holds(r, e) && (best < 0 || replicas[e] < replicas[best])) best = e;
        if (best < 0) best = 0;  // more slots per rank than experts: duplicates are unavoidable
        held[r].push_back(best);
        ++replicas[best];
      }
      for (int i = 0; i < spr; ++i) p.phy2log[l][r * spr + i] = held[r][i];
    }
  }
  p.finalize();
  return p;
}

}  // namespace eep
