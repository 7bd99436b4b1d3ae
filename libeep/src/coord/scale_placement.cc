#include "coord/scale_placement.h"

#include <chrono>

#include "eep/common.h"
#include "eep/eplb.h"

namespace eep {

namespace {

eplb::Plan to_plan(const Placement& p) {
  eplb::Plan plan;
  plan.num_layers = p.num_layers;
  plan.num_logical = p.num_experts;
  plan.num_slots = p.num_slots;
  plan.num_gpus = p.num_ranks;
  plan.phy2log = p.phy2log;
  plan.finalize();
  return plan;
}

// Slots of `to` whose expert differs from what the old rank it inherits held in that slot.
int64_t moved(const Placement& from, const Placement& to, const std::vector<int>& keep) {
  int64_t n = 0;
  const int spr = to.slots_per_rank(), old_spr = from.slots_per_rank();
  for (int l = 0; l < to.num_layers; ++l)
    for (int s = 0; s < to.num_slots; ++s) {
      const int r = s / spr, i = s % spr;
      n += !(keep[r] >= 0 && i < old_spr && from.phy2log[l][keep[r] * old_spr + i] == to.phy2log[l][s]);
    }
  return n;
}

}  // namespace

ScalePlacement plan_scale(const Placement& old, const std::vector<int>& keep, int num_slots,
                          const std::vector<std::vector<int64_t>>& load) {
  const auto t0 = Clock::now();
  ScalePlacement out;
  Placement resized = Placement::resize(old, keep, num_slots);
  std::vector<std::vector<double>> dload(load.size());
  double total = 0;
  for (size_t l = 0; l < load.size(); ++l)
    for (int64_t x : load[l]) {
      dload[l].push_back(static_cast<double>(x));
      total += static_cast<double>(x);
    }
  if (total <= 0) {
    out.placement = std::move(resized);
    out.policy = "resize";
    out.why = "no expert load recorded yet";
  } else {
    try {
      EEP_CHECK(static_cast<int>(load.size()) == old.num_layers, ErrorCode::kInvalidArgument,
                "the load has " + std::to_string(load.size()) + " layers, the model " +
                    std::to_string(old.num_layers));
      const eplb::Plan current = to_plan(old);
      eplb::Options o;
      o.num_gpus = static_cast<int>(keep.size());
      o.num_slots = num_slots;
      o.current = &current;
      o.keep = keep;
      eplb::Plan plan = eplb::rebalance(dload, o);
      Placement p = Placement::from_json(plan.to_json(), old.num_experts);  // finalize() checks
      EEP_CHECK(p.num_layers == old.num_layers && p.num_ranks == o.num_gpus &&
                    p.num_slots == num_slots,
                ErrorCode::kInternal, "eplb returned a plan of another shape");
      out.balancedness = eplb::balancedness(dload, plan);
      out.resize_balancedness = eplb::balancedness(dload, to_plan(resized));
      out.placement = std::move(p);
      out.policy = "eplb";
    } catch (const std::exception& e) {
      out.placement = std::move(resized);
      out.policy = "resize";
      out.why = std::string("eplb failed: ") + e.what();
    }
  }
  if (out.policy == "resize" && total > 0) {
    try {
      out.balancedness = out.resize_balancedness = eplb::balancedness(dload, to_plan(out.placement));
    } catch (const std::exception&) {
      // A load of another shape: no balancedness to report (why says eplb failed).
    }
  }
  out.moved_slots = moved(old, out.placement, keep);
  out.plan_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return out;
}

}  // namespace eep
