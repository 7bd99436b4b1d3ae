#include "bench/serve_events.h"

#include <signal.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <sstream>

#include "eep/client.h"

namespace eep::bench {

namespace {

using Ms = std::chrono::milliseconds;
constexpr Ms kCallTimeout{5000};
constexpr Ms kPollEvery{20};
// An event still not done after this is given up (the run reports it as not done).
constexpr double kEventTimeoutS = 300;

// Millisecond resolution is all polling every 20 ms can tell.
double ms_round(double t_s) { return std::round(t_s * 1000.0) / 1000.0; }

std::string fmt_time(double t) {
  std::ostringstream s;
  s << t;
  return s.str();
}

}  // namespace

EventRunner::EventRunner(std::string coord, std::vector<ServeEvent> events, Clock::time_point t0,
                         std::string run_tag)
    : coord_(std::move(coord)), t0_(t0), run_tag_(std::move(run_tag)) {
  for (auto& e : events) {
    EventRecord r;
    r.ev = e;
    r.label = e.kind == ServeEvent::Kind::kScale ? "scale →" + std::to_string(e.value)
                                                 : "kill rank " + std::to_string(e.value);
    recs_.push_back(std::move(r));
  }
  finished_.assign(recs_.size(), false);
}

EventRunner::~EventRunner() { stop(); }

void EventRunner::start() {
  if (!recs_.empty()) thread_ = std::thread([this] { loop(); });
}

void EventRunner::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

bool EventRunner::all_done() const {
  std::lock_guard lock(mu_);
  for (bool f : finished_)
    if (!f) return false;
  return true;
}

std::vector<EventRecord> EventRunner::records() const {
  std::lock_guard lock(mu_);
  return recs_;
}

std::string EventRunner::progress() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (size_t i = 0; i < recs_.size(); ++i)
    if (recs_[i].started_s >= 0 && !finished_[i])
      out += (out.empty() ? "" : ", ") + recs_[i].label +
             (recs_[i].phase.empty() ? "" : ": " + recs_[i].phase);
  return out;
}

double EventRunner::now_s() const {
  return std::chrono::duration<double>(Clock::now() - t0_).count();
}

void EventRunner::loop() {
  Client client(coord_);
  auto fail = [&](size_t i, const std::string& why) {
    std::lock_guard lock(mu_);
    recs_[i].failed = true;
    recs_[i].error = why;
    recs_[i].done_s = now_s();
    finished_[i] = true;
  };
  while (!stop_) {
    for (size_t i = 0; i < recs_.size() && !stop_; ++i) {
      EventRecord r;
      {
        std::lock_guard lock(mu_);
        if (finished_[i]) continue;
        r = recs_[i];
      }
      const double t = now_s();
      const bool scale = r.ev.kind == ServeEvent::Kind::kScale;
      try {
        if (r.started_s < 0) {
          if (t < r.ev.at_s) continue;
          if (scale) {
            // The same message as 'eep-scale to N'.
            std::string id = "bench-" + fmt_time(r.ev.at_s) + "-" + std::to_string(r.ev.value) + "-" + run_tag_;
            {
              std::lock_guard lock(mu_);
              recs_[i].started_s = t;
              recs_[i].op_id = id;
            }
            auto rep = client.call({{"type", "scale"}, {"to", r.ev.value}, {"id", id}}, kCallTimeout);
            std::lock_guard lock(mu_);
            recs_[i].from = rep.value("from", 0);
            recs_[i].label = "scale " + std::to_string(recs_[i].from) + "→" + std::to_string(r.ev.value);
            recs_[i].phase = rep.value("phase", "");
            recs_[i].phases_seen.push_back({{"phase", recs_[i].phase}, {"at_s", ms_round(now_s())}});
          } else {
            // Which process serves that rank now; kill -9 works only for engines on this host.
            auto st = client.call({{"type", "status"}}, kCallTimeout);
            int64_t engine_id = -1, assigned = -1;
            int pid = 0;
            for (const auto& e : st.value("engines", nlohmann::json::array())) {
              std::string state = e.value("state", "");
              if (e.value("rank", -1) == r.ev.value && state != "dead" && state != "left") {
                engine_id = e.value("engine_id", int64_t{-1});
                pid = e.value("pid", 0);
                assigned = e.value("assigned", int64_t{-1});
              }
            }
            {
              std::lock_guard lock(mu_);
              recs_[i].started_s = now_s();
            }
            if (engine_id < 0) {
              fail(i, "no engine has rank " + std::to_string(r.ev.value) + " now");
              continue;
            }
            if (pid <= 0 || ::kill(pid, SIGKILL) != 0) {
              fail(i, "cannot kill engine " + std::to_string(engine_id) + " (pid " + std::to_string(pid) +
                          "): " + (pid <= 0 ? std::string("no pid reported") : std::strerror(errno)) +
                          " (--kill-at works only for engines on this host)");
              continue;
            }
            std::lock_guard lock(mu_);
            recs_[i].engine_id = engine_id;
            recs_[i].pid = pid;
            recs_[i].assigned = assigned;
            recs_[i].phase = "killed";
          }
          continue;
        }
        if (t - r.started_s > kEventTimeoutS) {
          fail(i, "not done within " + fmt_time(kEventTimeoutS) + " s");
          continue;
        }
        if (scale) {
          auto st = client.call({{"type", "scale_status"}, {"id", r.op_id}}, kCallTimeout);
          std::lock_guard lock(mu_);
          EventRecord& rec = recs_[i];
          std::string phase = st.value("phase", "");
          if (phase != rec.phase) rec.phases_seen.push_back({{"phase", phase}, {"at_s", ms_round(now_s())}});
          rec.phase = phase;
          rec.phases = st.value("phases", nlohmann::json::array());
          if (st.value("done", false)) {
            rec.done_s = now_s();
            rec.elapsed_ms = st.value("elapsed_ms", -1.0);
            if (phase == "failed") {
              rec.failed = true;
              rec.error = st.value("error", "failed");
            }
            finished_[i] = true;
          }
        } else {
          // Done when the coordinator has declared the engine gone and serves again.
          auto st = client.call({{"type", "status"}}, kCallTimeout);
          std::string state;
          for (const auto& e : st.value("engines", nlohmann::json::array()))
            if (e.value("engine_id", int64_t{-1}) == r.engine_id) state = e.value("state", "");
          std::lock_guard lock(mu_);
          EventRecord& rec = recs_[i];
          bool gone = state == "dead" || state == "left" || state.empty();
          if (gone && rec.phase == "killed") {
            rec.phase = "declared " + (state.empty() ? std::string("gone") : state);
            rec.phases_seen.push_back({{"phase", rec.phase}, {"at_s", ms_round(now_s())}});
          }
          if (gone && st.value("serving", false)) {
            rec.phase = "serving";
            rec.phases_seen.push_back({{"phase", "serving"}, {"at_s", ms_round(now_s())}});
            rec.done_s = now_s();
            finished_[i] = true;
          }
        }
      } catch (const Error& e) {
        // A refused scale (conflict, bad size) ends the event; a slow answer is retried.
        if (e.code() == ErrorCode::kTimeout && r.started_s >= 0) continue;
        fail(i, e.what());
      } catch (const std::exception& e) {
        // A malformed answer ends this event, not the run.
        fail(i, std::string("unexpected answer from the coordinator: ") + e.what());
      }
    }
    std::this_thread::sleep_for(kPollEvery);
  }
}

}  // namespace eep::bench
