#include "server/grpc/coordinator_service.h"

#include <grpcpp/alarm.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "model/payload.h"
#include "server/grpc/status.h"

namespace fedge::server {
namespace {

using grpc_adapter::ToGrpcStatus;

absl::Status CheckString(absl::string_view field, const std::string& value, size_t max) {
  if (value.size() > max) {
    return absl::InvalidArgumentError(absl::StrCat("CoordinatorService: ", field, " has ",
                                                   value.size(), " bytes, at most ", max));
  }
  return absl::OkStatus();
}

// What must match between an interrupted upload and its resume: the task, the payload's
// layout and size, and the example count (not the credentials, the offset, or the metrics
// the device measures again at each attempt).
std::string KeptHeader(const v1::UpdateHeader& h) {
  v1::UpdateHeader k;
  k.set_client_id(h.client_id());
  k.set_job_id(h.job_id());
  k.set_round(h.round());
  k.set_task_id(h.task_id());
  *k.mutable_manifest() = h.manifest();
  k.set_total_bytes(h.total_bytes());
  k.set_num_examples(h.num_examples());
  return k.SerializeAsString();
}

}  // namespace

CoordinatorServiceImpl::CoordinatorServiceImpl(Coordinator* coordinator, ServiceLimits limits)
    : coordinator_(coordinator),
      limits_(limits),
      registrations_({limits.register_per_second, limits.register_burst, 100000}, nullptr),
      peer_streams_(limits.max_streams_per_peer) {}

grpc::Status CoordinatorServiceImpl::Register(grpc::ServerContext* context,
                                              const v1::RegisterRequest* request,
                                              v1::RegisterResponse* response) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"enrollment_token", &request->enrollment_token()},
        {"previous_client_id", &request->previous_client_id()},
        {"profile.platform", &request->profile().platform()},
        {"profile.client_version", &request->profile().client_version()}}) {
    absl::Status s = CheckString(name, *value, limits_.max_string_bytes);
    if (!s.ok()) return ToGrpcStatus(s);
  }
  // Enrollment is the one call open to anyone with the token: bounded per host.
  if (!registrations_.Allow(PeerHost(context->peer()))) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "CoordinatorService: too many registrations from this address; retry "
                        "later");
  }
  absl::StatusOr<v1::RegisterResponse> r = coordinator_->Register(*request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = std::move(r).value();
  response->set_max_message_bytes(limits_.max_message_bytes);
  response->set_chunk_bytes(limits_.chunk_bytes);
  FEDGE_LOG(INFO) << "CoordinatorService: registered client " << response->client_id()
                  << " from " << context->peer();
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::FetchTask(grpc::ServerContext* context,
                                               const v1::FetchTaskRequest* request,
                                               grpc::ServerWriter<v1::TaskChunk>* writer) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"client_id", &request->client_id()},
        {"session_token", &request->session_token()}}) {
    absl::Status s = CheckString(name, *value, limits_.max_string_bytes);
    if (!s.ok()) return ToGrpcStatus(s);
  }
  const ConcurrencyLimiter::Slot slot = peer_streams_.TryAcquire(PeerHost(context->peer()));
  if (!slot) return ToGrpcStatus(TooManyStreams());
  const absl::Duration wait =
      std::min(absl::Seconds(std::max(0, request->wait_seconds())), limits_.max_wait);
  absl::StatusOr<std::optional<TaskAssignment>> task = coordinator_->AwaitTask(
      request->client_id(), request->session_token(), wait,
      [&] { return context->IsCancelled() || stopping_.load(); });
  if (!task.ok()) return ToGrpcStatus(task.status());
  if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  if (!task->has_value()) {
    v1::TaskChunk idle;
    idle.mutable_idle()->set_retry_after_ms(limits_.retry_after_ms);
    idle.mutable_idle()->set_no_job(!coordinator_->running_job().has_value());
    writer->Write(idle);
    return grpc::Status::OK;
  }

  // The payload: the model's section, then the teacher's (if any).
  absl::StatusOr<EncodedTask> encoded = encoder_.Encode(**std::move(task));
  if (!encoded.ok()) return ToGrpcStatus(encoded.status());
  std::vector<absl::string_view> sections;
  for (const auto& section : encoded->sections) sections.push_back(section->bytes);
  const size_t total = static_cast<size_t>(encoded->header.total_bytes());
  const uint32_t crc = encoded->crc32;
  v1::TaskChunk msg;
  *msg.mutable_header() = std::move(encoded->header);
  if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  const size_t chunk = static_cast<size_t>(
      std::clamp<int64_t>(limits_.chunk_bytes, 1, model::kMaxChunkBytes));
  size_t section = 0, in_section = 0;
  for (size_t offset = 0; offset < total;) {
    msg.Clear();
    v1::DataChunk* d = msg.mutable_data();
    d->set_offset(static_cast<int64_t>(offset));
    std::string* data = d->mutable_data();
    while (data->size() < chunk && section < sections.size()) {
      const absl::string_view piece =
          sections[section].substr(in_section, chunk - data->size());
      data->append(piece.data(), piece.size());
      in_section += piece.size();
      if (in_section == sections[section].size()) {
        ++section;
        in_section = 0;
      }
    }
    offset += data->size();
    if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  msg.Clear();
  msg.mutable_trailer()->set_crc32(crc);
  if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  return grpc::Status::OK;
}

