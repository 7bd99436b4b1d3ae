#include <algorithm>
#include <cmath>
#include <limits>

#include "bench/serve_report.h"

namespace eep::bench {

using nlohmann::json;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  double pos = p / 100.0 * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

namespace {

// NaN (no data) becomes null in JSON, so scripts cannot mistake it for a measured 0.
json num(double v) { return std::isfinite(v) ? json(std::round(v * 1000.0) / 1000.0) : json(nullptr); }

json dist(const std::vector<double>& v) {
  double mean = std::numeric_limits<double>::quiet_NaN();
  if (!v.empty()) {
    mean = 0;
    for (double x : v) mean += x;
    mean /= static_cast<double>(v.size());
  }
  return {{"n", v.size()}, {"mean", num(mean)}, {"p50", num(percentile(v, 50))},
          {"p90", num(percentile(v, 90))}, {"p99", num(percentile(v, 99))}};
}

// Longest interval between consecutive token receipts that overlaps [a, b]; a stall that began
// before the window still counts in full, since it is the one users of the window felt.
std::pair<double, double> longest_gap(const std::vector<TokenReceipt>& r, double a, double b) {
  double best = std::numeric_limits<double>::quiet_NaN(), at = best;
  for (size_t i = 1; i < r.size(); ++i) {
    double s = r[i - 1].t_s, e = r[i].t_s;
    if (e <= a || s >= b) continue;
    if (!(e - s <= best)) {
      best = e - s;
      at = s;
    }
  }
  return {best, at};
}

// Figures of one window [a, b): requests are counted in the window where they ended (finished
// or failed); output tokens where they were received.
json window(const RunData& run, double a, double b, bool last) {
  auto in = [&](double t) { return t >= a && (t < b || (last && t <= b)); };
  int64_t finished = 0, failed = 0, aborted = 0, tokens = 0;
  std::vector<double> ttft, tpot, e2e;
  for (const auto& r : run.reqs) {
    if (r.end_s < 0 || !in(r.end_s)) continue;
    switch (r.outcome) {
      case ReqRecord::Outcome::kFinished: ++finished; break;
      case ReqRecord::Outcome::kAborted: ++aborted; break;
      default: ++failed; break;
    }
    if (r.outcome != ReqRecord::Outcome::kFinished) continue;
    e2e.push_back((r.end_s - r.sent_s) * 1000.0);
    if (r.first_s >= 0) ttft.push_back((r.first_s - r.sent_s) * 1000.0);
    if (r.first_s >= 0 && r.tokens >= 2)
      tpot.push_back((r.end_s - r.first_s) * 1000.0 / static_cast<double>(r.tokens - 1));
  }
  for (const auto& t : run.receipts)
    if (in(t.t_s)) tokens += t.n;
  double len = b - a;
  auto [gap, gap_at] = longest_gap(run.receipts, a, b);
  return {{"start_s", num(a)},
          {"end_s", num(b)},
          {"duration_s", num(len)},
          {"finished", finished},
          {"failed", failed},
          {"aborted", aborted},
          {"output_tokens", tokens},
          {"requests_per_s", num(len > 0 ? static_cast<double>(finished) / len : NAN)},
          {"output_tokens_per_s", num(len > 0 ? static_cast<double>(tokens) / len : NAN)},
          {"ttft_ms", dist(ttft)},
          {"tpot_ms", dist(tpot)},
          {"latency_ms", dist(e2e)},
          {"longest_gap_ms", num(gap * 1000.0)},
          {"longest_gap_at_s", num(gap_at)}};
}

json event_json(const RunData& run, size_t i) {
  const EventRecord& e = run.events[i];
  json j = {{"kind", e.ev.kind == ServeEvent::Kind::kScale ? "scale" : "kill"},
            {"given", e.ev.text},
            {"label", e.label},
            {"at_s", e.ev.at_s},
            {"started_s", e.started_s >= 0 ? num(e.started_s) : json(nullptr)},
            {"done_s", e.done_s >= 0 ? num(e.done_s) : json(nullptr)},
            {"failed", e.failed}};
  if (!e.error.empty()) j["error"] = e.error;
  // Last phase and the phases polling saw (kill: killed, declared dead, serving).
  j["phase"] = e.phase;
  j["phases_seen"] = e.phases_seen;
  if (e.ev.kind == ServeEvent::Kind::kScale) {
    j["to"] = e.ev.value;
    j["from"] = e.from;
    j["id"] = e.op_id;
    j["phases"] = e.phases;
    j["elapsed_ms"] = e.elapsed_ms >= 0 ? num(e.elapsed_ms) : json(nullptr);
  } else {
    j["rank"] = e.ev.value;
    j["engine_id"] = e.engine_id;
    j["pid"] = e.pid;
    j["requests_assigned"] = e.assigned;  // to the engine just before the kill (-1: unknown)
  }
  // Command to serving as seen by this client (polling every 20 ms).
  j["command_to_done_ms"] =
      e.started_s >= 0 && e.done_s >= 0 ? num((e.done_s - e.started_s) * 1000.0) : json(nullptr);
  if (e.started_s < 0) return j;
  // before: from the previous event's end (or 0); during: start to done (or the end of the run);
  // after: to the next event's start (or the end of the run).
  double prev_end = 0;
  if (i > 0) {
    const EventRecord& p = run.events[i - 1];
    prev_end = p.done_s >= 0 ? p.done_s : (p.started_s >= 0 ? p.started_s : 0);
  }
  double end = e.done_s >= 0 ? e.done_s : run.run_end_s;
  double next_start = run.run_end_s;
  if (i + 1 < run.events.size() && run.events[i + 1].started_s >= 0)
    next_start = run.events[i + 1].started_s;
  prev_end = std::min(prev_end, e.started_s);
  next_start = std::max(next_start, end);
  json w;
  w["before"] = window(run, prev_end, e.started_s, false);
  w["during"] = window(run, e.started_s, end, false);
  w["after"] = window(run, end, next_start, next_start >= run.run_end_s);
  j["windows"] = w;
  j["longest_gap_ms"] = w["during"]["longest_gap_ms"];
  return j;
}

json timeline(const RunData& run, double bucket_s) {
  size_t n = static_cast<size_t>(std::ceil(run.run_end_s / bucket_s)) + 1;
  std::vector<int64_t> toks(n, 0), done(n, 0);
  std::vector<double> lat(n, 0);
  for (const auto& t : run.receipts) toks[std::min(n - 1, static_cast<size_t>(t.t_s / bucket_s))] += t.n;
  for (const auto& r : run.reqs) {
    if (r.outcome != ReqRecord::Outcome::kFinished) continue;
    size_t b = std::min(n - 1, static_cast<size_t>(r.end_s / bucket_s));
    done[b] += 1;
    lat[b] += (r.end_s - r.sent_s) * 1000.0;
  }
  json out = json::array();
  for (size_t b = 0; b < n; ++b)
    out.push_back({{"t_s", num(static_cast<double>(b) * bucket_s)},
                   {"output_tokens_per_s", num(static_cast<double>(toks[b]) / bucket_s)},
                   {"finished", done[b]},
                   {"mean_latency_ms", done[b] ? num(lat[b] / static_cast<double>(done[b])) : json(nullptr)}});
  return out;
}

}  // namespace

json build_report(const RunData& run, const json& config, double bucket_s) {
  json rep;
  rep["config"] = config;
  rep["load_duration_s"] = num(run.load_end_s);
  rep["run_duration_s"] = num(run.run_end_s);
  int64_t sent = static_cast<int64_t>(run.reqs.size());
  json overall = window(run, 0, run.run_end_s, true);
  overall["sent"] = sent;
  // Throughput over the time load was offered plus the drain, i.e. the whole run.
  rep["overall"] = overall;
  for (const char* k : {"finished", "failed", "aborted"}) rep[k] = overall[k];
  rep["sent"] = sent;
  rep["requests_per_s"] = overall["requests_per_s"];
  rep["output_tokens_per_s"] = overall["output_tokens_per_s"];
  auto [gap, at] = longest_gap(run.receipts, 0, run.run_end_s + 1);
  rep["longest_gap_ms"] = std::isfinite(gap) ? num(gap * 1000.0) : json(0.0);
  rep["longest_gap_at_s"] = num(at);
  // Longest gap outside every event's during-window, to compare against the events' gaps.
  double out_gap = 0;
  for (size_t i = 1; i < run.receipts.size(); ++i) {
    double s = run.receipts[i - 1].t_s, e = run.receipts[i].t_s;
    bool touches = false;
    for (const auto& ev : run.events) {
      if (ev.started_s < 0) continue;
      double d = ev.done_s >= 0 ? ev.done_s : run.run_end_s;
      if (e > ev.started_s && s < d) touches = true;
    }
    if (!touches) out_gap = std::max(out_gap, e - s);
  }
  rep["longest_gap_outside_events_ms"] = num(out_gap * 1000.0);
  std::vector<std::string> errors;
  for (const auto& r : run.reqs)
    if (r.outcome == ReqRecord::Outcome::kFailed && errors.size() < 5) errors.push_back(r.id + ": " + r.error);
  rep["first_errors"] = errors;
  json events = json::array();
  for (size_t i = 0; i < run.events.size(); ++i) events.push_back(event_json(run, i));
  rep["events"] = events;
  rep["timeline_bucket_s"] = bucket_s;
  rep["timeline"] = timeline(run, bucket_s);
  return rep;
}

namespace {

std::string f(const json& v, int prec = 1) {
  if (!v.is_number()) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v.get<double>());
  return buf;
}

void print_window_row(std::FILE* out, const char* name, const json& w) {
  std::fprintf(out, "  %-7s %6s-%-6s %5lld %4lld %7s %8s %8s %8s %8s %8s %8s\n", name,
               f(w["start_s"], 2).c_str(), f(w["end_s"], 2).c_str(),
               static_cast<long long>(w.value("finished", 0)), static_cast<long long>(w.value("failed", 0)),
               f(w["requests_per_s"]).c_str(), f(w["output_tokens_per_s"]).c_str(),
               f(w["ttft_ms"]["p50"]).c_str(), f(w["tpot_ms"]["p50"]).c_str(),
               f(w["latency_ms"]["p50"]).c_str(), f(w["latency_ms"]["p99"]).c_str(),
               f(w["longest_gap_ms"]).c_str());
}

}  // namespace

