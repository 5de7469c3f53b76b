// fleet_load: many lightweight devices over real gRPC against a running coordinator, for
// measuring what the coordinator itself costs at scale (bench/fleet_scale.sh runs it).
//
// Each device is a thread that registers, long-polls for tasks and answers each task
// with a synthetic update instead of training: a small pseudo-random Δ over the task's
// tensors (one per tensor shape, shared by all devices: generating 2,000 × 1M values a
// round would measure this program) with the example count it registered with, encoded
// and uploaded in chunks as fedge-client does (client/device_round.h EncodeUpdate). So the
// load is the protocol, the update intake and the aggregation, not the devices' compute.
// At most --concurrent devices hold a task at once (each holds the task's model and its
// encoded update: 2,000 × 8 MB would not fit here); the others wait for a slot, sending
// heartbeats (UploadStatus) meanwhile as fedge-client does while it trains.
//
//   fleet_load --coordinator 127.0.0.1:50051 --insecure --enrollment-token-file token
//       --devices 2000 --examples 100
//
// It ends when the coordinator says no job is running (after at least one task), or after
// --max-seconds. Prints progress every 10 s and totals at the end.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/flags.h"
#include "client/device_round.h"
#include "model/payload.h"
#include "proto/coordinator.grpc.pb.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:50051", "gRPC target of the coordinator");
ABSL_FLAG(bool, insecure, false, "plaintext (loopback)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA of the coordinator's certificate (TLS)");
ABSL_FLAG(std::string, enrollment_token_file, "", "the deployment's enrollment token (required)");
ABSL_FLAG(int, devices, 100, "devices (one thread each)");
ABSL_FLAG(int, devices_per_channel, 50, "devices sharing one connection");
ABSL_FLAG(int, concurrent, 16, "devices that may hold a task (model + update) at once");
ABSL_FLAG(int64_t, examples, 100, "example count each device claims");
ABSL_FLAG(int, wait_seconds, 20, "FetchTask long-poll length asked");
ABSL_FLAG(int, max_seconds, 3600, "stop after this long");

namespace fedge::bench {
namespace {

using Stub = v1::Coordinator::Stub;

struct Totals {
  std::atomic<int64_t> registered{0}, tasks{0}, uploads{0}, failures{0}, bytes_up{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> seen_task{false};
};

// A counting semaphore over absl::Mutex.
class Slots {
 public:
  explicit Slots(int n) : free_(n) {}
  // False when `timeout` passed without a free slot.
  bool Acquire(absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(+[](int* f) { return *f > 0; }, &free_), timeout)) {
      return false;
    }
    --free_;
    return true;
  }
  void Release() {
    absl::MutexLock l(&mu_);
    ++free_;
  }

 private:
  absl::Mutex mu_;
  int free_;
};

// One Δ per tensor shape, shared by every device: values in [-1e-3, 1e-3).
const v1::ModelProto& SharedDelta(const v1::ModelProto& model) {
  static absl::Mutex mu;
  static std::map<std::string, std::unique_ptr<v1::ModelProto>>* cache =
      new std::map<std::string, std::unique_ptr<v1::ModelProto>>();
  std::string key;
  for (const v1::TensorProto& t : model.parameters()) {
    absl::StrAppend(&key, t.name(), ":");
    for (int64_t d : t.shape()) absl::StrAppend(&key, d, ",");
  }
  absl::MutexLock l(&mu);
  std::unique_ptr<v1::ModelProto>& delta = (*cache)[key];
  if (delta == nullptr) {
    delta = std::make_unique<v1::ModelProto>(model);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (v1::TensorProto& t : *delta->mutable_parameters()) {
      int64_t n = 1;
      for (int64_t d : t.shape()) n *= d;
      t.clear_values();
      t.clear_q4_blocks();
      t.mutable_values()->Resize(static_cast<int>(n), 0.0f);
      for (float& v : *t.mutable_values()) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v = (static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f) * 2e-3f;
      }
    }
  }
  return *delta;
}

class Device {
 public:
  Device(int index, Stub* stub, std::string token, Totals* totals, Slots* slots)
      : index_(index), stub_(stub), token_(std::move(token)), totals_(totals), slots_(slots) {}

