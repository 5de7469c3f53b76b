#include "client/grpc/client_runtime.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "client/device_state.h"
#include "client/memory_budget.h"
#include "client/preprocessing.h"
#include "client/device_link.h"
#include "client/device_round.h"
#include "client/fedcg_device.h"
#include "client/fedcg_trainer.h"
#include "client/local_trainer.h"
#include "model/fedcg_nets.h"
#include "model/payload.h"
#include "model/sequential.h"
#include "proto/coordinator.grpc.pb.h"

namespace fedge::client {
namespace {

// The one grpc::Status → absl::Status adapter of the client (the codes are the same enum
// values in both libraries).
absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("ClientRuntime: ", what, ": ", s.error_message()));
}

// Errors a later attempt may not see: the coordinator is away, restarting or overloaded.
bool Retryable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kCancelled:
      return true;
    default:
      return false;
  }
}

std::chrono::system_clock::time_point Deadline(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

// A downloaded task (client/device_round.h) and when it arrived.
struct Task : DeviceTask {
  absl::Time received;
};

}  // namespace

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

  // FedCG (Run's thread only): the device's FedCG state (its private E and D, kept beside
  // the state file), and the local data as FedCG takes it for `fedcg_data_job`, prepared
  // from `fedcg_data_of`.
  FedCgDevice fedcg;
  std::unique_ptr<FedCgDeviceData> fedcg_data;
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
  absl::StatusOr<LocalUpdate> TrainFedCg(const Task& task, const std::function<bool()>& cancelled);
  // One long-poll and, when it brings a task, the whole round. OK also when idle.
  absl::Status FetchAndRun(const std::atomic<bool>& stop);
  absl::StatusOr<std::optional<Task>> Fetch(const std::atomic<bool>& stop);
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

