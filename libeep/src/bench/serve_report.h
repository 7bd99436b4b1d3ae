// eep-bench serve: what a run records, and the figures made from it (JSON report, summary table,
// SVG plot). Everything here works on recorded data only, so it is the same for live runs and
// tests; times are seconds since the load started.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/serve_args.h"

namespace eep::bench {

struct ReqRecord {
  enum class Outcome { kOpen, kFinished, kFailed, kAborted };
  std::string id;
  double sent_s = 0;
  double first_s = -1;  // first token received
  double end_s = -1;    // final message received (or given up)
  int prompt_len = 0;
  int max_tokens = 0;
  int tokens = 0;
  Outcome outcome = Outcome::kOpen;
  std::string error;  // "code: message" when failed
};

// One "tokens" message that carried at least one token.
struct TokenReceipt {
  double t_s = 0;
  int n = 0;
};

struct EventRecord {
  ServeEvent ev;
  std::string label;     // "scale 2→4", "kill rank 1"
  double started_s = -1;  // when the command was sent (-1: never fired)
  double done_s = -1;     // when polling first saw it done (-1: not done by the end)
  bool failed = false;
  std::string error;
  // scale: the operation as the coordinator reported it.
  std::string op_id;
  int from = 0;
  std::string phase;                  // last phase seen
  nlohmann::json phases = nlohmann::json::array();  // [{phase, ms}] from scale_status
  nlohmann::json phases_seen = nlohmann::json::array();  // [{phase, at_s}] first seen by polling
  double elapsed_ms = -1;             // coordinator's elapsed_ms at done
  // kill: which engine, and how many requests the coordinator had assigned to it just before.
  int64_t engine_id = -1;
  int pid = 0;
  int64_t assigned = -1;
};

struct RunData {
  std::vector<ReqRecord> reqs;
  std::vector<TokenReceipt> receipts;  // in receipt order (non-decreasing times)
  std::vector<EventRecord> events;     // in time order
  double load_end_s = 0;  // no new requests after this
  double run_end_s = 0;   // last request finished or given up
};

// The full report: config (given), overall figures, per-event phases and windows, timeline.
nlohmann::json build_report(const RunData& run, const nlohmann::json& config, double bucket_s = 0.1);

// Human summary of a report.
void print_summary(const nlohmann::json& report, std::FILE* out);

// SVG of the report's timeline with events marked.
std::string render_svg(const nlohmann::json& report);

// Percentile (linear between closest ranks) of unsorted values; nullopt-like NaN when empty.
double percentile(std::vector<double> values, double p);

}  // namespace eep::bench
