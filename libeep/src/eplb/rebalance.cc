// Entry point: input checks and the choice between the algorithms and the movement-aware mode.
#include <cmath>
#include <string>

#include "eep/common.h"
#include "eplb/internal.h"

namespace eep::eplb {

namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw Error(ErrorCode::kInvalidArgument, message);
}

std::string str(long long v) { return std::to_string(v); }

}  // namespace

void check_inputs(const std::vector<std::vector<double>>& load, const Options& o) {
  if (load.empty()) invalid("load matrix is empty");
  size_t num_experts = load[0].size();
  if (num_experts == 0) invalid("load matrix has no experts");
  for (size_t l = 0; l < load.size(); ++l) {
    if (load[l].size() != num_experts)
      invalid("ragged load matrix: layer " + str(l) + " has " + str(load[l].size()) +
              " experts, layer 0 has " + str(num_experts));
    for (size_t e = 0; e < num_experts; ++e) {
      double v = load[l][e];
      if (!std::isfinite(v))
        invalid("load of layer " + str(l) + " expert " + str(e) + " is not finite");
      if (v < 0) invalid("load of layer " + str(l) + " expert " + str(e) + " is negative");
    }
  }
  int n = static_cast<int>(num_experts);
  if (o.num_gpus <= 0) invalid("--gpus must be positive");
  if (o.num_nodes <= 0) invalid("--nodes must be positive");
  if (o.num_groups <= 0) invalid("--groups must be positive");
  if (o.num_slots <= 0) invalid("--slots must be positive");
  if (o.num_slots % o.num_gpus != 0)
    invalid("slots (" + str(o.num_slots) + ") not divisible by GPUs (" + str(o.num_gpus) + ")");
  if (o.num_slots < n)
    invalid("fewer slots (" + str(o.num_slots) + ") than experts (" + str(n) + ")");
  if (n % o.num_groups != 0)
    invalid("groups (" + str(o.num_groups) + ") do not divide experts (" + str(n) + ")");
  if (o.num_gpus % o.num_nodes != 0)
    invalid("nodes (" + str(o.num_nodes) + ") do not divide GPUs (" + str(o.num_gpus) + ")");
  if (!(o.tolerance >= 0 && o.tolerance < 1)) invalid("--tolerance must be in [0, 1)");
  if (o.current) {
    const Plan& c = *o.current;
    if (c.num_layers != static_cast<int>(load.size()) || c.num_logical != n)
      invalid("current plan is " + str(c.num_layers) + " layers x " + str(c.num_logical) +
              " experts, the load " + str(load.size()) + " x " + str(n));
    check_keep(o.keep, c.num_gpus, o.num_gpus);
  } else if (!o.keep.empty()) {
    invalid("--keep needs --current");
  }
}

Plan rebalance(const std::vector<std::vector<double>>& load, const Options& o) {
  check_inputs(load, o);
  int num_layers = static_cast<int>(load.size());
  int num_experts = static_cast<int>(load[0].size());
  std::vector<std::vector<int>> rows(num_layers, std::vector<int>(o.num_slots));
  if (o.algo == Algo::kDeepseek) {
    bool hier = o.num_groups % o.num_nodes == 0;
    for (int l = 0; l < num_layers; ++l)
      deepseek_layer(load[l].data(), num_experts, o.num_slots, hier ? o.num_groups : 1,
                     hier ? o.num_nodes : 1, o.num_gpus, rows[l].data());
  } else {
    for (int l = 0; l < num_layers; ++l) default_layer(load[l].data(), num_experts, o, rows[l].data());
  }
  if (o.current) {
    // Movement-aware. With another GPU or slot count (or GPUs relabelled by keep) the current
    // plan is first projected onto the new slots (-1 where a slot has no predecessor).
    const Plan& c = *o.current;
    auto keep = keep_or_identity(o.keep, c.num_gpus, o.num_gpus);
    bool same = c.num_gpus == o.num_gpus && c.num_slots == o.num_slots;
    for (int g = 0; g < o.num_gpus && same; ++g) same = keep[g] == g;
    std::vector<std::vector<int>> proj(num_layers);
    for (int l = 0; l < num_layers; ++l)
      proj[l] = same ? c.phy2log[l]
                     : project_layer(c.phy2log[l], c.num_gpus, o.num_slots, o.num_gpus, keep);
    if (o.algo == Algo::kDefault) {
      rows = movement_rows(load, proj, rows, o);
    } else {
      for (int l = 0; l < num_layers; ++l) rows[l] = align_layer(proj[l], rows[l], o.num_gpus, 1);
    }
  }
  return make_plan(std::move(rows), num_experts, o.num_gpus);
}

}  // namespace eep::eplb
