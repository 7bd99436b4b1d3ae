// eep-bench serve: a serving benchmark. Offers load (Poisson arrivals at --rate or a closed loop
// of --concurrency requests) for --duration seconds, fires scaling and kill events at given times,
// and reports throughput, TTFT/TPOT/latency percentiles and token gaps overall and around every
// event (JSON, a summary table, an SVG timeline).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>

#include "bench/serve_args.h"
#include "bench/serve_events.h"
#include "bench/serve_report.h"
#include "eep/bench.h"
#include "eep/cli.h"
#include "eep/client.h"
#include "eep/common.h"

namespace eep::bench {

namespace {

using Ms = std::chrono::milliseconds;
constexpr const char* kTool = "eep-bench serve";

struct Options {
  std::string coord = "tcp://127.0.0.1:5555";
  double rate = 0;
  int concurrency = 0;
  double duration = 0;
  std::string prompt_len = "uniform:16:128";
  std::string output_len = "uniform:16:64";
  uint64_t seed = 1;
  std::vector<std::string> scale_at, kill_at;
  std::string json_path, plot_path;
  int vocab = 500;
  double temperature = 0;
  double drain_timeout = 60;
  int64_t connect_timeout_ms = 5000;
  bool progress = true;
};

int usage_error(const std::string& msg) {
  std::cerr << kTool << ": " << msg << "\n";
  return kExitUsage;
}

// The load generator: one client socket for all requests, replies matched by id (tokens) or by
// seq (submit replies, whose errors carry no id).
class Load {
 public:
  Load(const Options& o, const LengthDist& prompt, const LengthDist& output, Client& client,
       Clock::time_point t0)
      : o_(o), prompt_(prompt), output_(output), client_(client), t0_(t0),
        arrivals_(o.seed), lengths_(o.seed ^ 0x9e3779b97f4a7c15ULL) {}

  double now_s() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

  // Runs until the load is over and every request ended (or the drain timeout passed);
  // events_busy says whether an event is still in progress (the run waits for it too).
  template <typename EventsBusy, typename Progress>
  void run(EventsBusy events_busy, Progress progress) {
    std::exponential_distribution<double> gap(o_.rate > 0 ? o_.rate : 1.0);
    double next_arrival = o_.rate > 0 ? gap(arrivals_) : 0;
    bool loading = true;
    double next_progress = 0;
    while (true) {
      double t = now_s();
      if (loading && t >= o_.duration) {
        loading = false;
        data.load_end_s = t;
      }
      if (loading) {
        if (o_.rate > 0) {
          while (next_arrival <= t && next_arrival < o_.duration) {
            submit();
            next_arrival += gap(arrivals_);
          }
        } else {
          while (open_.size() < static_cast<size_t>(o_.concurrency)) submit();
        }
      } else {
        if (open_.empty() && !events_busy()) break;
        if (t > o_.duration + o_.drain_timeout) {
          give_up(t);
          break;
        }
      }
      // Wait for a message at most until the next arrival is due (and never long, so the
      // progress line and the end of the load are on time).
      double wait_ms = 20;
      if (loading && o_.rate > 0) wait_ms = std::clamp((next_arrival - t) * 1000.0, 0.0, 20.0);
      auto msg = client_.recv(Ms(static_cast<int64_t>(wait_ms)));
      while (msg) {
        handle(*msg);
        msg = client_.recv(Ms(0));
      }
      if (t >= next_progress) {
        progress(t, *this);
        next_progress = t + 0.5;
      }
    }
    data.run_end_s = now_s();
    if (data.load_end_s == 0) data.load_end_s = data.run_end_s;
  }

  size_t open() const { return open_.size(); }
  int64_t finished = 0, failed = 0;
  int64_t tokens_total = 0;
  RunData data;

 private:
  void submit() {
    ReqRecord r;
    r.id = "s" + std::to_string(data.reqs.size());
    r.prompt_len = prompt_.sample(lengths_);
    r.max_tokens = output_.sample(lengths_);
    std::vector<int32_t> prompt(static_cast<size_t>(r.prompt_len));
    std::uniform_int_distribution<int32_t> tok(0, o_.vocab - 1);
    for (auto& p : prompt) p = tok(lengths_);
    nlohmann::json body = {{"type", "submit"}, {"id", r.id}, {"prompt", prompt}, {"max_tokens", r.max_tokens}};
    if (o_.temperature > 0) {
      body["temperature"] = o_.temperature;
      body["seed"] = o_.seed + data.reqs.size();
    }
    r.sent_s = now_s();
    size_t idx = data.reqs.size();
    data.reqs.push_back(std::move(r));
    by_seq_[client_.send(body)] = idx;
    open_[data.reqs[idx].id] = idx;
  }

  void end(size_t idx, ReqRecord::Outcome outcome, const std::string& error) {
    ReqRecord& r = data.reqs[idx];
    r.end_s = now_s();
    r.outcome = outcome;
    r.error = error;
    if (outcome == ReqRecord::Outcome::kFinished) ++finished;
    else ++failed;
    open_.erase(r.id);
  }

