// Where a forward step's time goes, phase by phase, for some steps of a process
// (EEP_CUDA_PROFILE=N profiles the first N steps, N@FIRST the N steps from step FIRST on). The devices have no nsys, and first steps
// pay host-side costs (workspace growth, first library calls at a shape) that a kernel profiler
// does not see; this times them from the host.
//
// At each mark the stream is synchronised, so a phase's time is its host work plus its device
// work; the step's total is then slower than an unprofiled one, and decode steps of profiled
// steps run eagerly (a capturing stream cannot be synchronised). The log gives, per phase name,
// the sum over the step's layers, the slowest single occurrence and its layer.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace eep::cuda {

class StepProfile {
 public:
  // Null unless EEP_CUDA_PROFILE is a positive number of steps.
  static std::unique_ptr<StepProfile> from_env();

  StepProfile(int steps, int first) : steps_left_(steps), first_(first) {}
  // Whether the current step is profiled (between begin and end).
  bool active() const { return active_; }
  // Starts a step if any profiled steps are left; returns active().
  bool begin(cudaStream_t stream);
  void set_layer(int layer) { layer_ = layer; }
  // Ends the phase `name` now (after the stream's work so far).
  void mark(const char* name, cudaStream_t stream);
  // Logs the step's phases (slowest first) and ends it.
  void end(int rows, int group_size);

 private:
  using Clock = std::chrono::steady_clock;
  struct Phase {
    std::string name;
    double sum_ms = 0, max_ms = 0;
    int count = 0, max_layer = -1;
  };
  int steps_left_;
  int first_;    // 1-based
  int step_ = 0;  // steps begun so far
  bool active_ = false;
  int layer_ = -1;
  Clock::time_point start_, last_;
  std::vector<Phase> phases_;
};

}  // namespace eep::cuda
