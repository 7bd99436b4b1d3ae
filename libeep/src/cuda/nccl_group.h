// NCCL groups beyond make_nccl_group (eep/comm.h): new communicators derived from an existing
// one with NCCL's own mechanisms, without a new rendezvous through the store. CUDA builds only.
//
// Both take a group made by make_nccl_group (or by one of these) and throw
// Error(kInvalidArgument) for any other Group, Error(kUnavailable) when the parent is broken (a
// collective failed or timed out, so its communicator was aborted: make a fresh group through
// the store instead) or NCCL fails, and Error(kTimeout) when the new communicator is not ready
// within the parent's timeout (the new communicator is then aborted). The parent stays usable
// and is destroyed by its owner as usual; the child gets its own stream and staging buffers,
// the parent's device and timeout.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "eep/comm.h"

namespace eep {

// make_nccl_group's implementation inside the CUDA plugin (callers use eep::make_nccl_group).
std::unique_ptr<Group> make_nccl_group_in_plugin(StoreClient& store, const NcclGroupOptions& opts);

// ncclCommShrink: a group of the parent's members minus exclude_ranks (ranks of the parent),
// renumbered in order (rank r keeps r minus the number of excluded ranks below it). Every member
// that is NOT excluded calls it with the same list; excluded members must not call it (they
// just destroy their parent group later). The parent must be idle on every caller (no call in
// flight): scale-down at a commit point, never as error recovery after a timeout (the timeout
// already aborted the parent).
std::unique_ptr<Group> shrink_nccl_group(Group& parent, const std::vector<int>& exclude_ranks,
                                         const std::string& new_name);

// ncclCommSplit: every member of the parent calls it; members passing the same color >= 0 form
// one new group, ordered by key (ties by parent rank). A member passing a negative color joins
// none and gets nullptr (it must still call: the split is collective over the parent).
std::unique_ptr<Group> split_nccl_group(Group& parent, int color, int key,
                                        const std::string& new_name);

}  // namespace eep