absl::Status ClientRuntime::Impl::Register() {
  v1::RegisterRequest req;
  req.set_enrollment_token(options.enrollment_token);
  *req.mutable_profile() = options.profile;
  req.mutable_profile()->set_num_examples(data.raw().num_examples);
  req.set_previous_client_id(id());
  req.set_device_key(device_key);
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(absl::Seconds(30)));
  FEDGE_RETURN_IF_ERROR(FromGrpc(stub->Register(&ctx, req, &resp), "Register"));
  if (resp.client_id().empty() || resp.session_token().empty()) {
    return absl::InternalError("ClientRuntime: Register returned no client id or session");
  }
  const std::string previous = id();
  {
    absl::MutexLock lock(&mu);
    client_id = resp.client_id();
    ++stats.registrations;
  }
  session_token = resp.session_token();
  // A new id comes with its key; the old id keeps the key it has.
  if (!resp.device_key().empty()) device_key = resp.device_key();
  chunk_bytes = model::kMaxChunkBytes;
  if (resp.chunk_bytes() > 0) chunk_bytes = std::min<int64_t>(chunk_bytes, resp.chunk_bytes());
  if (resp.max_message_bytes() > 0) {
    // Leave room for the message framing around a chunk.
    chunk_bytes = std::max<int64_t>(1, std::min<int64_t>(chunk_bytes, resp.max_message_bytes() / 2));
  }
  if (!options.state_path.empty() && !resp.device_key().empty()) {
    // Not retryable: a device that cannot keep its id would enroll anew on every start.
    if (absl::Status saved = SaveDeviceState(options.state_path, {resp.client_id(), device_key});
        !saved.ok()) {
      return absl::FailedPreconditionError(saved.message());
    }
  }
  FEDGE_LOG(INFO) << "registered as " << resp.client_id()
                  << (previous.empty() ? "" : (previous == resp.client_id() ? " (same id)" : " (new id)"));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Task>> ClientRuntime::Impl::Fetch(const std::atomic<bool>& stop) {
  v1::FetchTaskRequest req;
  req.set_client_id(id());
  req.set_session_token(session_token);
  req.set_wait_seconds(options.fetch_wait_seconds);
  grpc::ClientContext ctx;
  // The long-poll plus time to download a large model.
  ctx.set_deadline(Deadline(absl::Seconds(options.fetch_wait_seconds) + absl::Minutes(10)));
  {
    absl::MutexLock lock(&mu);
    cancellable = &ctx;
  }
  struct Uncancellable {
    Impl* impl;
    ~Uncancellable() {
      absl::MutexLock lock(&impl->mu);
      impl->cancellable = nullptr;
    }
  } uncancellable{this};
  if (stop.load()) return std::optional<Task>();  // raced with a stop before registering ctx

  std::unique_ptr<grpc::ClientReader<v1::TaskChunk>> reader = stub->FetchTask(&ctx, req);
  v1::TaskChunk chunk;
  // Reads the rest of the stream and returns its status (after an early error, cancels).
  auto finish = [&](absl::Status error) -> absl::Status {
    if (!error.ok()) {
      ctx.TryCancel();
      reader->Finish().IgnoreError();
      return error;
    }
    while (reader->Read(&chunk)) {
    }
    return FromGrpc(reader->Finish(), "FetchTask");
  };
  if (!reader->Read(&chunk)) {
    absl::Status s = FromGrpc(reader->Finish(), "FetchTask");
    if (stop.load()) return std::optional<Task>();
    if (s.ok()) s = absl::UnavailableError("ClientRuntime: FetchTask ended without a message");
    return s;
  }
  if (chunk.has_idle()) {
    const v1::TaskIdle idle = chunk.idle();
    absl::Status s = finish(absl::OkStatus());
    if (stop.load()) return std::optional<Task>();
    FEDGE_RETURN_IF_ERROR(s);
    const int64_t retry_ms = std::clamp<int64_t>(idle.retry_after_ms(), 0, 30000);
    if (retry_ms > 0) SleepUnlessStopped(absl::Milliseconds(retry_ms), stop);
    return std::optional<Task>();
  }
  if (!chunk.has_header()) {
    return finish(absl::InvalidArgumentError(
        "ClientRuntime: FetchTask: the stream did not start with a header or idle"));
  }
  if (!abandoned_task_id.empty() && chunk.header().task_id() == abandoned_task_id) {
    // The coordinator hands a task out again until the round drops us; do not download
    // and fail it again: ask again later.
    finish(absl::CancelledError("task already abandoned")).IgnoreError();
    SleepUnlessStopped(absl::Seconds(2), stop);
    return std::optional<Task>();
  }
  Task task;
  task.received = absl::Now();
  // A task this client cannot take (bad spec or manifest) is not fetched again.
  auto bad_task = [&](const absl::Status& why) {
    abandoned_task_id = chunk.header().task_id();
    Count(&ClientRuntimeStats::tasks_abandoned);
    return finish(why);
  };
  // The models the payload must fill and its size, and the memory budget, from the header
  // alone: a task that would not fit is refused before its payload is downloaded.
  DeviceResources device;
  device.memory_budget_bytes = options.profile.memory_budget_bytes();
  device.num_examples = data.raw().num_examples;
  device.example_floats = data.raw().feature_size();
  device.eval_examples = options.eval_data != nullptr ? options.eval_data->num_examples : 0;
  absl::StatusOr<DeviceTask> admitted = AdmitTask(chunk.header(), device);
  if (!admitted.ok()) {
    if (absl::IsResourceExhausted(admitted.status())) {
      Decline(chunk.header(), DeclineHeader(chunk.header(), id(), admitted.status().message()))
          .IgnoreError();  // best effort (logged)
    }
    return bad_task(admitted.status());
  }
  static_cast<DeviceTask&>(task) = *std::move(admitted);
  const int64_t expected_bytes = task.payload_bytes;
  auto assembler = model::PayloadAssembler::Create(task.header.total_bytes(),
                                                   std::min(expected_bytes, options.max_task_bytes));
  if (!assembler.ok()) return finish(assembler.status());
  std::optional<std::string> payload;
  while (reader->Read(&chunk)) {
    if (chunk.has_data()) {
      absl::Status s = assembler->Add(chunk.data());
      if (!s.ok()) return finish(s);
    } else if (chunk.has_trailer()) {
      auto bytes = assembler->Finish(chunk.trailer());
      if (!bytes.ok()) return finish(bytes.status());
      payload = std::move(bytes).value();
      break;
    } else {
      return finish(absl::InvalidArgumentError(
          "ClientRuntime: FetchTask: unexpected message in the task payload"));
    }
  }
  absl::Status s = finish(absl::OkStatus());
  if (!payload.has_value()) {
    if (stop.load()) return std::optional<Task>();
    FEDGE_RETURN_IF_ERROR(s);
    return absl::UnavailableError("ClientRuntime: FetchTask: the task stream ended early");
  }
  if (absl::Status decoded = DecodeTaskPayload(*payload, task); !decoded.ok()) {
    abandoned_task_id = task.header.task_id();
    Count(&ClientRuntimeStats::tasks_abandoned);
    return decoded;
  }
  return std::optional<Task>(std::move(task));
}