// One upload stream on gRPC's callback API: no thread is held while the device is silent
// (an idle stream costs only its buffers), and a stream whose header has not come within
// limits_.upload_header_timeout ends with DEADLINE_EXCEEDED. The header is checked
// (credentials, task, announcement) before any payload byte is taken; chunks go to the
// assembler as they arrive; the end of the stream submits the payload, or keeps what arrived
// of a broken one for a resume.
//
// Lifetime: gRPC calls OnDone once the call is over; the header alarm's callback runs once
// (fired or cancelled). The reactor deletes itself after both.
class CoordinatorServiceImpl::UploadReactor final
    : public grpc::ServerReadReactor<v1::UpdateChunk> {
 public:
  UploadReactor(CoordinatorServiceImpl* service, grpc::CallbackServerContext* context,
                v1::UploadUpdateResponse* response)
      : service_(service),
        context_(context),
        response_(response),
        slot_(service->peer_streams_.TryAcquire(PeerHost(context->peer()))) {
    // A stream over this address's cap is refused at once, from the alarm's callback (so
    // that every Finish comes from a callback, after gRPC has bound the reactor).
    const absl::Duration wait =
        slot_ ? service_->limits_.upload_header_timeout : absl::ZeroDuration();
    header_alarm_.Set(absl::ToChronoTime(absl::Now() + wait), [this](bool fired) {
      if (fired) HeaderTimedOut();
      Unref();
    });
    if (slot_) StartRead(&msg_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Complete(End());
      return;
    }
    if (!header_.has_value()) {
      {
        absl::MutexLock lock(&mu_);
        if (finished_) return;  // timed out meanwhile
        header_seen_ = true;
      }
      bool declined = false;
      absl::Status s = Header(&declined);
      if (!s.ok() || declined) {
        Complete(s);
        return;
      }
    } else if (absl::Status s = Chunk(); !s.ok()) {
      Complete(s);
      return;
    }
    StartRead(&msg_);
  }

  void OnDone() override {
    header_alarm_.Cancel();
    Unref();
  }

 private:
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  // The alarm: a refusal over the address's cap, or the header's deadline.
  void HeaderTimedOut() {
    {
      absl::MutexLock lock(&mu_);
      if (header_seen_ || finished_) return;
      finished_ = true;
    }
    if (!slot_) {
      Finish(ToGrpcStatus(service_->TooManyStreams()));
      return;
    }
    ++service_->header_timeouts_;
    Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        absl::StrCat("CoordinatorService: no upload header within ",
                                     absl::FormatDuration(service_->limits_.upload_header_timeout))));
  }

  // Ends the call with `s` (once; later calls do nothing).
  void Complete(const absl::Status& s) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    // A stream the peer cancelled (or whose connection went) is not worth a log line: a
    // crowd of them would flood the log.
    if (!s.ok() && !absl::IsCancelled(s)) {
      FEDGE_LOG(WARNING) << "CoordinatorService: upload from " << context_->peer()
                         << " refused: " << s;
    }
    Finish(ToGrpcStatus(s));
  }

  // The first message: the header. *declined when the device declines its task (a
  // header-only stream, answered at once).
  absl::Status Header(bool* declined) {
    if (!msg_.has_header()) {
      return absl::InvalidArgumentError("CoordinatorService: an upload starts with its header");
    }
    header_ = std::move(*msg_.mutable_header());
    const v1::UpdateHeader& header = *header_;
    const ServiceLimits& limits = service_->limits_;
    for (const auto& [name, value] :
         {std::pair<const char*, const std::string*>{"client_id", &header.client_id()},
          {"session_token", &header.session_token()},
          {"job_id", &header.job_id()},
          {"task_id", &header.task_id()}}) {
      FEDGE_RETURN_IF_ERROR(CheckString(name, *value, limits.max_string_bytes));
    }
    Coordinator* coordinator = service_->coordinator_;
    if (!header.refusal().empty()) {
      FEDGE_RETURN_IF_ERROR(coordinator->DeclineTask(header));
      response_->set_round(header.round());
      *declined = true;
      return absl::OkStatus();
    }
    // Credentials, the client's task and what the header announces, before any payload byte.
    FEDGE_ASSIGN_OR_RETURN(const int64_t expected_bytes, coordinator->BeginUpload(header));
    if (expected_bytes > limits.max_payload_bytes) {
      return coordinator->RejectUpdate(
          header, absl::InvalidArgumentError(absl::StrCat(
                      "CoordinatorService: the update takes ", expected_bytes,
                      " bytes, over this server's limit of ", limits.max_payload_bytes)));
    }
    // A resumed upload continues the kept assembler; any other upload starts afresh (and
    // discards what a broken earlier attempt left).
    std::optional<PartialUpload> kept = service_->TakePartial(header.task_id());
    if (header.resume_offset() != 0) {
      if (!kept.has_value() || kept->header.client_id() != header.client_id() ||
          KeptHeader(kept->header) != KeptHeader(header) ||
          kept->assembler.bytes_received() != header.resume_offset()) {
        const int64_t have = kept.has_value() && kept->header.client_id() == header.client_id()
                                 ? kept->assembler.bytes_received()
                                 : 0;
        return absl::FailedPreconditionError(absl::StrCat(
            "CoordinatorService: cannot resume the upload of task ", header.task_id(),
            " at byte ", header.resume_offset(), ": the coordinator kept ", have,
            " bytes of an upload with this header; upload again from byte 0"));
      }
      assembler_.emplace(std::move(kept->assembler));
      FEDGE_LOG(INFO) << "CoordinatorService: client " << header.client_id()
                      << " resumes task " << header.task_id() << " at byte "
                      << header.resume_offset() << " of " << header.total_bytes();
      return absl::OkStatus();
    }
    FEDGE_ASSIGN_OR_RETURN(
        model::PayloadAssembler fresh,
        model::PayloadAssembler::Create(header.total_bytes(), limits.max_payload_bytes));
    assembler_.emplace(std::move(fresh));
    return absl::OkStatus();
  }

  // A message after the header: a data chunk or the trailer.
  absl::Status Chunk() {
    if (payload_.has_value()) {
      return absl::InvalidArgumentError("CoordinatorService: message after the upload's trailer");
    }
    switch (msg_.kind_case()) {
      case v1::UpdateChunk::kData:
        return assembler_->Add(msg_.data());
      case v1::UpdateChunk::kTrailer: {
        FEDGE_ASSIGN_OR_RETURN(std::string bytes, assembler_->Finish(msg_.trailer()));
        payload_ = std::move(bytes);
        return absl::OkStatus();
      }
      default:
        return absl::InvalidArgumentError(
            "CoordinatorService: expected a data chunk or the trailer after the header");
    }
  }

  // The stream ended (the device closed it, or the connection went away).
  absl::Status End() {
    if (!header_.has_value()) {
      if (context_->IsCancelled()) return absl::CancelledError("CoordinatorService: upload cancelled");
      return absl::InvalidArgumentError("CoordinatorService: upload stream ended before its header");
    }
    const v1::UpdateHeader& header = *header_;
    model::PayloadAssembler& assembler = *assembler_;
    if (context_->IsCancelled() && !payload_.has_value() && assembler.bytes_received() > 0 &&
        !assembler.complete()) {
      // The connection broke (not a stream the device ended without its trailer): keep what
      // arrived, whole chunks only, for a resume.
      const int64_t received = assembler.bytes_received();
      v1::UpdateHeader h = header;
      h.clear_session_token();
      service_->KeepPartial(header.task_id(),
                            PartialUpload{std::move(h), std::move(assembler), absl::Now()});
      return absl::UnavailableError(absl::StrCat(
          "CoordinatorService: upload of task ", header.task_id(), " broke off after ",
          received, " of ", header.total_bytes(), " bytes; kept for a resume"));
    }
    if (context_->IsCancelled()) return absl::CancelledError("CoordinatorService: upload cancelled");
    if (!payload_.has_value()) {
      return absl::DataLossError(absl::StrCat("CoordinatorService: upload stream ended after ",
                                              assembler.bytes_received(), " of ",
                                              assembler.total_bytes(),
                                              " bytes without its trailer; discarded"));
    }
    const int64_t bytes = static_cast<int64_t>(payload_->size());
    FEDGE_RETURN_IF_ERROR(service_->coordinator_->SubmitPayload(header, *payload_));
    response_->set_round(header.round());
    response_->set_bytes_received(bytes);
    return absl::OkStatus();
  }

  CoordinatorServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  v1::UploadUpdateResponse* const response_;
  const ConcurrencyLimiter::Slot slot_;  // this peer's stream in flight
  grpc::Alarm header_alarm_;
  std::atomic<int> refs_{2};  // OnDone and the alarm's callback
  absl::Mutex mu_;
  bool header_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  v1::UpdateChunk msg_;
  std::optional<v1::UpdateHeader> header_;
  std::optional<model::PayloadAssembler> assembler_;
  std::optional<std::string> payload_;
};

