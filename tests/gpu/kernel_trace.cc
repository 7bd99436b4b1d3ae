// A kernel timeline for any CUDA program, without changing it: the driver loads this library
// when CUDA_INJECTION64_PATH names it and calls InitializeInjection(), which turns on CUPTI's
// kernel activity records (start and end of every kernel on the GPU's clock, graph-replayed
// and PDL-overlapped kernels included), and those of memory copies and sets (named
// memcpy_HtoD, memcpy_DtoH, ..., memset; grid, block and registers 0): between decode steps
// they show where the host's turn begins and ends. At exit the records go to
// $EEP_KERNEL_TRACE (default kernel-trace.csv) as lines
// "start_ns,end_ns,stream,grid,block,registers,name";
// scripts/kernel-trace-summary.py turns them into per-kernel durations and the gaps between
// kernels. For questions ncu cannot answer (it times each kernel alone): where a step's time
// goes between kernels. The GPU machines have ncu but no nsys.
//
//   export CUDA_INJECTION64_PATH=$PWD/.carry/bundle/lib/libeep_kernel_trace.so
//   EEP_KERNEL_TRACE=/tmp/trace.csv eep-bench decode --backend cuda ...
#include <cupti.h>
#include <cxxabi.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr size_t kBufferBytes = 8 << 20;  // CUPTI asks for buffers as it fills them

struct Record {
  uint64_t start, end;
  uint32_t stream;
  int grid, block, registers;
  std::string name;
};

std::mutex g_mu;
std::vector<Record> g_records;
uint64_t g_dropped = 0;

void report(const char* what, CUptiResult r) {
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, msg ? msg : "?");
}

std::string demangle(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : name;
  std::free(d);
  return out;
}

std::string copy_name(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy_HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy_DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy_DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "memcpy_PtoP";
    default: return "memcpy_other";
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::vector<Record> batch;
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
      batch.push_back(Record{k->start, k->end, k->streamId, k->gridX * k->gridY * k->gridZ,
                             k->blockX * k->blockY * k->blockZ, k->registersPerThread,
                             demangle(k->name)});
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
      batch.push_back(Record{m->start, m->end, m->streamId, 0, 0, 0, copy_name(m->copyKind)});
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
      batch.push_back(Record{m->start, m->end, m->streamId, 0, 0, 0, "memset"});
    }
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_mu);
  g_dropped += dropped;
  for (auto& r : batch) g_records.push_back(std::move(r));
}

void write_trace() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  const char* path = std::getenv("EEP_KERNEL_TRACE");
  if (path == nullptr || *path == '\0') path = "kernel-trace.csv";
  std::lock_guard<std::mutex> lock(g_mu);
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) {
    std::fprintf(stderr, "kernel_trace: cannot write %s: %s\n", path, std::strerror(errno));
    return;
  }
  std::fprintf(f, "start_ns,end_ns,stream,grid,block,registers,name\n");
  for (const Record& r : g_records)
    std::fprintf(f, "%llu,%llu,%u,%d,%d,%d,%s\n", (unsigned long long)r.start,
                 (unsigned long long)r.end, r.stream, r.grid, r.block, r.registers,
                 r.name.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_trace: %zu kernels and copies to %s (%llu records dropped)\n",
               g_records.size(), path, (unsigned long long)g_dropped);
}

}  // namespace

// Called by the CUDA driver (CUDA_INJECTION64_PATH) before the program's first CUDA call
// returns. Nonzero: loaded.
extern "C" int InitializeInjection(void) {
  CUptiResult r = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
  if (r != CUPTI_SUCCESS) {
    report("cuptiActivityRegisterCallbacks", r);
    return 0;
  }
  // Concurrent kernel records keep kernels concurrent (PDL overlap stays visible).
  r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  if (r != CUPTI_SUCCESS) {
    report("cuptiActivityEnable(CONCURRENT_KERNEL)", r);
    return 0;
  }
  for (CUpti_ActivityKind kind : {CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET}) {
    r = cuptiActivityEnable(kind);
    if (r != CUPTI_SUCCESS) report("cuptiActivityEnable(MEMCPY/MEMSET)", r);  // kernels still
  }
  std::atexit(write_trace);
  return 1;
}
