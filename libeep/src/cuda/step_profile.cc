#include "cuda/step_profile.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "eep/common.h"

namespace eep::cuda {

std::unique_ptr<StepProfile> StepProfile::from_env() {
  const char* v = std::getenv("EEP_CUDA_PROFILE");
  if (!v || !*v) return nullptr;
  // N or N@FIRST.
  char* end = nullptr;
  const long steps = std::strtol(v, &end, 10);
  long first = 1;
  if (*end == '@') first = std::strtol(end + 1, &end, 10);
  if (*end != '\0' || steps <= 0 || first <= 0) {
    logger("cuda")->warn("EEP_CUDA_PROFILE={} is not N or N@FIRST with positive numbers of steps; "
                         "not profiling", v);
    return nullptr;
  }
  return std::make_unique<StepProfile>(static_cast<int>(std::min(steps, 1000000L)),
                                       static_cast<int>(std::min(first, 1000000000L)));
}

bool StepProfile::begin(cudaStream_t stream) {
  ++step_;
  active_ = steps_left_ > 0 && step_ >= first_;
  if (!active_) return false;
  --steps_left_;
  phases_.clear();
  layer_ = -1;
  // Work enqueued before the step (loading, the previous step's tail) is not the step's.
  cudaStreamSynchronize(stream);
  start_ = last_ = Clock::now();
  return true;
}

void StepProfile::mark(const char* name, cudaStream_t stream) {
  if (!active_) return;
  cudaStreamSynchronize(stream);
  const auto now = Clock::now();
  const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
  last_ = now;
  auto it = std::find_if(phases_.begin(), phases_.end(),
                         [&](const Phase& p) { return p.name == name; });
  if (it == phases_.end()) {
    phases_.push_back(Phase{name});
    it = phases_.end() - 1;
  }
  it->sum_ms += ms;
  ++it->count;
  if (ms > it->max_ms) {
    it->max_ms = ms;
    it->max_layer = layer_;
  }
}

void StepProfile::end(int rows, int group_size) {
  if (!active_) return;
  active_ = false;
  const double total =
      std::chrono::duration<double, std::milli>(Clock::now() - start_).count();
  std::sort(phases_.begin(), phases_.end(),
            [](const Phase& a, const Phase& b) { return a.sum_ms > b.sum_ms; });
  std::string lines;
  for (const Phase& p : phases_) {
    lines += fmt::format("\n  {:<16} {:9.3f} ms in {:3d}, slowest {:8.3f} ms", p.name, p.sum_ms,
                         p.count, p.max_ms);
    if (p.max_layer >= 0) lines += fmt::format(" (layer {})", p.max_layer);
  }
  logger("cuda")->info("profiled step {} ({} rows, group of {}): {:.3f} ms{}", step_, rows,
                       group_size, total, lines);
}

}  // namespace eep::cuda