absl::Status CoordinatorServiceImpl::TooManyStreams() const {
  return absl::ResourceExhaustedError(absl::StrCat(
      "CoordinatorService: ", limits_.max_streams_per_peer,
      " long polls and uploads in flight from this address already; retry later"));
}

grpc::ServerReadReactor<v1::UpdateChunk>* CoordinatorServiceImpl::UploadUpdate(
    grpc::CallbackServerContext* context, v1::UploadUpdateResponse* response) {
  return new UploadReactor(this, context, response);
}

grpc::Status CoordinatorServiceImpl::FetchBaseModel(grpc::ServerContext* context,
                                                    const v1::FetchBaseModelRequest* request,
                                                    grpc::ServerWriter<v1::BaseModelChunk>* writer) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"client_id", &request->client_id()},
        {"session_token", &request->session_token()},
        {"sha256", &request->sha256()}}) {
    absl::Status s = CheckString(name, *value, limits_.max_string_bytes);
    if (!s.ok()) return ToGrpcStatus(s);
  }
  if (request->offset() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "CoordinatorService: FetchBaseModel: offset must be ≥ 0");
  }
  absl::StatusOr<std::shared_ptr<const std::string>> source = coordinator_->BaseModel(
      request->client_id(), request->session_token(), request->sha256());
  if (!source.ok()) return ToGrpcStatus(source.status());
  const std::string& bytes = **source;
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (request->offset() > size) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                        absl::StrCat("CoordinatorService: FetchBaseModel: offset ",
                                     request->offset(), " is past the base's ", size, " bytes"));
  }
  const ConcurrencyLimiter::Slot slot = peer_streams_.TryAcquire(PeerHost(context->peer()));
  if (!slot) return ToGrpcStatus(TooManyStreams());
  // One download per device, and at most max_base_downloads in all.
  {
    absl::MutexLock lock(&downloads_mu_);
    if (downloading_.size() >= static_cast<size_t>(limits_.max_base_downloads)) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("CoordinatorService: ", limits_.max_base_downloads,
                                       " base-model downloads in flight already; retry later"));
    }
    if (!downloading_.insert(request->client_id()).second) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "CoordinatorService: this device is downloading the base already");
    }
  }
  // A device that stops reading would hold a thread and a download slot: the download is
  // cancelled once it has taken longer than its time limit (a floor plus the time at the
  // slowest rate a device is allowed), and the device resumes from what it kept.
  const absl::Duration limit =
      limits_.base_download_floor +
      absl::Seconds(static_cast<double>(size - request->offset()) /
                    std::max<double>(1.0, static_cast<double>(limits_.base_download_min_bytes_per_second)));
  absl::Notification done;
  std::thread watchdog([&] {
    if (!done.WaitForNotificationWithTimeout(limit)) context->TryCancel();
  });
  struct Finish {
    CoordinatorServiceImpl* service;
    const std::string& client_id;
    absl::Notification& done;
    std::thread& watchdog;
    ~Finish() {
      done.Notify();
      watchdog.join();
      absl::MutexLock lock(&service->downloads_mu_);
      service->downloading_.erase(client_id);
    }
  } finish{this, request->client_id(), done, watchdog};

  v1::BaseModelChunk msg;
  msg.mutable_header()->set_total_bytes(size);
  if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  const int64_t chunk = std::clamp<int64_t>(limits_.chunk_bytes, 1, model::kMaxChunkBytes);
  for (int64_t offset = request->offset(); offset < size;) {
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          "CoordinatorService: FetchBaseModel cancelled (or over its time limit)");
    }
    msg.Clear();
    v1::DataChunk* d = msg.mutable_data();
    d->set_offset(offset);
    const size_t n = static_cast<size_t>(std::min<int64_t>(chunk, size - offset));
    d->mutable_data()->assign(bytes, static_cast<size_t>(offset), n);
    offset += static_cast<int64_t>(n);
    if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::Leave(grpc::ServerContext* context,
                                           const v1::LeaveRequest* request,
                                           v1::LeaveResponse* response) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"client_id", &request->client_id()},
        {"session_token", &request->session_token()},
        {"reason", &request->reason()}}) {
    absl::Status s = CheckString(name, *value, limits_.max_string_bytes);
    if (!s.ok()) return ToGrpcStatus(s);
  }
  absl::Status s = coordinator_->Leave(request->client_id(), request->session_token());
  if (s.ok()) {
    FEDGE_LOG(INFO) << "CoordinatorService: client " << request->client_id() << " left ("
                    << request->reason() << ")";
  }
  return ToGrpcStatus(s);
}

