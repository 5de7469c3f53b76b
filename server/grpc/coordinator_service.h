// gRPC services over the transport-free server::Coordinator (docs/architecture.md, Layers):
// CoordinatorServiceImpl for devices (proto/coordinator.proto) and, in admin_service.h,
// AdminServiceImpl for operators (proto/admin.proto). Synchronous gRPC API (one server
// thread per call in flight) except UploadUpdate, the one call a peer can hold open before
// it has sent a credential: it runs on the callback API, so an idle upload stream holds no
// thread, and it ends unless its header comes within ServiceLimits.upload_header_timeout.
// Unary calls and FetchTask take no thread before their request (and its token) has arrived.
//
// Bounds on every network input (ServiceLimits): the server's maximum message size (the
// builder in grpc_server.h sets it), string fields, the long-poll wait, and an upload's
// total_bytes, which must equal exactly the bytes of the task's tensors in the job's update
// encoding.
//
// What a bad upload costs the client:
//  - Transfer faults (a chunk at the wrong offset, overflow, no trailer, CRC mismatch, a
//    message out of order): the upload is discarded and the client KEEPS its task; it may
//    upload again (these are what a broken connection or a flaky link produce). The call
//    fails with INVALID_ARGUMENT (protocol) or DATA_LOSS (short payload, CRC).
//  - A stream that breaks off without a protocol fault (the connection went away) keeps
//    what arrived, so that the device resumes (UploadStatus, UpdateHeader.resume_offset)
//    instead of starting over: at most kMaxPartialUploads kept, each for
//    kPartialUploadLifetime, one per task; a new upload of the task from byte 0 or a resume
//    whose header differs discards it.
//  - A malformed update (total_bytes or manifest that differ from the task, shapes, NaN or
//    Inf, example count): Coordinator::RejectUpdate / SubmitUpdate drop the client from the
//    round (never the round) and the call fails with INVALID_ARGUMENT.
//  - Credentials, round, task and duplicates: the Coordinator's codes (UNAUTHENTICATED,
//    FAILED_PRECONDITION, ALREADY_EXISTS), checked before any payload byte is read.
//
// Thread safety: the services are thread-safe (the Coordinator is).
#ifndef FEDGE_SERVER_GRPC_COORDINATOR_SERVICE_H_
#define FEDGE_SERVER_GRPC_COORDINATOR_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/payload.h"
#include "proto/coordinator.grpc.pb.h"
#include "server/coordinator.h"
#include "server/rate_limiter.h"
#include "server/task_payload.h"