  void Run() {
    const absl::Time end = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_max_seconds));
    while (!totals_->stop && absl::Now() < end && !Register()) absl::SleepFor(absl::Seconds(1));
    while (!totals_->stop && absl::Now() < end) {
      absl::Status s = Round();
      if (absl::IsUnauthenticated(s)) {  // the session is gone: register again, as a client
        Register();
        continue;
      }
      if (!s.ok()) {
        ++totals_->failures;
        if (failures_logged_++ < 3) {
          std::fprintf(stderr, "device %d: %s\n", index_, std::string(s.message()).c_str());
        }
        absl::SleepFor(absl::Seconds(1));
      }
    }
  }

 private:
  bool Register() {
    v1::RegisterRequest req;
    req.set_enrollment_token(token_);
    req.mutable_profile()->set_num_examples(absl::GetFlag(FLAGS_examples));
    req.mutable_profile()->set_platform("fleet_load");
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status s = stub_->Register(&ctx, req, &resp);
    if (!s.ok()) return false;
    id_ = resp.client_id();
    session_ = resp.session_token();
    // As fedge-client: the server's preferred chunk, below half its message limit.
    chunk_bytes_ = model::kMaxChunkBytes;
    if (resp.chunk_bytes() > 0) chunk_bytes_ = std::min<int64_t>(chunk_bytes_, resp.chunk_bytes());
    if (resp.max_message_bytes() > 0) {
      chunk_bytes_ = std::max<int64_t>(1, std::min<int64_t>(chunk_bytes_, resp.max_message_bytes() / 2));
    }
    liveness_ = absl::Milliseconds(std::max<int64_t>(3000, resp.liveness_timeout_ms()));
    ++totals_->registered;
    return true;
  }

  absl::Status Round() {
    v1::FetchTaskRequest req;
    req.set_client_id(id_);
    req.set_session_token(session_);
    req.set_wait_seconds(absl::GetFlag(FLAGS_wait_seconds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(absl::GetFlag(FLAGS_wait_seconds) + 600));
    std::unique_ptr<grpc::ClientReader<v1::TaskChunk>> reader = stub_->FetchTask(&ctx, req);
    v1::TaskChunk chunk;
    if (!reader->Read(&chunk)) {
      const grpc::Status s = reader->Finish();
      if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
        return absl::UnauthenticatedError(s.error_message());
      }
      return absl::UnavailableError(absl::StrCat("FetchTask: ", s.error_message()));
    }
    if (chunk.has_idle()) {
      const v1::TaskIdle idle = chunk.idle();
      while (reader->Read(&chunk)) {
      }
      reader->Finish();
      if (idle.no_job() && totals_->seen_task) totals_->stop = true;
      const int64_t retry_ms = std::clamp<int64_t>(idle.retry_after_ms(), 0, 30000);
      if (retry_ms > 0 && !totals_->stop) absl::SleepFor(absl::Milliseconds(retry_ms));
      return absl::OkStatus();
    }
    if (!chunk.has_header()) return absl::InvalidArgumentError("FetchTask: no header");
    if (chunk.header().task_id() == last_task_) {  // already answered: the round goes on
      ctx.TryCancel();
      reader->Finish();
      absl::SleepFor(absl::Seconds(1));
      return absl::OkStatus();
    }
    // Waiting for a slot, the device stays live (UploadStatus is its heartbeat, as
    // fedge-client's while it trains).
    while (!slots_->Acquire(liveness_ / 3)) Heartbeat(chunk.header().task_id());
    absl::Status s = Answer(chunk, *reader);
    slots_->Release();
    if (!s.ok()) ctx.TryCancel();
    reader->Finish();
    return s;
  }

  void Heartbeat(const std::string& task_id) {
    v1::UploadStatusRequest req;
    req.set_client_id(id_);
    req.set_session_token(session_);
    req.set_task_id(task_id);
    v1::UploadStatusResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    stub_->UploadStatus(&ctx, req, &resp);
  }

  absl::Status Answer(v1::TaskChunk& chunk, grpc::ClientReader<v1::TaskChunk>& reader) {
    client::DeviceResources device;
    device.num_examples = absl::GetFlag(FLAGS_examples);
    absl::StatusOr<client::DeviceTask> task = client::AdmitTask(chunk.header(), device);
    if (!task.ok()) return task.status();
    absl::StatusOr<model::PayloadAssembler> assembler =
        model::PayloadAssembler::Create(task->header.total_bytes(), task->payload_bytes);
    if (!assembler.ok()) return assembler.status();
    std::string payload;
    bool done = false;
    while (!done && reader.Read(&chunk)) {
      if (chunk.has_data()) {
        if (absl::Status a = assembler->Add(chunk.data()); !a.ok()) return a;
      } else if (chunk.has_trailer()) {
        absl::StatusOr<std::string> bytes = assembler->Finish(chunk.trailer());
        if (!bytes.ok()) return bytes.status();
        payload = *std::move(bytes);
        done = true;
      }
    }
    if (!done) return absl::UnavailableError("FetchTask: the task stream ended early");
    if (absl::Status d = client::DecodeTaskPayload(payload, *task); !d.ok()) return d;
    ++totals_->tasks;
    totals_->seen_task = true;
    client::LocalUpdate update;
    update.delta = SharedDelta(task->model);
    update.num_examples = absl::GetFlag(FLAGS_examples);
    absl::StatusOr<client::EncodedUpdate> encoded =
        client::EncodeUpdate(task->header, update, id_, /*encoding_seed=*/index_);
    if (!encoded.ok()) return encoded.status();
    task->model.Clear();
    if (absl::Status u = Upload(*encoded); !u.ok()) return u;
    last_task_ = task->header.task_id();
    ++totals_->uploads;
    totals_->bytes_up += static_cast<int64_t>(encoded->payload.size());
    return absl::OkStatus();
  }

  absl::Status Upload(const client::EncodedUpdate& update) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
    v1::UploadUpdateResponse resp;
    std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer = stub_->UploadUpdate(&ctx, &resp);
    v1::UpdateChunk header;
    *header.mutable_header() = update.header;
    header.mutable_header()->set_session_token(session_);
    bool ok = writer->Write(header);
    if (ok) {
      v1::UpdateChunk c;
      ok = model::ForEachChunk(update.payload, chunk_bytes_, [&](const v1::DataChunk& d) {
        *c.mutable_data() = d;
        return writer->Write(c);
      });
    }
    if (ok) {
      v1::UpdateChunk trailer;
      *trailer.mutable_trailer() = model::MakeTrailer(update.payload);
      ok = writer->Write(trailer);
    }
    if (ok) writer->WritesDone();
    const grpc::Status s = writer->Finish();
    if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      return absl::UnavailableError(absl::StrCat("UploadUpdate: ", s.error_message()));
    }
    return absl::OkStatus();
  }

  const int index_;
  Stub* const stub_;
  const std::string token_;
  Totals* const totals_;
  Slots* const slots_;
  std::string id_, session_, last_task_;
  int64_t chunk_bytes_ = 0;
  absl::Duration liveness_ = absl::Seconds(60);
  int failures_logged_ = 0;
};