grpc::Status CoordinatorServiceImpl::SecureAggregationStep(grpc::ServerContext* context,
                                                           const v1::SecAggStepRequest* request,
                                                           v1::SecAggStepResponse* response) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"client_id", &request->client_id()},
        {"session_token", &request->session_token()},
        {"job_id", &request->job_id()},
        {"task_id", &request->task_id()}}) {
    absl::Status s = CheckString(name, *value, limits_.max_string_bytes);
    if (!s.ok()) return ToGrpcStatus(s);
  }
  // Sizes are bounded by the server's message limit; SecureRound checks every count and
  // length against the session before copying anything.
  absl::StatusOr<v1::SecAggStepResponse> r = coordinator_->SecureAggregationStep(*request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = std::move(r).value();
  return grpc::Status::OK;
}

void CoordinatorServiceImpl::KeepPartial(std::string task_id, PartialUpload partial) {
  absl::MutexLock lock(&partial_mu_);
  const absl::Time now = absl::Now();
  for (auto it = partial_.begin(); it != partial_.end();) {
    if (now - it->second.kept > kPartialUploadLifetime) {
      partial_.erase(it++);
    } else {
      ++it;
    }
  }
  if (partial_.size() >= kMaxPartialUploads) {
    auto oldest = partial_.begin();
    for (auto it = partial_.begin(); it != partial_.end(); ++it) {
      if (it->second.kept < oldest->second.kept) oldest = it;
    }
    partial_.erase(oldest);
  }
  partial_.insert_or_assign(std::move(task_id), std::move(partial));
}

