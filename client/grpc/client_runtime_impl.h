// ClientRuntime's insides, shared by its two files: client/grpc/client_runtime.cc (the
// device's loop: register, long-poll, the round, leave) and client/grpc/grpc_device_link.cc
// (client/device_link.h over gRPC: uploads with resumption, secure-aggregation steps,
// declines). Internal to ClientRuntime; nothing else includes it.
#ifndef FEDGE_CLIENT_GRPC_CLIENT_RUNTIME_IMPL_H_
#define FEDGE_CLIENT_GRPC_CLIENT_RUNTIME_IMPL_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/base_cache.h"
#include "client/device_link.h"
#include "client/device_round.h"
#include "client/fedcg_device.h"
#include "data/dataset.h"
#include "model/transformer.h"
#include "client/grpc/backoff.h"
#include "client/grpc/client_runtime.h"
#include "client/preprocessing.h"
#include "model/payload.h"
#include "proto/coordinator.grpc.pb.h"

namespace fedge::client {
namespace runtime_internal {

// The one grpc::Status → absl::Status adapter of the client (the codes are the same enum
// values in both libraries).
absl::Status FromGrpc(const grpc::Status& s, absl::string_view what);
// Errors a later attempt may not see: the coordinator is away, restarting or overloaded.
bool Retryable(const absl::Status& s);
// Now + d, as gRPC takes deadlines.
std::chrono::system_clock::time_point Deadline(absl::Duration d);

// A downloaded task (client/device_round.h) and when it arrived.
struct Task : DeviceTask {
  absl::Time received;
};

}  // namespace runtime_internal

struct ClientRuntime::Impl final : DeviceLink {
  ClientRuntimeOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> stub;
  LocalDataCache data{nullptr};
  Backoff backoff;

  mutable absl::Mutex mu;
  std::string client_id ABSL_GUARDED_BY(mu);
  ClientRuntimeStats stats ABSL_GUARDED_BY(mu);
  // The call that `stop` cancels (the long-poll), if one is in flight.
  grpc::ClientContext* cancellable ABSL_GUARDED_BY(mu) = nullptr;

  // Run's `stop` (set while Run runs): the link's pauses end when it is set.
  const std::atomic<bool>* stop = nullptr;
  std::string session_token;  // Run's thread only
  std::string device_key;     // proves client_id at the next Register (Run's thread only)
  std::string abandoned_task_id;  // the last task given up (not fetched again)
  int64_t chunk_bytes = model::kDefaultChunkBytes;
  // RegisterResponse.liveness_timeout_ms: the coordinator drops a device silent this long.
  absl::Duration liveness_timeout = absl::Seconds(60);

  // FedCG (Run's thread only): the device's FedCG state (its private E and D, kept beside
  // the state file), and the local data as FedCG takes it for `fedcg_data_job`, prepared
  // from `fedcg_data_of`.
  FedCgDevice fedcg;
  std::unique_ptr<FedCgDeviceData> fedcg_data;
  // Language-model tasks (Run's thread only): the device's text as token ids, and its model
  // (the base with the adapters and format of the job `lm_model_key` names).
  // The text itself is kept only while bases can be fetched (it is encoded again with each
  // new base's tokenizer); lm_tokens is empty until a base is in hand.
  std::vector<int32_t> lm_tokens;
  std::vector<data::TextDocument> lm_text;
  int64_t lm_text_bytes = 0;   // registered as the example count until tokens are known
  std::string lm_base_file;    // the base in use: options.lm_base_path or a fetched one
  std::string lm_base_sha256;  // its SHA-256 (hex): tasks of another are declined or fetch it
  std::optional<BaseCache> base_cache;  // options.lm_base_cache_dir
  std::unique_ptr<model::TransformerLM> lm_model;
  std::string lm_model_key;
  bool has_text() const { return !lm_tokens.empty() || !lm_text.empty(); }
  // A task names a base (the file, or its int4 device form) this device does not use, and
  // it can fetch bases.
  bool NeedsBase(const v1::TaskHeader& task) const {
    const v1::LanguageModelTask& lm = task.language_model();
    return task.has_language_model() && base_cache.has_value() && !lm.base_sha256().empty() &&
           lm.base_sha256() != lm_base_sha256 &&
           (lm.base_int4_sha256().empty() || lm.base_int4_sha256() != lm_base_sha256);
  }
  // What such a device fetches: the int4 device form when the job has one (a third of the
  // bytes), else the file.
  static const std::string& BaseToFetch(const v1::TaskHeader& task) {
    const v1::LanguageModelTask& lm = task.language_model();
    return lm.base_int4_sha256().empty() ? lm.base_sha256() : lm.base_int4_sha256();
  }
  // The base with digest `sha256` in use from now on: from the cache, or downloaded
  // (client/grpc/base_download.cc), then its tokenizer encodes the device's text. On error,
  // `*decline` says whether the task should be declined (this device cannot take that
  // base: too large, not a language model, text that encodes to nothing) rather than
  // retried (the network, the coordinator's answer, a download that did not match).
  absl::Status ObtainBase(const std::string& sha256, const std::atomic<bool>& stop,
                          bool* decline);
  absl::StatusOr<std::string> DownloadBase(const std::string& sha256,
                                           const std::atomic<bool>& stop, bool* decline);
  // Makes the base file at `path` (SHA-256 `sha256`) the device's: its tokenizer encodes
  // the device's text; the loaded model of an earlier job is dropped.
  absl::Status UseBase(const std::string& path, const std::string& sha256);
  bool has_data() const { return data.has_raw(); }
  const data::Dataset* fedcg_data_of = nullptr;
  std::string fedcg_data_job;

