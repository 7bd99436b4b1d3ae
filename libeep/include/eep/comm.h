// Collectives between the engines of one group (design.md §2, §6). The interface is backend
// neutral (raw pointers and byte counts); GlooGroup implements it on CPU memory over TCP, with
// rendezvous through the coordinator's store; an NCCL implementation slots in for the CUDA
// backend. Every collective has a timeout and throws Error(kUnavailable or kTimeout) when a peer
// is gone, so a dead engine never hangs the others forever; a group's abort handle (Gloo) ends
// them sooner, as Error(kAborted), once the coordinator has declared the group dead.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace eep {

class StoreClient;

// One point-to-point operation of Group::send_recv_batch.
struct P2POp {
  enum class Kind { kSend, kRecv } kind = Kind::kSend;
  void* data = nullptr;  // read by a send, written by a receive
  size_t bytes = 0;
  int peer = 0;
};

// Ends, from another thread, the waits of a member's collectives in flight and of all later
// ones (they throw Error(kAborted) naming `why`): the engine's heartbeat thread calls it when
// the coordinator has declared the group's generation dead, so a member never sits out the
// collective timeout in a group that is already gone.
class GroupAbort {
 public:
  virtual ~GroupAbort() = default;
  virtual void abort(const std::string& why) = 0;
};

class Group {
 public:
  virtual ~Group() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;
  // True when alltoallv/send/recv/broadcast take device (GPU) pointers (NCCL); false for host
  // memory (Gloo). The reductions, allgather and alltoall_counts always take host pointers.
  virtual bool device_buffers() const { return false; }

  // Element-wise sum / max / min of `count` int64 values across the group, in place.
  virtual void allreduce_sum(int64_t* data, size_t count) = 0;
  virtual void allreduce_max(int64_t* data, size_t count) = 0;
  virtual void allreduce_min(int64_t* data, size_t count) = 0;
  // Gathers `count` int64 from every rank into out[size * count] (rank-major).
  virtual void allgather(const int64_t* in, int64_t* out, size_t count) = 0;
  // All-to-all with per-peer byte counts: send_bytes[p] bytes from `in` (peers in rank order,
  // packed) go to peer p; recv_bytes[p] bytes from p land in `out` (packed in rank order).
  // Callers exchange counts first (alltoall of int64 via alltoall_counts).
  virtual void alltoallv(const void* in, const std::vector<int64_t>& send_bytes, void* out,
                         const std::vector<int64_t>& recv_bytes) = 0;
  // out[p] = what peer p put in its in[rank()]; in/out have size() entries.
  virtual void alltoall_counts(const int64_t* in, int64_t* out) = 0;
  // Point-to-point (weight transfer): blocking send/recv of `bytes` bytes. `tag` disambiguates
  // concurrent transfers between the same pair.
  virtual void send(const void* data, size_t bytes, int peer, uint32_t tag) = 0;
  virtual void recv(void* data, size_t bytes, int peer, uint32_t tag) = 0;
  // Many sends and receives as one unit, returning when all are complete: within a batch the
  // operations may proceed in any order, so any pattern between members is deadlock-free as long
  // as every member's batches hold its side of the same exchanges (operations between one pair
  // match in the order each side lists them). For bulk device transfers (weights), where one
  // send/recv per message would wait on the host each time. Groups with device_buffers() only;
  // the default throws Error(kUnavailable).
  virtual void send_recv_batch(const std::vector<P2POp>& ops);
  // The same batch queued behind the work already on `stream` (a cudaStream_t on the group's
  // device), returning without waiting: work queued on the stream after it sees its data. The
  // caller ends with wait_stream(stream), which waits for everything queued there with the
  // group's timeout and error checks (a dead peer aborts the communicator instead of hanging the
  // stream). Per-step hot path: unlike send_recv_batch it does not query each buffer's memory
  // kind, so every buffer must be device memory of the group's device. Groups with
  // device_buffers() only; the defaults throw Error(kUnavailable).
  virtual void send_recv_batch_async(const std::vector<P2POp>& ops, void* stream);
  virtual void wait_stream(void* stream);
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Sets up now what the group's first calls would set up lazily, so that serving on a group
  // made in the background never waits for it (NCCL connects peers at the first call of each
  // kind: ~0.35 s on two H200s). Collective: every member calls it. Default: nothing to do.
  virtual void warm_up() {}
  // The handle that aborts this group's collectives (it may outlive the group, harmlessly), or
  // null where the group has its own way out (NCCL: wait_stream's error checks).
  virtual std::shared_ptr<GroupAbort> abort_handle() { return nullptr; }
};

struct GlooGroupOptions {
  std::string name;        // unique per membership; the store key prefix ("g3" ...)
  int rank = 0;
  int size = 1;
  std::string host = "127.0.0.1";  // address peers reach this engine on (EEP_COMM_HOST)
  std::chrono::milliseconds timeout = std::chrono::seconds(30);  // per collective
};

// Joins (or creates) the group named opts.name through the store: every member calls this with
// the same name and size and its own rank. Throws Error(kTimeout) if members do not all arrive
// within opts.timeout.
std::unique_ptr<Group> make_gloo_group(StoreClient& store, const GlooGroupOptions& opts);

struct NcclGroupOptions {
  std::string name;  // unique per membership; the store key the unique id is published under
  int rank = 0;
  int size = 1;
  int device = 0;    // CUDA device of this member
  std::chrono::milliseconds timeout = std::chrono::seconds(30);  // init and every collective
};

// An NCCL communicator over the members' GPUs (CUDA builds only): rank 0 creates the unique id
// and publishes it through the store; all members initialise non-blocking and poll with the
// timeout. Data calls (alltoallv, send, recv, broadcast) take device pointers and run on the
// group's own stream, returning when the transfer is complete; the host-side control calls
// (reductions, allgather, alltoall_counts, barrier) stage through device memory. Throws
// Error(kUnavailable) in a CPU-only build or when NCCL fails, Error(kTimeout) on a timeout (the
// communicator is then aborted, never left hanging).
std::unique_ptr<Group> make_nccl_group(StoreClient& store, const NcclGroupOptions& opts);

}  // namespace eep