  void handle(const proto::Body& msg) {
    const double t = now_s();
    const std::string type = msg.value("type", "");
    if (type == "submit_reply") {
      auto s = by_seq_.find(msg.value("seq", int64_t{-1}));
      if (s == by_seq_.end()) return;
      size_t idx = s->second;
      by_seq_.erase(s);
      if (msg.value("status", "") == "error" && open_.count(data.reqs[idx].id))
        end(idx, ReqRecord::Outcome::kFailed, msg.value("code", "") + ": " + msg.value("message", ""));
      return;
    }
    if (type == "error") {
      std::cerr << kTool << ": coordinator: " << msg.value("message", "") << "\n";
      return;
    }
    if (type != "tokens") return;
    auto it = open_.find(msg.value("id", ""));
    if (it == open_.end()) return;
    size_t idx = it->second;
    ReqRecord& r = data.reqs[idx];
    auto toks = msg.value("tokens", std::vector<int32_t>{});
    if (!toks.empty()) {
      // Every receipt is kept: token gaps are measured on these.
      data.receipts.push_back({t, static_cast<int>(toks.size())});
      if (r.first_s < 0) r.first_s = t;
      r.tokens += static_cast<int>(toks.size());
      tokens_total += static_cast<int64_t>(toks.size());
    }
    std::string finish = msg.value("finish", "");
    if (finish.empty()) return;
    if (finish == "abort") end(idx, ReqRecord::Outcome::kAborted, "aborted");
    else if (finish == "error" || msg.contains("error"))
      end(idx, ReqRecord::Outcome::kFailed, msg.value("code", "internal") + ": " + msg.value("error", ""));
    else end(idx, ReqRecord::Outcome::kFinished, "");
  }

  // After the drain timeout: abort what is left and count it as failed.
  void give_up(double t) {
    std::vector<size_t> left;
    for (const auto& [id, idx] : open_) left.push_back(idx);
    for (size_t idx : left) {
      client_.send({{"type", "abort"}, {"id", data.reqs[idx].id}});
      end(idx, ReqRecord::Outcome::kFailed, "timeout: unfinished after the drain timeout");
    }
  }

  const Options& o_;
  const LengthDist& prompt_;
  const LengthDist& output_;
  Client& client_;
  Clock::time_point t0_;
  std::mt19937_64 arrivals_, lengths_;
  std::map<std::string, size_t> open_;
  std::map<int64_t, size_t> by_seq_;
};

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) {
    std::cerr << kTool << ": cannot write " << path << "\n";
    return false;
  }
  return true;
}

}  // namespace

