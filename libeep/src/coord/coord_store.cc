// The rendezvous store on the coordinator: answered at once, or parked (StoreWaiters) until a
// change makes it answerable or its deadline passes.
#include "coord/coordinator.h"

namespace eep {

void Coordinator::on_store(const std::string& identity, const Body& msg) {
  if (auto reply = waiters_.handle(store_, identity, msg)) send_to(identity, *reply);
  poll_store();
}

void Coordinator::poll_store() {
  for (auto& r : waiters_.poll(store_)) send_to(r.identity, r.body);
}

}  // namespace eep
