// The in-process store server of the tests is libeep's (libeep/src/store/local_server.h, also
// used by eep-bench); this name stays for the unit and GPU tests that include it.
#pragma once

#include "eep/common.h"  // what the tests that include this used to get through it
#include "eep/proto.h"
#include "store/local_server.h"

namespace eep::testing {
using StoreTestServer = eep::LocalStoreServer;
}  // namespace eep::testing
