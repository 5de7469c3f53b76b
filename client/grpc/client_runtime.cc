#include "client/grpc/client_runtime.h"
#include "client/grpc/client_runtime_impl.h"

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
#include "absl/synchronization/notification.h"
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
#include "google/protobuf/util/message_differencer.h"
#include "data/bpe.h"
#include "data/token_windows.h"
#include "model/language_model.h"
#include "privacy/sodium.h"
#include "model/payload.h"
#include "model/serialize.h"
#include "model/sequential.h"
#include "proto/coordinator.grpc.pb.h"

namespace fedge::client {
namespace runtime_internal {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("ClientRuntime: ", what, ": ", s.error_message()));
}

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

}  // namespace runtime_internal

using runtime_internal::Deadline;
using runtime_internal::FromGrpc;
using runtime_internal::Retryable;
using runtime_internal::Task;

namespace {

// Keeps the device live while it works on a task: the coordinator counts only calls as signs
// of life, and drops a sampled device silent for its liveness timeout (docs/protocol.md,
// Liveness), so a long preparation, training or upload would cost the device its round.
// Calls UploadStatus (the cheapest authenticated call) every third of the timeout until
// destroyed. With the credentials of when it started: a re-registration mid-task makes its
// later calls fail, which is only logged.
class Heartbeat {
 public:
  Heartbeat(v1::Coordinator::Stub* stub, std::string client_id, std::string session_token,
            std::string task_id, absl::Duration liveness_timeout)
      : thread_([this, stub, client_id = std::move(client_id),
                 session_token = std::move(session_token), task_id = std::move(task_id),
                 period = std::max(liveness_timeout / 3, absl::Milliseconds(100))] {
          bool warned = false;
          while (!done_.WaitForNotificationWithTimeout(period)) {
            v1::UploadStatusRequest req;
            req.set_client_id(client_id);
            req.set_session_token(session_token);
            req.set_task_id(task_id);
            v1::UploadStatusResponse resp;
            grpc::ClientContext ctx;
            ctx.set_deadline(runtime_internal::Deadline(period));
            const grpc::Status s = stub->UploadStatus(&ctx, req, &resp);
            if (!s.ok() && !warned) {
              warned = true;
              FEDGE_LOG(WARNING) << "heartbeat: " << s.error_message();
            }
          }
        }) {}
  ~Heartbeat() {
    done_.Notify();
    thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

}  // namespace

absl::Status ClientRuntime::Impl::Register() {
  v1::RegisterRequest req;
  req.set_enrollment_token(options.enrollment_token);
  *req.mutable_profile() = options.profile;
  req.mutable_profile()->set_num_examples(
      options.testing_claimed_examples > 0 ? options.testing_claimed_examples
      : has_data()                         ? data.raw().num_examples
      : !lm_tokens.empty()                 ? static_cast<int64_t>(lm_tokens.size())
                                           : lm_text_bytes);
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
  if (resp.liveness_timeout_ms() > 0) {
    liveness_timeout = absl::Milliseconds(resp.liveness_timeout_ms());
  }
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
  const Cancellable cancellable_call(this, &ctx);
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
  if (NeedsBase(chunk.header())) {
    // The job's base first (its tokenizer encodes the text the task is admitted on), then
    // the task again: the coordinator hands it out until the round drops us.
    const v1::TaskHeader header = chunk.header();
    finish(absl::CancelledError("the task's base first")).IgnoreError();
    {
      // Nothing is downloaded for a task this device would not take: the header's checks
      // and the memory budget first (the text's byte count bounds its tokens).
      DeviceResources probe;
      probe.memory_budget_bytes = options.profile.memory_budget_bytes();
      probe.num_examples =
          lm_tokens.empty() ? lm_text_bytes : static_cast<int64_t>(lm_tokens.size());
      absl::StatusOr<DeviceTask> fits = AdmitTask(header, probe);
      if (!fits.ok()) {
        if (absl::IsResourceExhausted(fits.status())) {
          Decline(header, DeclineHeader(header, id(), fits.status().message())).IgnoreError();
        }
        abandoned_task_id = header.task_id();
        Count(&ClientRuntimeStats::tasks_abandoned);
        return fits.status();
      }
    }
    bool decline = false;
    // The download may outlast the liveness timeout: the device stays live meanwhile.
    const Heartbeat heartbeat(stub.get(), id(), session_token, header.task_id(),
                              liveness_timeout);
    absl::Status got = ObtainBase(BaseToFetch(header), stop, &decline);
    if (got.ok() || stop.load()) return std::optional<Task>();
    if (decline) {
      Decline(header, DeclineHeader(header, id(), got.message())).IgnoreError();  // logged
      abandoned_task_id = header.task_id();
      Count(&ClientRuntimeStats::tasks_abandoned);
    }
    return got;
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
  if (chunk.header().has_language_model()) {
    device.num_examples = static_cast<int64_t>(lm_tokens.size());
    device.language_model_base_sha256 = lm_base_sha256;
  } else if (has_data()) {
    device.num_examples = data.raw().num_examples;
    device.example_floats = data.raw().feature_size();
  }
  device.eval_examples = options.eval_data != nullptr ? options.eval_data->num_examples : 0;
  absl::StatusOr<DeviceTask> admitted = AdmitTask(chunk.header(), device);
  if (!admitted.ok()) {
    // Over the budget, or (a language model) another base: declined with the reason.
    if (absl::IsResourceExhausted(admitted.status()) ||
        absl::IsFailedPrecondition(admitted.status())) {
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

absl::StatusOr<LocalUpdate> ClientRuntime::Impl::TrainLanguageModel(
    const Task& task, uint64_t shuffle_seed, const std::function<bool()>& cancelled) {
  const v1::TaskHeader& t = task.header;
  if (!has_text()) {
    return absl::FailedPreconditionError("a language-model task, and this device holds no text");
  }
  if (lm_tokens.empty()) {
    return absl::FailedPreconditionError("a language-model task, and this device has no base");
  }
  const std::string key = t.job_id() + "\n" + t.language_model().SerializeAsString();
  if (lm_model == nullptr || lm_model_key != key) {
    lm_model.reset();  // the previous job's model goes before the next one is loaded
    absl::StatusOr<std::unique_ptr<model::TransformerLM>> made =
        LanguageModelForTask(t, [&] { return model::LoadModel(lm_base_file); });
    if (!made.ok()) {
      return absl::Status(made.status().code(),
                          absl::StrCat(lm_base_file, ": ", made.status().message()));
    }
    lm_model = *std::move(made);
    lm_model_key = key;
  }
  const int window = t.language_model().window();
  FEDGE_ASSIGN_OR_RETURN(data::TokenWindows windows, data::TokenWindows::Create(lm_tokens, window));
  lm_model->SetActivationCheckpointing(task.checkpoint_activations);
  if (task.checkpoint_activations) {
    FEDGE_LOG(INFO) << "job " << t.job_id() << " round " << t.round()
                    << ": activation checkpointing (the task fits the memory budget only so)";
  }
  return TrainLanguageModelTask(t, task.model, *lm_model, windows, shuffle_seed, cancelled);
}

absl::StatusOr<LocalUpdate> ClientRuntime::Impl::TrainFedCg(
    const Task& task, const std::function<bool()>& cancelled) {
  const v1::TaskHeader& t = task.header;
  if (!has_data()) return absl::FailedPreconditionError("a FedCG task, and this device holds no images");
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
  const Heartbeat heartbeat(stub.get(), id(), session_token, t.task_id(), liveness_timeout);
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
  if (t.has_language_model()) {
    update = TrainLanguageModel(*task, seeds.shuffle, cancelled);
  } else if (t.has_fed_cg()) {
    update = TrainFedCg(*task, cancelled);
  } else if (!has_data()) {
    update = absl::FailedPreconditionError("an image task, and this device holds only text");
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
  if (options.testing_rewrite_update) {
    const absl::Status rewritten = options.testing_rewrite_update(task->model, *update);
    if (!rewritten.ok()) return abandon(rewritten);
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
  const bool fetches_bases = !options.lm_base_cache_dir.empty();
  if (!options.text.empty() && options.lm_base_path.empty() && !fetches_bases) {
    return absl::InvalidArgumentError(
        "ClientRuntime: text needs its base: lm_base_path, or lm_base_cache_dir to fetch the "
        "job's");
  }
  if (options.text.empty() && !options.lm_base_path.empty()) {
    return absl::InvalidArgumentError("ClientRuntime: lm_base_path without text");
  }
  if (options.max_base_bytes <= 0) {
    return absl::InvalidArgumentError("ClientRuntime: max_base_bytes must be > 0");
  }
  std::shared_ptr<const data::Dataset> initial = options.data;
  if (initial == nullptr && options.data_source) {
    FEDGE_ASSIGN_OR_RETURN(initial, options.data_source());
  }
  if (initial == nullptr && options.text.empty()) {
    return absl::InvalidArgumentError(
        "ClientRuntime: no local data (data, data_source, or text with its base)");
  }
  if (initial != nullptr) FEDGE_RETURN_IF_ERROR(data::ValidateDataset(*initial));

  auto impl = std::make_unique<Impl>(std::move(options));
  if (initial != nullptr) impl->data.Reset(std::move(initial));
  if (fetches_bases) {
    FEDGE_ASSIGN_OR_RETURN(BaseCache cache, BaseCache::Open(impl->options.lm_base_cache_dir,
                                                            impl->options.max_base_bytes));
    impl->base_cache.emplace(std::move(cache));
  }
  impl->lm_text = std::move(impl->options.text);
  std::vector<data::TextDocument>().swap(impl->options.text);
  for (const data::TextDocument& d : impl->lm_text) {
    impl->lm_text_bytes += static_cast<int64_t>(d.text.size()) + 2;  // + the blank line
  }
  if (!impl->options.lm_base_path.empty()) {
    // What the job's base must be: tasks of another base are declined (device_round.h), or
    // fetch it.
    const std::string path = impl->options.lm_base_path;
    FEDGE_ASSIGN_OR_RETURN(const std::string sha256, privacy::Sha256FileHex(path));
    FEDGE_RETURN_IF_ERROR(impl->UseBase(path, sha256));
  }
  // Without a cache no other base comes: the text is kept as tokens only.
  if (!fetches_bases) std::vector<data::TextDocument>().swap(impl->lm_text);
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
        // The coordinator answered (a restarted relay, a coordinator that lost the session):
        // register again soon, not after the backoff its outage built up.
        FEDGE_LOG(WARNING) << s.message() << "; registering again";
        registered = false;
        m.backoff.Reset();
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