namespace fedge::server {

struct ServiceLimits {
  // Largest gRPC message accepted (and sent); chunks are ≤ 1 MiB, so 8 MiB leaves room
  // for headers with big manifests.
  int64_t max_message_bytes = int64_t{8} << 20;
  // Largest payload announced in an upload (the exact expected size is enforced too).
  int64_t max_payload_bytes = int64_t{1} << 30;
  // Preferred chunk size, told to clients at Register and used for downloads.
  int32_t chunk_bytes = 1 << 20;
  // Per-stream HTTP/2 receive window (fixed; BDP probing off): at most this much of an
  // upload is in flight unacknowledged, and lost when a connection breaks. 512 KiB keeps a
  // device at ≥ 10 MB/s over a 50 ms round trip.
  int32_t stream_window_bytes = 512 << 10;
  // An upload stream's header (with its credentials) must arrive within this; otherwise
  // the stream ends with DEADLINE_EXCEEDED.
  absl::Duration upload_header_timeout = absl::Seconds(20);
  // Longest a FetchTask call is held before answering `idle`.
  absl::Duration max_wait = absl::Seconds(30);
  // What `idle` tells the client to wait before calling again.
  int64_t retry_after_ms = 1000;
  // How often WatchJob polls the job.
  absl::Duration watch_interval = absl::Milliseconds(200);
  // Strings from the network (ids, tokens, reasons) longer than this are INVALID_ARGUMENT.
  size_t max_string_bytes = 1024;
  // Liveness timeout of the Coordinator (for RegisterResponse and ListClients).
  absl::Duration liveness_timeout = absl::Seconds(60);
  // FetchTask long polls and upload streams in flight from one peer host at once; beyond,
  // RESOURCE_EXHAUSTED (devices back off). Below the server's thread bound, so that one
  // address cannot hold every thread with long polls. A fleet behind one NAT address
  // shares it.
  int max_streams_per_peer = 512;
  // Registrations per peer host (the address without its port): `register_burst` at once,
  // then `register_per_second`; beyond, RESOURCE_EXHAUSTED (devices back off and retry).
  double register_per_second = 20;
  double register_burst = 500;
  // FetchBaseModel downloads in flight at once (each holds a server thread while it
  // sends), one per device; beyond, RESOURCE_EXHAUSTED (devices back off and resume). A
  // download is cancelled after base_download_floor plus its bytes at
  // base_download_min_bytes_per_second (a device that stops reading frees its slot; it
  // resumes from what it kept).
  int max_base_downloads = 8;
  absl::Duration base_download_floor = absl::Seconds(60);
  int64_t base_download_min_bytes_per_second = 32 << 10;
};

class CoordinatorServiceImpl final
    : public v1::Coordinator::WithCallbackMethod_UploadUpdate<v1::Coordinator::Service> {
 public:
  // `coordinator` must outlive the service.
  CoordinatorServiceImpl(Coordinator* coordinator, ServiceLimits limits);

  // Held FetchTask calls answer `idle` at once from now on (graceful shutdown).
  void BeginShutdown() { stopping_.store(true); }

  // Upload streams ended because their header did not come in time.
  int64_t header_timeouts() const { return header_timeouts_.load(); }

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status FetchTask(grpc::ServerContext* context, const v1::FetchTaskRequest* request,
                         grpc::ServerWriter<v1::TaskChunk>* writer) override;
  grpc::ServerReadReactor<v1::UpdateChunk>* UploadUpdate(
      grpc::CallbackServerContext* context, v1::UploadUpdateResponse* response) override;
  grpc::Status UploadStatus(grpc::ServerContext* context, const v1::UploadStatusRequest* request,
                            v1::UploadStatusResponse* response) override;
  grpc::Status Leave(grpc::ServerContext* context, const v1::LeaveRequest* request,
                     v1::LeaveResponse* response) override;
  grpc::Status FetchBaseModel(grpc::ServerContext* context,
                              const v1::FetchBaseModelRequest* request,
                              grpc::ServerWriter<v1::BaseModelChunk>* writer) override;
  grpc::Status SecureAggregationStep(grpc::ServerContext* context,
                                     const v1::SecAggStepRequest* request,
                                     v1::SecAggStepResponse* response) override;

 private:
  class UploadReactor;
  absl::Status TooManyStreams() const;

  // What arrived of an upload whose stream broke off, kept for a resume.
  struct PartialUpload {
    v1::UpdateHeader header;  // as the upload started (session token cleared)
    model::PayloadAssembler assembler;
    absl::Time kept;
  };
  static constexpr size_t kMaxPartialUploads = 256;
  static constexpr absl::Duration kPartialUploadLifetime = absl::Minutes(10);
  void KeepPartial(std::string task_id, PartialUpload partial);
  // Removes and returns the task's kept upload, if any (and not expired).
  std::optional<PartialUpload> TakePartial(const std::string& task_id);

  Coordinator* const coordinator_;
  const ServiceLimits limits_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> header_timeouts_{0};
  // The devices downloading a base now (FetchBaseModel: one each, max_base_downloads in all).
  absl::Mutex downloads_mu_;
  absl::flat_hash_set<std::string> downloading_ ABSL_GUARDED_BY(downloads_mu_);
  // Registrations per peer host (ServiceLimits.register_*).
  RateLimiter registrations_;
  // Long polls and uploads in flight per peer host (ServiceLimits.max_streams_per_peer).
  ConcurrencyLimiter peer_streams_;
  TaskPayloadEncoder encoder_;
  absl::Mutex partial_mu_;
  absl::flat_hash_map<std::string, PartialUpload> partial_ ABSL_GUARDED_BY(partial_mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_COORDINATOR_SERVICE_H_