int run_serve(int argc, char** argv) {
  Options o;
  CLI::App app{"eep-bench serve: serving benchmark with scaling events, timelines and plots",
               "eep-bench serve"};
  eep::cli::add_version_flag(app);
  app.add_option("--coord", o.coord, "coordinator endpoint")->envname("EEP_COORD")->capture_default_str();
  auto* rate = app.add_option("--rate", o.rate, "Poisson arrivals, requests per second")->envname("EEP_RATE");
  auto* conc = app.add_option("--concurrency", o.concurrency, "closed loop: requests kept in flight")
                   ->envname("EEP_CONCURRENCY");
  app.add_option("--duration", o.duration, "seconds of offered load")->envname("EEP_DURATION")->required();
  app.add_option("--prompt-len", o.prompt_len,
                 "prompt length distribution: fixed:N, uniform:A:B, normal:MEAN:STD, lognormal:MU:SIGMA")
      ->envname("EEP_PROMPT_LEN")->capture_default_str();
  app.add_option("--output-len", o.output_len, "output length (max_tokens) distribution, same syntax")
      ->envname("EEP_OUTPUT_LEN")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of arrivals, lengths and prompts (same seed, same load)")
      ->envname("EEP_SEED")->capture_default_str();
  app.add_option("--scale-at", o.scale_at, "T:N: at T seconds scale to N engines (repeatable)")
      ->envname("EEP_SCALE_AT")->delimiter(',');
  app.add_option("--kill-at", o.kill_at,
                 "T:RANK: at T seconds kill -9 the engine of that rank (local engines only; repeatable)")
      ->envname("EEP_KILL_AT")->delimiter(',');
  app.add_option("--json", o.json_path, "write all figures as JSON to FILE")->envname("EEP_JSON");
  app.add_option("--plot", o.plot_path, "write an SVG timeline to FILE")->envname("EEP_PLOT");
  app.add_option("--vocab", o.vocab, "prompt token ids are drawn below this")
      ->envname("EEP_VOCAB")->check(CLI::Range(1, 1 << 24))->capture_default_str();
  app.add_option("--temperature", o.temperature, "sampling temperature (0: greedy)")
      ->envname("EEP_TEMPERATURE")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  app.add_option("--drain-timeout", o.drain_timeout,
                 "seconds to wait for requests in flight after --duration; the rest count as failed")
      ->envname("EEP_DRAIN_TIMEOUT")->check(CLI::Range(0.0, 86400.0))->capture_default_str();
  app.add_option("--connect-timeout-ms", o.connect_timeout_ms, "the coordinator must answer 'status' by then")
      ->envname("EEP_CONNECT_TIMEOUT_MS")->check(CLI::Range(int64_t{1}, int64_t{600000}))->capture_default_str();
  app.add_flag("!--no-progress", o.progress, "no progress line (it shows only on a terminal anyway)")
      ->envname("EEP_NO_PROGRESS");
  if (auto code = cli::parse(app, argc, argv)) return *code;

  // Every check before any load is sent.
  const bool has_rate = rate->count() > 0, has_conc = conc->count() > 0;
  if (has_rate == has_conc) return usage_error("give exactly one of --rate and --concurrency");
  if (has_rate && !(o.rate > 0 && std::isfinite(o.rate)))
    return usage_error("--rate must be a positive number of requests/s, got " + std::to_string(o.rate));
  if (has_conc && o.concurrency < 1)
    return usage_error("--concurrency must be at least 1, got " + std::to_string(o.concurrency));
  if (!(o.duration > 0 && std::isfinite(o.duration)))
    return usage_error("--duration must be a positive number of seconds, got " + std::to_string(o.duration));
  LengthDist prompt_dist, output_dist;
  std::vector<ServeEvent> events;
  try {
    prompt_dist = parse_length_dist("--prompt-len", o.prompt_len);
    output_dist = parse_length_dist("--output-len", o.output_len);
    for (const auto& s : o.scale_at) events.push_back(parse_event(ServeEvent::Kind::kScale, s, o.duration));
    for (const auto& s : o.kill_at) events.push_back(parse_event(ServeEvent::Kind::kKill, s, o.duration));
  } catch (const Error& e) {
    return usage_error(e.what());
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const auto& a, const auto& b) { return a.at_s < b.at_s; });

  std::unique_ptr<Client> client;
  nlohmann::json initial;
  try {
    client = std::make_unique<Client>(o.coord);
    // Reachable and answering, or no load at all.
    auto st = client->call({{"type", "status"}}, Ms(o.connect_timeout_ms));
    initial = {{"size", st.value("size", 0)}, {"serving", st.value("serving", false)},
               {"model", st.value("model", nlohmann::json(nullptr))}};
    if (!st.value("serving", false))
      std::cerr << kTool << ": warning: the cluster is not serving yet; requests will queue\n";
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kInvalidArgument) return usage_error(e.what());
    std::cerr << kTool << ": coordinator " << o.coord << " unreachable: " << e.what() << "\n";
    return kExitRuntime;
  }

  nlohmann::json config = {{"coord", o.coord}, {"duration_s", o.duration}, {"prompt_len", o.prompt_len},
                           {"output_len", o.output_len}, {"seed", o.seed}, {"vocab", o.vocab},
                           {"temperature", o.temperature}, {"drain_timeout_s", o.drain_timeout},
                           {"scale_at", o.scale_at}, {"kill_at", o.kill_at}};
  config["cluster_at_start"] = initial;
  if (has_rate) config["rate"] = o.rate;
  else config["concurrency"] = o.concurrency;

  const bool tty = o.progress && isatty(STDERR_FILENO);
  const auto t0 = Clock::now();
  // Operation ids carry the pid and start time: the coordinator answers a repeated id with the
  // old operation, which would make a second run against the same cluster measure nothing.
  const std::string run_tag =
      std::to_string(getpid()) + "." +
      std::to_string(std::chrono::duration_cast<Ms>(t0.time_since_epoch()).count() % 100000000);
  EventRunner runner(o.coord, events, t0, run_tag);
  Load load(o, prompt_dist, output_dist, *client, t0);
  runner.start();
  int64_t last_tokens = 0;
  double last_t = 0;
  load.run([&] { return !runner.all_done(); },
           [&](double t, const Load& l) {
             if (!tty) return;
             double tps = t > last_t ? static_cast<double>(l.tokens_total - last_tokens) / (t - last_t) : 0;
             last_tokens = l.tokens_total;
             last_t = t;
             std::string ev = runner.progress();
             std::fprintf(stderr, "\r\033[K[%6.1f/%.1f s] sent %zu done %lld failed %lld open %zu  %.0f tok/s%s%s",
                          t, o.duration, l.data.reqs.size(), static_cast<long long>(l.finished),
                          static_cast<long long>(l.failed), l.open(), tps, ev.empty() ? "" : "  ", ev.c_str());
             std::fflush(stderr);
           });
  runner.stop();
  if (tty) std::fprintf(stderr, "\r\033[K");
  load.data.events = runner.records();

  nlohmann::json report = build_report(load.data, config);
  print_summary(report, stdout);
  std::fflush(stdout);
  bool ok = true;
  if (!o.json_path.empty()) ok = write_file(o.json_path, report.dump(1) + "\n") && ok;
  if (!o.plot_path.empty()) ok = write_file(o.plot_path, render_svg(report)) && ok;
  if (!ok) return kExitRuntime;
  bool event_failed = false;
  for (const auto& e : load.data.events) event_failed = event_failed || e.failed || e.done_s < 0;
  // Failures are reported above; the exit code lets scripts notice them without parsing.
  return load.failed == 0 && !event_failed ? kExitOk : kExitRuntime;
}

}  // namespace eep::bench