std::optional<CoordinatorServiceImpl::PartialUpload> CoordinatorServiceImpl::TakePartial(
    const std::string& task_id) {
  absl::MutexLock lock(&partial_mu_);
  auto it = partial_.find(task_id);
  if (it == partial_.end()) return std::nullopt;
  std::optional<PartialUpload> out(std::move(it->second));
  partial_.erase(it);
  if (absl::Now() - out->kept > kPartialUploadLifetime) return std::nullopt;
  return out;
}

grpc::Status CoordinatorServiceImpl::UploadStatus(grpc::ServerContext* context,
                                                  const v1::UploadStatusRequest* request,
                                                  v1::UploadStatusResponse* response) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"client_id", &request->client_id()},
        {"session_token", &request->session_token()},
        {"task_id", &request->task_id()}}) {
    absl::Status s = CheckString(name, *value, limits_.max_string_bytes);
    if (!s.ok()) return ToGrpcStatus(s);
  }
  // Credentials (and liveness), like a fetch.
  absl::StatusOr<std::optional<TaskAssignment>> task =
      coordinator_->FetchTask(request->client_id(), request->session_token());
  if (!task.ok()) return ToGrpcStatus(task.status());
  absl::MutexLock lock(&partial_mu_);
  auto it = partial_.find(request->task_id());
  if (it != partial_.end() && it->second.header.client_id() == request->client_id() &&
      absl::Now() - it->second.kept <= kPartialUploadLifetime) {
    response->set_bytes_received(it->second.assembler.bytes_received());
  }
  return grpc::Status::OK;
}

}  // namespace fedge::server