int64_t ClientRuntime::Impl::KeptUploadBytes(const v1::TaskHeader& t) {
  v1::UploadStatusRequest req;
  req.set_client_id(id());
  req.set_session_token(session_token);
  req.set_task_id(t.task_id());
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(absl::Seconds(10)));
  v1::UploadStatusResponse resp;
  const absl::Status s = FromGrpc(stub->UploadStatus(&ctx, req, &resp), "UploadStatus");
  if (!s.ok()) return 0;  // the upload starts over; the stream reports what is wrong
  return std::max<int64_t>(0, resp.bytes_received());
}

absl::Status ClientRuntime::Impl::UploadFrom(const v1::TaskHeader& t, const EncodedUpdate& update,
                                             int64_t offset) {
  const std::string& payload = update.payload;
  v1::UpdateChunk header;
  v1::UpdateHeader* h = header.mutable_header();
  *h = update.header;
  h->set_session_token(session_token);
  h->set_resume_offset(offset);

  grpc::ClientContext ctx;
  // Not cancelled by `stop`: a started upload is finished.
  absl::Duration limit = absl::Minutes(10);
  if (t.deadline_unix_ms() > 0) {
    limit = std::max(absl::Seconds(5),
                     absl::FromUnixMillis(t.deadline_unix_ms()) - absl::Now() + absl::Seconds(5));
  }
  ctx.set_deadline(Deadline(limit));
  v1::UploadUpdateResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer = stub->UploadUpdate(&ctx, &resp);
  bool ok = writer->Write(header);
  if (ok) {
    v1::UpdateChunk c;
    const absl::string_view rest = absl::string_view(payload).substr(static_cast<size_t>(offset));
    ok = model::ForEachChunk(rest, chunk_bytes, [&](const v1::DataChunk& d) {
      *c.mutable_data() = d;
      c.mutable_data()->set_offset(d.offset() + offset);
      {
        absl::MutexLock lock(&mu);
        stats.upload_bytes_sent += static_cast<int64_t>(d.data().size());
      }
      return writer->Write(c);
    });
  }
  if (ok) {
    v1::UpdateChunk trailer;
    *trailer.mutable_trailer() = model::MakeTrailer(payload);
    ok = writer->Write(trailer);
  }
  if (ok) writer->WritesDone();
  return FromGrpc(writer->Finish(), "UploadUpdate");
}

absl::Status ClientRuntime::Impl::Upload(const v1::TaskHeader& t, const EncodedUpdate& update) {
  const std::string where = absl::StrCat("job ", t.job_id(), " round ", t.round());
  const absl::Time deadline =
      t.deadline_unix_ms() > 0 ? absl::FromUnixMillis(t.deadline_unix_ms()) : absl::InfiniteFuture();
  const int64_t size = static_cast<int64_t>(update.payload.size());
  Backoff retry(options.backoff, options.seed ^ 0x5eed);
  bool reregistered = false;
  int64_t offset = 0;
  for (;;) {
    absl::Status s = UploadFrom(t, update, offset);
    if (absl::IsFailedPrecondition(s) && offset > 0) {
      // The coordinator no longer holds what it had kept: send everything again.
      offset = 0;
      continue;
    }
    if (s.ok() || absl::IsAlreadyExists(s)) return absl::OkStatus();
    if (absl::IsUnauthenticated(s) && !reregistered) {
      // The session is gone (e.g. the coordinator lost it): register again (same id) and
      // send the update with the new session.
      reregistered = true;
      FEDGE_LOG(WARNING) << where << ": " << s.message() << "; registering again";
      FEDGE_RETURN_IF_ERROR(Register());
      continue;
    }
    if (!Retryable(s) || absl::IsUnauthenticated(s) || (stop != nullptr && stop->load())) return s;
    const absl::Duration wait = retry.NextDelay();
    if (absl::Now() + wait > deadline) return s;
    FEDGE_LOG(WARNING) << where << ": upload failed (" << s.message() << "); retrying in "
                       << absl::FormatDuration(wait);
    Count(&ClientRuntimeStats::connection_failures);
    Pause(wait);
    // Resume from what the coordinator kept of this upload, if anything.
    offset = std::min<int64_t>(KeptUploadBytes(t), size);
    if (offset > 0) {
      Count(&ClientRuntimeStats::uploads_resumed);
      FEDGE_LOG(INFO) << where << ": resuming the upload at byte " << offset << " of " << size;
    }
  }
}