  explicit Impl(ClientRuntimeOptions o)
      : options(std::move(o)),
        backoff(options.backoff, options.seed),
        fedcg(FedCgDevice::Options{
            options.state_path.empty() ? std::string() : options.state_path + ".fedcg"}) {}

  std::string id() const {
    absl::MutexLock lock(&mu);
    return client_id;
  }
  // While it lives, `ctx` is the call Stop cancels (a long poll, a base download).
  class Cancellable {
   public:
    Cancellable(Impl* impl, grpc::ClientContext* ctx) : impl_(impl) {
      absl::MutexLock lock(&impl_->mu);
      impl_->cancellable = ctx;
    }
    ~Cancellable() {
      absl::MutexLock lock(&impl_->mu);
      impl_->cancellable = nullptr;
    }
    Cancellable(const Cancellable&) = delete;
    Cancellable& operator=(const Cancellable&) = delete;

   private:
    Impl* impl_;
  };
  void Count(int64_t ClientRuntimeStats::*field) {
    absl::MutexLock lock(&mu);
    ++(stats.*field);
  }

  // Sleeps `d`, waking early when `stop` is set. False when stopped.
  static bool SleepUnlessStopped(absl::Duration d, const std::atomic<bool>& stop) {
    const absl::Time end = absl::Now() + d;
    while (!stop.load()) {
      const absl::Duration left = end - absl::Now();
      if (left <= absl::ZeroDuration()) return true;
      absl::SleepFor(std::min(left, absl::Milliseconds(50)));
    }
    return false;
  }

  absl::Status Register();
  // A FedCG task's round on this device (see client_runtime.h, FedCG tasks): evaluates, then
  // trains the job's FedCgClient; the update holds Δ of C.* and G.* only.
  // A language-model task on the device's text and model (loaded for the task's job).
  absl::StatusOr<LocalUpdate> TrainLanguageModel(const runtime_internal::Task& task,
                                                 uint64_t shuffle_seed,
                                                 const std::function<bool()>& cancelled);
  absl::StatusOr<LocalUpdate> TrainFedCg(const runtime_internal::Task& task, const std::function<bool()>& cancelled);
  // One long-poll and, when it brings a task, the whole round. OK also when idle.
  absl::Status FetchAndRun(const std::atomic<bool>& stop);
  absl::StatusOr<std::optional<runtime_internal::Task>> Fetch(const std::atomic<bool>& stop);
  // One upload stream of `payload` from byte `offset` (> 0: resuming an interrupted upload).
  absl::Status UploadFrom(const v1::TaskHeader& task, const EncodedUpdate& update, int64_t offset);
  // How many bytes of the task's interrupted upload the coordinator kept (0: start over).
  int64_t KeptUploadBytes(const v1::TaskHeader& task);

  // ---- DeviceLink (client/device_link.h), over gRPC ----
  // Uploads in chunks; a broken connection restarts the upload, from what the coordinator
  // kept, while the task's deadline allows; a lost session registers again (same id) and
  // sends once more. ALREADY_EXISTS (an earlier attempt arrived) counts as done.
  absl::Status Upload(const v1::TaskHeader& task, const EncodedUpdate& update) override;
  // Best effort: a failure is only logged (the round drops the device at its deadline).
  absl::Status Decline(const v1::TaskHeader& task, const v1::UpdateHeader& header) override;
  // A lost connection is retried a few times; ALREADY_EXISTS on a retry (the first attempt
  // arrived, its answer was lost) is taken as answered.
  absl::StatusOr<v1::SecAggStepResponse> SecureAggregationStep(
      const v1::TaskHeader& task, v1::SecAggStepRequest request) override;
  bool Pause(absl::Duration d) override {
    return stop == nullptr ? (absl::SleepFor(d), true) : SleepUnlessStopped(d, *stop);
  }
  void Leave();
};

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_GRPC_CLIENT_RUNTIME_IMPL_H_
