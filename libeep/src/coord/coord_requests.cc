// Client requests: validation, routing to the least loaded engine, token streams back, aborts,
// clients that vanish, and the status/stats views.
#include <algorithm>
#include <limits>

#include "coord/coordinator.h"

namespace eep {

std::optional<RequestLimits> Coordinator::limits() const {
  std::optional<RequestLimits> out;
  for (const auto& m : group_.members) {
    const EngineInfo& e = engines_.at(m);
    if (!out) {
      out = e.limits;
    } else {
      out->vocab_size = std::min(out->vocab_size, e.limits.vocab_size);
      out->max_model_len = std::min(out->max_model_len, e.limits.max_model_len);
      out->kv_tokens = std::min(out->kv_tokens, e.limits.kv_tokens);
    }
  }
  return out;
}

void Coordinator::on_submit(const std::string& identity, const Body& msg) {
  std::string client_id = proto::get_string(msg, "id");
  if (client_id.empty()) throw Error(ErrorCode::kInvalidArgument, "id: must not be empty");
  auto& open = client_requests_[identity];
  for (const auto& rid : open)
    if (requests_.at(rid).client_id == client_id)
      throw Error(ErrorCode::kInvalidArgument, "id: request '" + client_id + "' is already open");
  RequestInfo r;
  r.prompt = parse_prompt(msg);
  r.params = parse_sampling(msg);
  if (auto lim = limits()) check_request(r.prompt, r.params, *lim);
  else if (r.prompt.empty()) throw Error(ErrorCode::kInvalidArgument, "prompt: is empty");
  r.rid = "r" + std::to_string(next_rid_++);
  r.client = identity;
  r.client_id = client_id;
  r.arrival = Clock::now();
  open.insert(r.rid);
  std::string rid = r.rid;
  requests_[rid] = std::move(r);
  send_to(identity, proto::ok_reply(msg, {{"id", client_id}}));
  pending_.push_back(rid);
  route_pending();
}

void Coordinator::route_pending() {
  if (!group_.serving) {
    // Nothing serves: requests wait, but not forever.
    auto now = Clock::now();
    std::vector<std::string> expired;
    for (const auto& rid : pending_)
      if (now - requests_.at(rid).arrival > opts_.queue_timeout) expired.push_back(rid);
    for (const auto& rid : expired)
      finish_request(rid, "error", ErrorCode::kUnavailable,
                     "no engine became available within the queue timeout");
    return;
  }
  while (!pending_.empty()) {
    std::string rid = pending_.front();
    pending_.pop_front();
    auto it = requests_.find(rid);
    if (it == requests_.end()) continue;
    // Limits may have changed with the group (a retried request re-checked).
    try {
      if (auto lim = limits()) check_request(it->second.prompt, it->second.params, *lim);
    } catch (const Error& e) {
      finish_request(rid, "error", e.code(), e.what());
      continue;
    }
    route(it->second);
  }
}

void Coordinator::route(RequestInfo& req) {
  // Least loaded member by open requests (waiting + running); ties to the lowest rank.
  std::string best;
  int best_load = std::numeric_limits<int>::max();
  for (const auto& m : group_.members) {
    const EngineInfo& e = engines_.at(m);
    if (!routable(m)) continue;
    if (e.num_assigned < best_load) {
      best_load = e.num_assigned;
      best = m;
    }
  }
  EngineInfo& e = engines_.at(best);
  e.num_assigned += 1;
  req.engine = best;
  send_to(best, encode_add(req.rid, req.prompt, req.output, req.params));
  if (!group_.wave_running) wake_group();
}

void Coordinator::wake_group() {
  group_.wave_running = true;
  for (const auto& m : group_.members) send_to(m, {{"type", "wake"}, {"wave", group_.wave}});
}

void Coordinator::on_outputs(const std::string& identity, const Body& msg) {
  const auto& items = msg.at("items");
  for (const auto& item : items) {
    std::string rid = proto::get_string(item, "rid");
    auto it = requests_.find(rid);
    if (it == requests_.end() || it->second.engine != identity) continue;  // aborted or moved
    RequestInfo& r = it->second;
    std::vector<int32_t> tokens = item.at("tokens").get<std::vector<int32_t>>();
    r.output.insert(r.output.end(), tokens.begin(), tokens.end());
    std::string finish = item.value("finish", "");
    Body out = {{"type", "tokens"}, {"id", r.client_id}, {"tokens", tokens}, {"finish", finish}};
    if (finish.empty()) {
      send_to(r.client, out);
      continue;
    }
    if (finish == "error") {
      finish_request(rid, "error", error_code_from_name(item.value("code", "internal")),
                     item.value("error", "engine error"));
      continue;
    }
    send_to(r.client, out);
    finish_request(rid, "", ErrorCode::kInternal, "");
  }
}

void Coordinator::finish_request(const std::string& rid, const std::string& reason,
                                 ErrorCode code, const std::string& error) {
  auto it = requests_.find(rid);
  if (it == requests_.end()) return;
  RequestInfo& r = it->second;
  if (!r.engine.empty()) {
    auto e = engines_.find(r.engine);
    if (e != engines_.end() && e->second.num_assigned > 0) e->second.num_assigned -= 1;
  }
  if (!reason.empty()) {
    // Final message for a request that did not finish normally (error, abort).
    Body out = {{"type", "tokens"}, {"id", r.client_id}, {"tokens", Body::array()},
                {"finish", reason}};
    if (!error.empty()) {
      out["code"] = error_code_name(code);
      out["error"] = error;
    }
    send_to(r.client, out);
  }
  auto c = client_requests_.find(r.client);
  if (c != client_requests_.end()) {
    c->second.erase(rid);
    if (c->second.empty()) client_requests_.erase(c);
  }
  pending_.erase(std::remove(pending_.begin(), pending_.end(), rid), pending_.end());
  requests_.erase(it);
}

void Coordinator::on_abort(const std::string& identity, const Body& msg) {
  std::string client_id = proto::get_string(msg, "id");
  auto c = client_requests_.find(identity);
  if (c != client_requests_.end()) {
    for (const auto& rid : c->second) {
      RequestInfo& r = requests_.at(rid);
      if (r.client_id != client_id) continue;
      if (!r.engine.empty()) send_to(r.engine, {{"type", "abort"}, {"rid", rid}});
      send_to(identity, proto::ok_reply(msg, {{"id", client_id}}));
      finish_request(rid, "abort", ErrorCode::kAborted, "");
      return;
    }
  }
  throw Error(ErrorCode::kNotFound, "no open request with id '" + client_id + "'");
}

void Coordinator::client_gone(const std::string& client) {
  auto c = client_requests_.find(client);
  if (c == client_requests_.end()) return;
  std::vector<std::string> rids(c->second.begin(), c->second.end());
  log_->info("client {} is gone; aborting its {} request(s)", peer_name(client), rids.size());
  for (const auto& rid : rids) {
    RequestInfo& r = requests_.at(rid);
    if (!r.engine.empty()) send_to(r.engine, {{"type", "abort"}, {"rid", rid}});
    r.client.clear();  // nothing to send to any more
    finish_request(rid, "", ErrorCode::kAborted, "");
  }
  client_requests_.erase(client);
}

void Coordinator::on_status(const std::string& identity, const Body& msg) {
  Body engines = Body::array();
  for (const auto& [id, e] : engines_) {
    engines.push_back({{"engine_id", e.id},
                       {"rank", e.rank},
                       {"pid", e.pid},
                       {"state", engine_state_name(e.state)},
                       {"backend", e.backend},
                       {"device", e.device},
                       {"kv_bytes", e.kv_bytes},
                       {"num_kv_blocks", e.num_kv_blocks},
                       {"free_blocks", e.free_blocks},
                       {"assigned", e.num_assigned},
                       {"waiting", e.reported_waiting},
                       {"running", e.reported_running},
                       {"steps", e.steps},
                       {"paused", e.paused}});
  }
  Body fields = {{"size", group_.members.size()},
                 {"generation", group_.generation},
                 {"serving", group_.serving},
                 {"wave", group_.wave},
                 {"wave_running", group_.wave_running},
                 {"model", model_},
                 {"requests_open", requests_.size()},
                 {"requests_queued", pending_.size()},
                 {"engines", engines}};
  if (group_.generation > 0) fields["placement"] = group_.placement.to_json();
  if (op_) fields["scale"] = scale_view(*op_);
  send_to(identity, proto::ok_reply(msg, fields));
}

std::vector<std::vector<int64_t>> Coordinator::logical_load() const {
  // Each engine counts only its own slots; a logical expert's load is the sum over its replicas.
  const Placement& p = group_.placement;
  std::vector<std::vector<int64_t>> logical(p.num_layers, std::vector<int64_t>(p.num_experts, 0));
  for (const auto& m : group_.members) {
    const auto& load = engines_.at(m).load;
    for (size_t l = 0; l < load.size() && l < logical.size(); ++l)
      for (size_t s = 0; s < load[l].size() && s < static_cast<size_t>(p.num_slots); ++s)
        logical[l][p.phy2log[l][s]] += load[l][s];
  }
  return logical;
}

void Coordinator::on_stats(const std::string& identity, const Body& msg) {
  // Expert load since the current group formed: per physical slot (summed over engines, each
  // of which counts only its own slots) and per logical expert (the eep-eplb input).
  const Placement& p = group_.placement;
  std::vector<std::vector<int64_t>> slot_load(p.num_layers, std::vector<int64_t>(p.num_slots, 0));
  for (const auto& m : group_.members) {
    const auto& load = engines_.at(m).load;
    for (size_t l = 0; l < load.size() && l < slot_load.size(); ++l)
      for (size_t s = 0; s < load[l].size() && s < slot_load[l].size(); ++s)
        slot_load[l][s] += load[l][s];
  }
  send_to(identity, proto::ok_reply(msg, {{"load", logical_load()},
                                          {"slot_load", slot_load},
                                          {"num_slots", p.num_slots},
                                          {"num_gpus", p.num_ranks},
                                          {"phy2log", p.phy2log}}));
}

}  // namespace eep