absl::StatusOr<v1::SecAggStepResponse> ClientRuntime::Impl::SecureAggregationStep(
    const v1::TaskHeader& t, v1::SecAggStepRequest request) {
  request.set_client_id(id());
  request.set_session_token(session_token);
  request.set_job_id(t.job_id());
  request.set_round(t.round());
  request.set_task_id(t.task_id());
  Backoff retry(options.backoff, options.seed ^ 0x5ec);
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(absl::Seconds(60)));
    v1::SecAggStepResponse response;
    const absl::Status s =
        FromGrpc(stub->SecureAggregationStep(&ctx, request, &response), "SecureAggregationStep");
    if (s.ok()) return response;
    // The coordinator already has this message (an earlier attempt arrived; its answer was
    // lost): go on as if it had been answered.
    if (absl::IsAlreadyExists(s) && attempt > 0) return v1::SecAggStepResponse();
    if (!absl::IsUnavailable(s) || attempt >= 4 || (stop != nullptr && stop->load())) return s;
    Count(&ClientRuntimeStats::connection_failures);
    Pause(retry.NextDelay());
  }
}

absl::Status ClientRuntime::Impl::Decline(const v1::TaskHeader&, const v1::UpdateHeader& header) {
  v1::UpdateChunk msg;
  v1::UpdateHeader* h = msg.mutable_header();
  *h = header;
  h->set_session_token(session_token);
  h->mutable_metrics()->set_peak_rss_bytes(PeakRssBytes());
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(absl::Seconds(10)));
  v1::UploadUpdateResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer = stub->UploadUpdate(&ctx, &resp);
  if (writer->Write(msg)) writer->WritesDone();
  const absl::Status s = FromGrpc(writer->Finish(), "UploadUpdate (declining the task)");
  if (!s.ok()) {
    FEDGE_LOG(WARNING) << s.message();
  }
  return s;
}

absl::StatusOr<LocalUpdate> ClientRuntime::Impl::TrainFedCg(
    const Task& task, const std::function<bool()>& cancelled) {
  const v1::TaskHeader& t = task.header;
  if (fedcg_data == nullptr || fedcg_data_of != &data.raw() || fedcg_data_job != t.job_id()) {
    FEDGE_ASSIGN_OR_RETURN(FedCgDeviceData prepared,
                           FedCgDevice::PrepareData(t, id(), data.raw(), options.eval_data.get()));
    fedcg_data = std::make_unique<FedCgDeviceData>(std::move(prepared));
    fedcg_data_of = &data.raw();
    fedcg_data_job = t.job_id();
  }
  const int64_t restored = fedcg.states_restored();
  FEDGE_ASSIGN_OR_RETURN(LocalUpdate u, fedcg.RunTask(t, task.model, id(), *fedcg_data, cancelled));
  if (fedcg.states_restored() > restored) Count(&ClientRuntimeStats::fedcg_states_restored);
  if (options.testing_fedcg_upload_extractor) {
    // A broken device for tests: E's values travel with the update.
    for (const model::Parameter* p : fedcg.client()->extractor().parameters()) {
      v1::TensorProto* out = u.delta.add_parameters();
      out->set_name(p->name);
      for (int d : p->shape) out->add_shape(d);
      out->mutable_values()->Assign(p->value.begin(), p->value.end());
    }
  }
  if (options.on_fedcg_trained) options.on_fedcg_trained(*fedcg.client());
  return u;
}