int Run() {
  std::ifstream in(absl::GetFlag(FLAGS_enrollment_token_file));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string token(absl::StripAsciiWhitespace(ss.str()));
  if (token.empty()) {
    std::fprintf(stderr, "fleet_load: --enrollment-token-file is required and must hold a token\n");
    return 2;
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (absl::GetFlag(FLAGS_insecure)) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    std::ifstream ca(absl::GetFlag(FLAGS_tls_ca));
    std::stringstream cs;
    cs << ca.rdbuf();
    o.pem_root_certs = cs.str();
    creds = grpc::SslCredentials(o);
  }
  const int n = absl::GetFlag(FLAGS_devices);
  const int per_channel = std::max(1, absl::GetFlag(FLAGS_devices_per_channel));
  std::vector<std::unique_ptr<Stub>> stubs;
  for (int c = 0; c * per_channel < n; ++c) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    args.SetMaxReceiveMessageSize(64 << 20);
    stubs.push_back(
        v1::Coordinator::NewStub(grpc::CreateCustomChannel(absl::GetFlag(FLAGS_coordinator), creds, args)));
  }
  Totals totals;
  Slots slots(std::max(1, absl::GetFlag(FLAGS_concurrent)));
  std::vector<std::unique_ptr<Device>> devices;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    devices.push_back(std::make_unique<Device>(i, stubs[i / per_channel].get(), token, &totals, &slots));
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& d : devices) threads.emplace_back([&d] { d->Run(); });
  std::thread progress([&] {
    while (!totals.stop) {
      for (int i = 0; i < 100 && !totals.stop; ++i) absl::SleepFor(absl::Milliseconds(100));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%7.1f s: %lld registered, %lld tasks, %lld uploads (%.1f MB), %lld failures\n", s,
                  static_cast<long long>(totals.registered), static_cast<long long>(totals.tasks),
                  static_cast<long long>(totals.uploads), totals.bytes_up / 1e6,
                  static_cast<long long>(totals.failures));
      std::fflush(stdout);
    }
  });
  for (std::thread& t : threads) t.join();
  totals.stop = true;
  progress.join();
  std::printf("fleet_load: done: %lld devices registered, %lld tasks, %lld uploads, %lld failures\n",
              static_cast<long long>(totals.registered), static_cast<long long>(totals.tasks),
              static_cast<long long>(totals.uploads), static_cast<long long>(totals.failures));
  return 0;
}

}  // namespace
}  // namespace fedge::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "fleet_load --coordinator HOST:PORT (--insecure | --tls-ca CA) --enrollment-token-file F "
      "[--devices N] [--examples E]: lightweight devices over real gRPC");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  return fedge::bench::Run();
}
