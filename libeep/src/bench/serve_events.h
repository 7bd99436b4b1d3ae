// eep-bench serve: runs the timed events (--scale-at, --kill-at) on a thread of its own with its
// own client, so that polling an operation never delays request traffic and a kill can land in
// the middle of a scaling operation.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/serve_report.h"
#include "eep/common.h"

namespace eep::bench {

class EventRunner {
 public:
  // t0: the start of the load; times in the events are relative to it. run_tag makes operation
  // ids unique per run (the coordinator answers a repeated id with the old operation).
  EventRunner(std::string coord, std::vector<ServeEvent> events, Clock::time_point t0,
              std::string run_tag);
  ~EventRunner();
  void start();
  // Stops the thread; events still in progress stay not done.
  void stop();
  bool all_done() const;
  // A copy of the records (for the progress line and the report).
  std::vector<EventRecord> records() const;
  // One line describing events in progress, for the progress line ("" when none).
  std::string progress() const;

 private:
  void loop();
  double now_s() const;

  std::string coord_;
  Clock::time_point t0_;
  std::string run_tag_;
  mutable std::mutex mu_;
  std::vector<EventRecord> recs_;
  std::vector<bool> finished_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace eep::bench