absl::Status ClientRuntime::Impl::FetchAndRun(const std::atomic<bool>& stop) {
  FEDGE_ASSIGN_OR_RETURN(std::optional<Task> task, Fetch(stop));
  if (!task.has_value() || stop.load()) return absl::OkStatus();
  const v1::TaskHeader& t = task->header;
  const std::string where = absl::StrCat("job ", t.job_id(), " round ", t.round());
  const absl::Time deadline =
      t.deadline_unix_ms() > 0 ? absl::FromUnixMillis(t.deadline_unix_ms()) : absl::InfiniteFuture();
  auto abandon = [&](const absl::Status& why) {
    abandoned_task_id = t.task_id();
    Count(&ClientRuntimeStats::tasks_abandoned);
    FEDGE_LOG(WARNING) << where << ": task abandoned: " << why.message();
    return absl::OkStatus();
  };

  if (options.data_source) {
    auto fresh = options.data_source();
    if (!fresh.ok()) return abandon(fresh.status());
    if (*fresh == nullptr) return abandon(absl::FailedPreconditionError("data source gave no data"));
    data.Reset(std::move(fresh).value());
  }
  const RoundSeeds seeds = DeviceRoundSeeds(t, id());
  auto cancelled = [&stop, deadline] { return stop.load() || absl::Now() > deadline; };
  absl::StatusOr<LocalUpdate> update;
  if (t.has_fed_cg()) {
    update = TrainFedCg(*task, cancelled);
  } else {
    auto local = data.Get(t.preprocessing());
    if (!local.ok()) return abandon(local.status());
    update = TrainTask(t, task->model, task->teacher.has_value() ? &*task->teacher : nullptr,
                       **local, seeds.shuffle, cancelled);
  }
  if (!update.ok()) {
    if (absl::IsCancelled(update.status()) && stop.load()) {
      Count(&ClientRuntimeStats::tasks_abandoned);
      FEDGE_LOG(INFO) << where << ": training abandoned (stopping)";
      return absl::OkStatus();
    }
    if (absl::IsCancelled(update.status())) {
      return abandon(absl::DeadlineExceededError("the round's deadline passed during training"));
    }
    return abandon(update.status());
  }
  if (absl::Now() > deadline) {
    return abandon(absl::DeadlineExceededError("the round's deadline passed"));
  }
  SendOptions send;
  send.noise_seed = options.testing_dp_noise_seed;
  send.peak_rss_bytes = PeakRssBytes();
  absl::StatusOr<int64_t> sent = SendUpdate(t, *update, id(), send, *this);
  if (!sent.ok()) {
    // A session lost for good: Run registers again.
    if (absl::IsUnauthenticated(sent.status())) return sent.status();
    return abandon(sent.status());
  }
  const int64_t bytes_up = *sent;
  RoundReport r;
  r.job_id = t.job_id();
  r.round = t.round();
  r.task_id = t.task_id();
  r.num_examples = update->num_examples;
  r.train_loss = update->train_loss;
  r.train_accuracy = update->train_accuracy;
  r.steps = update->steps;
  r.train_seconds = update->seconds;
  r.total_seconds = absl::ToDoubleSeconds(absl::Now() - task->received);
  r.bytes_down = t.total_bytes();
  r.bytes_up = bytes_up;
  r.peak_rss_bytes = PeakRssBytes();
  r.eval_accuracy = update->eval_accuracy;
  r.eval_examples = update->eval_examples;
  Count(&ClientRuntimeStats::rounds_completed);
  if (options.on_round) options.on_round(r);
  return absl::OkStatus();
}

void ClientRuntime::Impl::Leave() {
  v1::LeaveRequest req;
  req.set_client_id(id());
  req.set_session_token(session_token);
  req.set_reason("client stopped with --leave");
  v1::LeaveResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(absl::Seconds(5)));
  const absl::Status s = FromGrpc(stub->Leave(&ctx, req, &resp), "Leave");
  if (!s.ok()) {
    FEDGE_LOG(WARNING) << s.message();
  }
}

ClientRuntime::ClientRuntime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClientRuntime::~ClientRuntime() = default;