void print_summary(const json& rep, std::FILE* out) {
  const json& c = rep["config"];
  std::string load = c.contains("rate") ? f(c["rate"], 2) + " req/s (Poisson)"
                                        : std::to_string(c.value("concurrency", 0)) + " in flight";
  std::fprintf(out, "eep-bench serve: %s for %s s (+%s s drain), prompt %s, output %s, seed %llu\n",
               load.c_str(), f(c["duration_s"], 1).c_str(),
               f(json(rep.value("run_duration_s", 0.0) - rep.value("load_duration_s", 0.0)), 1).c_str(),
               c.value("prompt_len", "").c_str(), c.value("output_len", "").c_str(),
               static_cast<unsigned long long>(c.value("seed", uint64_t{0})));
  std::fprintf(out, "requests: %lld sent, %lld finished, %lld failed, %lld aborted\n",
               static_cast<long long>(rep.value("sent", 0)), static_cast<long long>(rep.value("finished", 0)),
               static_cast<long long>(rep.value("failed", 0)), static_cast<long long>(rep.value("aborted", 0)));
  std::fprintf(out, "throughput: %s req/s, %s output tokens/s\n", f(rep["requests_per_s"], 2).c_str(),
               f(rep["output_tokens_per_s"]).c_str());
  std::fprintf(out, "%-16s %9s %9s %9s %9s\n", "(ms)", "mean", "p50", "p90", "p99");
  for (auto [name, key] : {std::pair{"TTFT", "ttft_ms"}, {"TPOT", "tpot_ms"}, {"latency", "latency_ms"}}) {
    const json& d = rep["overall"][key];
    std::fprintf(out, "%-16s %9s %9s %9s %9s\n", name, f(d["mean"]).c_str(), f(d["p50"]).c_str(),
                 f(d["p90"]).c_str(), f(d["p99"]).c_str());
  }
  std::fprintf(out, "longest gap without output tokens: %s ms at %s s (outside events: %s ms)\n",
               f(rep["longest_gap_ms"]).c_str(), f(rep["longest_gap_at_s"], 2).c_str(),
               f(rep["longest_gap_outside_events_ms"]).c_str());
  for (const auto& e : rep["first_errors"]) std::fprintf(out, "error: %s\n", e.get<std::string>().c_str());
  for (const auto& e : rep["events"]) {
    std::fprintf(out, "\nevent %s at %s s: ", e.value("label", "").c_str(), f(e["at_s"], 2).c_str());
    if (e["started_s"].is_null()) {
      std::fprintf(out, "never started\n");
      continue;
    }
    if (e.value("failed", false)) std::fprintf(out, "FAILED: %s", e.value("error", "").c_str());
    else if (e["done_s"].is_null()) std::fprintf(out, "not done by the end of the run");
    else std::fprintf(out, "done after %s ms", f(e["command_to_done_ms"]).c_str());
    if (e.contains("phases") && !e["phases"].empty()) {
      std::fprintf(out, " (coordinator: %s ms;", f(e["elapsed_ms"]).c_str());
      for (const auto& p : e["phases"])
        std::fprintf(out, " %s %s", p.value("phase", "").c_str(), f(p["ms"]).c_str());
      std::fprintf(out, ")");
    }
    std::fprintf(out, "\n");
    if (!e.contains("windows")) continue;
    std::fprintf(out, "  %-7s %13s %5s %4s %7s %8s %8s %8s %8s %8s %8s\n", "window", "span s", "done",
                 "fail", "req/s", "tok/s", "TTFT50", "TPOT50", "lat50", "lat99", "gap ms");
    for (const char* w : {"before", "during", "after"}) print_window_row(out, w, e["windows"][w]);
  }
}

}  // namespace eep::bench
