#include <algorithm>
#include <map>
#include <set>

#include "eep/common.h"
#include "eep/elastic.h"

namespace eep {

std::vector<int64_t> Transition::union_members() const {
  std::vector<int64_t> out = old_members;
  for (int64_t e : new_members)
    if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
  return out;
}

namespace {
int index_of(const std::vector<int64_t>& v, int64_t e) {
  auto it = std::find(v.begin(), v.end(), e);
  return it == v.end() ? -1 : static_cast<int>(it - v.begin());
}
}  // namespace

int Transition::old_rank_of(int64_t engine) const { return index_of(old_members, engine); }
int Transition::new_rank_of(int64_t engine) const { return index_of(new_members, engine); }
int Transition::union_rank_of(int64_t engine) const { return index_of(union_members(), engine); }

std::vector<WeightTransfer> plan_transfers(const Transition& t,
                                           const std::vector<std::string>& dense_tensors) {
  EEP_CHECK(!t.old_members.empty(), ErrorCode::kInvalidArgument, "transition: no old members");
  const std::vector<int64_t> all = t.union_members();
  const Placement& op = t.old_placement;
  const Placement& np = t.new_placement;
  EEP_CHECK(op.num_layers == np.num_layers && op.num_experts == np.num_experts,
            ErrorCode::kInvalidArgument, "transition: placements of different models");
  EEP_CHECK(static_cast<int>(t.old_members.size()) == op.num_ranks &&
                static_cast<int>(t.new_members.size()) == np.num_ranks,
            ErrorCode::kInvalidArgument, "transition: placement ranks do not match membership");
  std::vector<WeightTransfer> plan;
  const int num_old = static_cast<int>(t.old_members.size());
  int turn = 0;

  // Dense weights to engines that have none.
  for (int64_t e : t.new_members) {
    if (t.old_rank_of(e) >= 0) continue;
    const int dst = t.union_rank_of(e);
    for (const auto& name : dense_tensors) {
      WeightTransfer w;
      w.kind = WeightTransfer::Kind::kDense;
      w.tensor = name;
      w.src = (turn++) % num_old;  // old members are union ranks 0..num_old-1
      w.dst = dst;
      plan.push_back(w);
    }
  }

  // Experts, layer by layer.
  const int old_spr = op.slots_per_rank();
  const int new_spr = np.slots_per_rank();
  for (int l = 0; l < np.num_layers; ++l) {
    // Which old ranks hold each expert in this layer.
    std::vector<std::vector<int>> holders(op.num_experts);
    for (int s = 0; s < op.num_slots; ++s) {
      auto& h = holders[op.phy2log[l][s]];
      int r = s / old_spr;
      if (h.empty() || h.back() != r) h.push_back(r);
    }
    for (int nr = 0; nr < np.num_ranks; ++nr) {
      const int64_t engine = t.new_members[nr];
      const int dst = t.union_rank_of(engine);
      const int old_rank = t.old_rank_of(engine);
      std::set<int> have;
      if (old_rank >= 0)
        for (int s = old_rank * old_spr; s < (old_rank + 1) * old_spr; ++s)
          have.insert(op.phy2log[l][s]);
      for (int s = nr * new_spr; s < (nr + 1) * new_spr; ++s) {
        int expert = np.phy2log[l][s];
        if (!have.insert(expert).second) continue;  // held already, or fetched for another slot
        const auto& h = holders[expert];
        EEP_CHECK(!h.empty(), ErrorCode::kInternal, "transition: no holder of an expert");
        WeightTransfer w;
        w.kind = WeightTransfer::Kind::kExpert;
        w.layer = l;
        w.expert = expert;
        w.src = h[(turn++) % h.size()];
        w.dst = dst;
        plan.push_back(w);
      }
    }
  }
  return plan;
}

}  // namespace eep