absl::StatusOr<std::unique_ptr<ClientRuntime>> ClientRuntime::Create(
    ClientRuntimeOptions options) {
  if (options.target.empty()) return absl::InvalidArgumentError("ClientRuntime: no target");
  if (options.enrollment_token.empty()) {
    return absl::InvalidArgumentError("ClientRuntime: no enrollment token");
  }
  if (options.tls_cert_chain_pem.empty() != options.tls_private_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "ClientRuntime: mutual TLS needs both a certificate chain and a private key");
  }
  if (options.insecure && (!options.tls_root_ca_pem.empty() || !options.tls_cert_chain_pem.empty())) {
    return absl::InvalidArgumentError("ClientRuntime: insecure and TLS material are exclusive");
  }
  if (options.fetch_wait_seconds < 0 || options.fetch_wait_seconds > 3600) {
    return absl::InvalidArgumentError("ClientRuntime: fetch_wait_seconds must be in [0, 3600]");
  }
  FEDGE_RETURN_IF_ERROR(ValidateBackoffOptions(options.backoff));
  std::shared_ptr<const data::Dataset> initial = options.data;
  if (initial == nullptr && options.data_source) {
    FEDGE_ASSIGN_OR_RETURN(initial, options.data_source());
  }
  if (initial == nullptr) {
    return absl::InvalidArgumentError("ClientRuntime: no local data (data or data_source)");
  }
  FEDGE_RETURN_IF_ERROR(data::ValidateDataset(*initial));

  auto impl = std::make_unique<Impl>(std::move(options));
  impl->data.Reset(std::move(initial));
  if (!impl->options.requested_client_id.empty()) {
    absl::MutexLock lock(&impl->mu);
    impl->client_id = impl->options.requested_client_id;
  }
  if (!impl->options.state_path.empty()) {
    auto state = LoadDeviceState(impl->options.state_path);
    if (state.ok()) {
      absl::MutexLock lock(&impl->mu);
      impl->client_id = state->client_id;
      impl->device_key = state->device_key;
    } else if (!absl::IsNotFound(state.status())) {
      return state.status();
    }
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (impl->options.insecure) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = impl->options.tls_root_ca_pem;
    ssl.pem_cert_chain = impl->options.tls_cert_chain_pem;
    ssl.pem_private_key = impl->options.tls_private_key_pem;
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(impl->options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(4 << 20);
  // gRPC's own reconnect backoff (default up to 120 s) would hide a coordinator that is
  // back; keep it no longer than ours.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(impl->options.backoff.initial)));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(impl->options.backoff.initial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(impl->options.backoff.max)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  if (!impl->options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(impl->options.tls_server_name);
  }
  if (impl->options.interceptors) {
    impl->channel = grpc::experimental::CreateCustomChannelWithInterceptors(
        impl->options.target, creds, args, impl->options.interceptors());
  } else {
    impl->channel = grpc::CreateCustomChannel(impl->options.target, creds, args);
  }
  impl->stub = v1::Coordinator::NewStub(impl->channel);
  return std::unique_ptr<ClientRuntime>(new ClientRuntime(std::move(impl)));
}

absl::Status ClientRuntime::Run(const std::atomic<bool>& stop) {
  Impl& m = *impl_;
  m.stop = &stop;
  // Cancels the long-poll in flight as soon as `stop` is set.
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (stop.load()) {
        absl::MutexLock lock(&m.mu);
        if (m.cancellable != nullptr) m.cancellable->TryCancel();
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  struct Join {
    std::atomic<bool>& done;
    std::thread& t;
    ~Join() {
      done = true;
      t.join();
    }
  } join{done, watcher};

  bool registered = false;
  while (!stop.load()) {
    absl::Status s;
    if (!registered) {
      s = m.Register();
      if (s.ok()) {
        registered = true;
        m.backoff.Reset();
        continue;
      }
      if (!Retryable(s)) return s;  // wrong enrollment token, impossible profile, state file
    } else {
      s = m.FetchAndRun(stop);
      if (s.ok()) {
        m.backoff.Reset();
        continue;
      }
      if (absl::IsUnauthenticated(s)) {
        FEDGE_LOG(WARNING) << s.message() << "; registering again";
        registered = false;
      }
    }
    if (stop.load()) break;
    m.Count(&ClientRuntimeStats::connection_failures);
    const absl::Duration wait = m.backoff.NextDelay();
    FEDGE_LOG(WARNING) << s.message() << "; retrying in " << absl::FormatDuration(wait);
    Impl::SleepUnlessStopped(wait, stop);
  }
  if (registered && m.options.leave_on_stop) m.Leave();
  return absl::OkStatus();
}

std::string ClientRuntime::client_id() const { return impl_->id(); }

ClientRuntimeStats ClientRuntime::stats() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->stats;
}

}  // namespace fedge::client
