// The device runtime (client/grpc/) against the real gRPC services (server/grpc/) on
// loopback: a coordinator with a SQLite store in a temp dir, ClientRuntime instances on
// threads with small synthetic data, jobs started through the Admin stub. Lives here
// because it uses both client/ and server/, which never include each other.
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "base/rng.h"
#include "client/grpc/client_runtime.h"
#include "client/device_state.h"
#include "data/shard.h"
#include "fedge/client.h"
#include "google/protobuf/text_format.h"
#include "model/sequential.h"
#include "model/serialize.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "data/bpe.h"
#include "data/shard.h"
#include "model/language_model.h"
#include "model/serialize.h"
#include "model/transformer.h"
#include "model/zoo.h"
#include "privacy/sodium.h"
#include "proto/admin.grpc.pb.h"
#include "tests/operator_channel.h"
#include "server/coordinator.h"
#include "server/grpc/grpc_server.h"
#include "server/store.h"
#include "tests/cutting_proxy.h"
#include "tests/status_matchers.h"
#include "tests/tiny_language_model.h"
#include "tests/synthetic_data.h"
#include "tests/test_certificates.h"

namespace fedge {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::MakeTestCertificates;
using ::fedge::testing::OperatorChannel;
using ::fedge::testing::TestOperators;
using ::testing::HasSubstr;

constexpr char kToken[] = "integration-enrollment";

// The tests' separable synthetic problem (tests/synthetic_data.h).
data::Dataset MakeData(int n, uint64_t seed) {
  return ::fedge::testing::SeparableData(n, 8, 3, seed);
}

v1::JobConfig MakeJob(int rounds, int per_round) {
  v1::JobConfig job;
  job.set_name("grpc-integration");
  *job.mutable_model_spec() = model::MlpSpec({8, 16, 3}, "tiny");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_round_policy()->set_quorum(per_round);
  job.mutable_round_policy()->set_deadline_seconds(60);
  job.mutable_local_training()->set_epochs(2);
  job.mutable_local_training()->set_batch_size(16);
  job.mutable_local_training()->set_learning_rate(0.1);
  return job;
}

// A loopback port that was free a moment ago.
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class ClientGrpcIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "client_grpc_it_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    StopClients();
    if (server_) server_->Shutdown(absl::Seconds(1));
    server_.reset();
    coordinator_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // `credentials` (the devices' listener; null: plaintext) and `admin` (the operators'
  // listener on 127.0.0.1; null: plaintext).
  void StartServer(const std::string& address,
                   std::shared_ptr<grpc::ServerCredentials> credentials = nullptr,
                   std::shared_ptr<grpc::ServerCredentials> admin = nullptr) {
    auto store = server::Store::Open(dir_ + "/coordinator");
    ASSERT_THAT(store, IsOk());
    store_ = std::move(store).value();
    server::CoordinatorOptions o;
    o.enrollment_token = kToken;
    o.evaluation_data = std::make_shared<const data::Dataset>(MakeData(300, 99));
    o.liveness_timeout = liveness_;
    o.data_root = data_root_;
    auto c = server::Coordinator::Create(o, store_.get());
    ASSERT_THAT(c, IsOk());
    coordinator_ = std::move(c).value();
    server::GrpcServerOptions so;
    so.listen_address = address;
    so.credentials = credentials ? credentials : grpc::InsecureServerCredentials();
    so.tick_interval = absl::Milliseconds(50);
    so.limits.max_wait = absl::Seconds(2);
    so.limits.retry_after_ms = 100;
    so.limits.liveness_timeout = liveness_;
    so.limits.base_download_floor = base_download_floor_;
    if (operators_ == nullptr) operators_ = std::make_unique<TestOperators>(dir_);
    so.admin_listen_address = "127.0.0.1:0";
    so.admin_credentials = admin ? admin : grpc::InsecureServerCredentials();
    so.admin_plaintext = admin == nullptr;
    so.operators = operators_->tokens();
    auto s = server::GrpcCoordinatorServer::Start(so, coordinator_.get(), store_.get());
    ASSERT_THAT(s, IsOk());
    server_ = std::move(s).value();
    admin_ = AdminStub(operators_->operator_token());
  }

  // An Admin stub on the operators' listener that sends `token` (none when empty), over
  // admin_credentials_ when set.
  std::unique_ptr<v1::Admin::Stub> AdminStub(const std::string& token, bool devices_port = false) {
    return v1::Admin::NewStub(OperatorChannel(
        "127.0.0.1:" + std::to_string(devices_port ? server_->port() : server_->admin_port()),
        admin_credentials_ ? admin_credentials_ : grpc::InsecureChannelCredentials(), token));
  }

  void StopServer() {
    server_->Shutdown(absl::Seconds(1));
    server_.reset();
    coordinator_.reset();
    store_.reset();
  }

  // Starts a device on its own thread (`tls`: TLS options instead of plaintext; `customize`
  // changes the options last).
  void StartClient(int port, int index, const client::ClientRuntimeOptions* tls = nullptr,
                   const std::function<void(client::ClientRuntimeOptions&)>& customize = {}) {
    client::ClientRuntimeOptions o;
    if (tls != nullptr) o = *tls;
    o.target = "127.0.0.1:" + std::to_string(port);
    o.enrollment_token = kToken;
    o.insecure = tls == nullptr;
    o.data = std::make_shared<const data::Dataset>(MakeData(client_examples_, 1000 + index));
    o.state_path = dir_ + "/device-" + std::to_string(index) + ".state";
    o.fetch_wait_seconds = 1;
    o.profile.set_memory_budget_bytes(client_budget_bytes_);
    o.backoff.initial = absl::Milliseconds(100);
    o.backoff.max = absl::Seconds(1);
    o.seed = static_cast<uint64_t>(index) + 1;
    if (customize) customize(o);
    auto r = client::ClientRuntime::Create(std::move(o));
    ASSERT_THAT(r, IsOk());
    runtimes_.push_back(std::move(r).value());
    client::ClientRuntime* runtime = runtimes_.back().get();
    results_.push_back(std::make_unique<absl::Status>());
    absl::Status* result = results_.back().get();
    threads_.emplace_back([this, runtime, result] { *result = runtime->Run(stop_); });
  }

  void StopClients() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  absl::StatusOr<std::string> StartJob(const v1::JobConfig& job) {
    v1::StartJobRequest req;
    *req.mutable_config() = job;
    v1::StartJobResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = admin_->StartJob(&ctx, req, &resp);
    if (!s.ok()) return absl::UnknownError(s.error_message());
    return resp.job_id();
  }

  // Polls GetJob until the job is no longer running (or `limit` passes).
  v1::JobStatus WaitForJob(const std::string& job_id, absl::Duration limit) {
    const absl::Time end = absl::Now() + limit;
    v1::JobStatus status;
    while (absl::Now() < end) {
      v1::GetJobRequest req;
      req.set_job_id(job_id);
      grpc::ClientContext ctx;
      const grpc::Status s = admin_->GetJob(&ctx, req, &status);
      if (s.ok() && status.state() != v1::JOB_STATE_RUNNING) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return status;
  }

  std::string dir_;
  std::unique_ptr<server::Store> store_;
  std::unique_ptr<server::Coordinator> coordinator_;
  std::unique_ptr<server::GrpcCoordinatorServer> server_;
  void CheckAdminAccess(std::shared_ptr<grpc::ChannelCredentials> device_credentials);

  std::unique_ptr<TestOperators> operators_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::shared_ptr<grpc::ChannelCredentials> admin_credentials_;
  std::atomic<bool> stop_{false};
  int client_examples_ = 100;
  int64_t client_budget_bytes_ = 0;
  std::string data_root_;  // the coordinator's --data-root (empty: none)
  absl::Duration liveness_ = absl::Seconds(60);
  absl::Duration base_download_floor_ = absl::Seconds(60);
  std::vector<std::unique_ptr<client::ClientRuntime>> runtimes_;
  std::vector<std::unique_ptr<absl::Status>> results_;
  std::vector<std::thread> threads_;
};

TEST_F(ClientGrpcIntegrationTest, ThreeDevicesFinishATwoRoundJob) {
  StartServer("127.0.0.1:0");
  for (int i = 0; i < 3; ++i) StartClient(server_->port(), i);
  // Wait until all three registered so that round 1 samples them all.
  for (int i = 0; i < 100 && coordinator_->ListClients()->size() < 3; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto job = StartJob(MakeJob(/*rounds=*/2, /*per_round=*/3));
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(90));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  EXPECT_EQ(status.completed_rounds(), 2);
  auto rounds = coordinator_->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  int completed = 0;
  for (const v1::RoundRecord& r : *rounds) {
    if (r.state() != v1::ROUND_STATE_COMPLETED) continue;
    ++completed;
    EXPECT_EQ(r.metrics().participants(), 3);
    EXPECT_EQ(r.metrics().examples(), 300);
    EXPECT_GT(r.metrics().bytes_up(), 0);
    // Each device reports its peak RSS with its update; the round keeps it per client.
    ASSERT_EQ(r.metrics().clients_size(), 3);
    for (const v1::ClientRoundMetrics& c : r.metrics().clients()) {
      EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
      EXPECT_GT(c.peak_rss_bytes(), 1 << 20) << c.client_id();
      EXPECT_GT(c.bytes_up(), 0);
      EXPECT_GT(c.bytes_down(), 0);
    }
  }
  EXPECT_EQ(completed, 2);
  StopClients();
  int64_t uploaded = 0;
  for (size_t i = 0; i < runtimes_.size(); ++i) {
    EXPECT_THAT(*results_[i], IsOk());
    uploaded += runtimes_[i]->stats().rounds_completed;
    // The id is kept for the next start, readable by the owner only.
    auto state = client::LoadDeviceState(dir_ + "/device-" + std::to_string(i) + ".state");
    ASSERT_THAT(state, IsOk());
    EXPECT_EQ(state->client_id, runtimes_[i]->client_id());
  }
  EXPECT_EQ(uploaded, 6);
}

// Language-model fine-tuning end to end over gRPC: the coordinator reads the base under its
// data root and evaluates on held-out text; two text devices (each with its copy of the base
// and its own documents) train LoRA adapters over the int4 base; only adapters travel.
// The LoRA job the language-model tests run over the tiny base in the data root's base.pb.
v1::JobConfig TinyLoraJob(int rounds) {
  v1::JobConfig job;
  job.set_name("lm");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(3);
  job.mutable_round_policy()->set_quorum(2);
  job.mutable_round_policy()->set_deadline_seconds(60);
  v1::LanguageModelJob* lm = job.mutable_language_model();
  lm->set_base_path("base.pb");
  lm->mutable_lora()->set_rank(4);
  lm->mutable_lora()->set_output(true);
  lm->mutable_lora()->set_attention(true);
  lm->mutable_lora()->set_mlp(true);
  lm->mutable_lora()->set_base_format(v1::LoraSpec::BASE_FORMAT_INT4);
  lm->set_eval_text_path("eval.txtshard");
  job.mutable_local_training()->set_optimizer(v1::OPTIMIZER_KIND_ADAM);
  job.mutable_local_training()->set_learning_rate(1e-2);
  job.mutable_local_training()->set_batch_size(4);
  job.mutable_local_training()->set_epochs(2);
  return job;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Devices with text and no base: each fetches the job's base from the coordinator by its
// digest (one resumes a download it had begun), encodes its text with the base's tokenizer
// and trains; a device that takes smaller bases declines with the reason.
TEST_F(ClientGrpcIntegrationTest, TextDevicesWithoutTheBaseFetchItByDigest) {
  data_root_ = dir_ + "/data";
  std::filesystem::create_directories(data_root_);
  ASSERT_NO_FATAL_FAILURE(testing::WriteTinyLanguageModel(data_root_, 300));
  const std::string base = ReadBytes(data_root_ + "/base.pb");
  const std::string file_sha = privacy::Sha256Hex(base);
  // An int4 job: devices fetch the base's int4 device form, not the file.
  std::string form;
  {
    auto file = model::LoadModel(data_root_ + "/base.pb");
    ASSERT_THAT(file, IsOk());
    auto int4 = model::Int4DeviceForm(*file);
    ASSERT_THAT(int4, IsOk());
    int4->SerializeToString(&form);
  }
  const std::string sha = privacy::Sha256Hex(form);
  const std::string corpus = testing::TinyLanguageModelText(40);
  // Device 0 kept the first 1000 bytes of an earlier download.
  std::filesystem::create_directories(dir_ + "/cache-0");
  std::ofstream(dir_ + "/cache-0/" + sha + ".part", std::ios::binary) << form.substr(0, 1000);
  StartServer("127.0.0.1:0");
  for (int i = 0; i < 3; ++i) {
    StartClient(server_->port(), i, nullptr, [&](client::ClientRuntimeOptions& o) {
      o.data = nullptr;
      o.text = {{"doc-" + std::to_string(i), corpus.substr(i * 300)}};
      o.lm_base_cache_dir = dir_ + "/cache-" + std::to_string(i);
      o.leave_on_stop = true;  // not sampled by the jobs below once stopped
      if (i == 2) o.max_base_bytes = 1000;
    });
  }
  for (int i = 0; i < 100 && coordinator_->ListClients()->size() < 3; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto id = StartJob(TinyLoraJob(2));
  ASSERT_THAT(id, IsOk());
  const v1::JobStatus status = WaitForJob(*id, absl::Seconds(90));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  auto rounds = coordinator_->ListRounds(*id);
  ASSERT_THAT(rounds, IsOk());
  int completed = 0, declined = 0;
  for (const v1::RoundRecord& r : *rounds) {
    if (r.state() != v1::ROUND_STATE_COMPLETED) continue;
    ++completed;
    EXPECT_EQ(r.metrics().participants(), 2) << "round " << r.round();
    for (const v1::ClientRoundMetrics& c : r.metrics().clients()) {
      if (c.outcome() != v1::ClientRoundMetrics::OUTCOME_DECLINED) continue;
      ++declined;
      EXPECT_THAT(c.reason(), ::testing::HasSubstr("this device takes 1 to 1000"));
    }
  }
  EXPECT_EQ(completed, 2);
  EXPECT_EQ(declined, 1);  // the small device, once: it is not sampled again in the job
  const int64_t size = static_cast<int64_t>(form.size());
  EXPECT_LT(form.size(), base.size());  // the projections in int4 (the tiny model is mostly embedding)
  EXPECT_EQ(runtimes_[0]->stats().bases_fetched, 1);
  EXPECT_EQ(runtimes_[0]->stats().base_bytes_received, size - 1000);  // resumed
  EXPECT_EQ(runtimes_[1]->stats().bases_fetched, 1);
  EXPECT_EQ(runtimes_[1]->stats().base_bytes_received, size);
  EXPECT_EQ(runtimes_[2]->stats().bases_fetched, 0);
  EXPECT_EQ(runtimes_[2]->stats().base_bytes_received, 0);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(ReadBytes(dir_ + "/cache-" + std::to_string(i) + "/" + sha + ".fedgemodel"), form);
    EXPECT_GE(runtimes_[i]->stats().rounds_completed, 1);
  }
  StopClients();
  // A restarted device finds its base in the cache: nothing is fetched again. Then a job
  // over the fp32 base: the int4 form is not that base, and the file is fetched.
  stop_ = false;
  runtimes_.clear();
  results_.clear();
  StartClient(server_->port(), 1, nullptr, [&](client::ClientRuntimeOptions& o) {
    o.data = nullptr;
    o.text = {{"doc-1", corpus.substr(300)}};
    o.lm_base_cache_dir = dir_ + "/cache-1";
  });
  v1::JobConfig one = TinyLoraJob(1);
  one.mutable_selection()->set_clients_per_round(1);
  one.mutable_round_policy()->set_quorum(1);
  auto again = StartJob(one);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(WaitForJob(*again, absl::Seconds(60)).state(), v1::JOB_STATE_FINISHED);
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 1);
  EXPECT_EQ(runtimes_[0]->stats().bases_fetched, 0);
  EXPECT_EQ(runtimes_[0]->stats().base_bytes_received, 0);
  one.mutable_language_model()->mutable_lora()->set_base_format(v1::LoraSpec::BASE_FORMAT_FP32);
  auto fp32 = StartJob(one);
  ASSERT_THAT(fp32, IsOk());
  EXPECT_EQ(WaitForJob(*fp32, absl::Seconds(60)).state(), v1::JOB_STATE_FINISHED);
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 2);
  EXPECT_EQ(runtimes_[0]->stats().bases_fetched, 1);
  EXPECT_EQ(runtimes_[0]->stats().base_bytes_received, static_cast<int64_t>(base.size()));
  EXPECT_EQ(ReadBytes(dir_ + "/cache-1/" + file_sha + ".fedgemodel"), base);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/cache-1/" + sha + ".fedgemodel"));  // one kept
  StopClients();
}

// FetchBaseModel serves the running job's base only, to a device with a session, from the
// offset asked, and refuses everything else with its code.
TEST_F(ClientGrpcIntegrationTest, FetchBaseModelServesOnlyTheRunningJobsBaseToADevice) {
  base_download_floor_ = absl::Seconds(1);
  data_root_ = dir_ + "/data";
  std::filesystem::create_directories(data_root_);
  ASSERT_NO_FATAL_FAILURE(testing::WriteTinyLanguageModel(data_root_, 300));
  const std::string base = ReadBytes(data_root_ + "/base.pb");
  const std::string sha = privacy::Sha256Hex(base);
  StartServer("127.0.0.1:0");
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  v1::RegisterRequest reg;
  reg.set_enrollment_token(kToken);
  reg.mutable_profile()->set_num_examples(10);
  v1::RegisterResponse device;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Register(&ctx, reg, &device).ok());
  }
  // Reads one FetchBaseModel call whole: its status, the announced size and the bytes.
  auto fetch = [&](const std::string& id, const std::string& session, const std::string& digest,
                   int64_t offset, int64_t* total, std::string* bytes) {
    v1::FetchBaseModelRequest req;
    req.set_client_id(id);
    req.set_session_token(session);
    req.set_sha256(digest);
    req.set_offset(offset);
    grpc::ClientContext ctx;
    auto reader = stub->FetchBaseModel(&ctx, req);
    v1::BaseModelChunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.has_header()) *total = chunk.header().total_bytes();
      if (chunk.has_data()) {
        EXPECT_EQ(chunk.data().offset(), offset + static_cast<int64_t>(bytes->size()));
        bytes->append(chunk.data().data());
      }
    }
    return reader->Finish().error_code();
  };
  int64_t total = 0;
  std::string bytes;
  // No job yet: nothing to serve.
  EXPECT_EQ(fetch(device.client_id(), device.session_token(), sha, 0, &total, &bytes),
            grpc::StatusCode::NOT_FOUND);
  v1::JobConfig job = TinyLoraJob(1);
  job.mutable_selection()->set_min_registered(3);  // no round opens: the job stays running
  auto id = StartJob(job);
  ASSERT_THAT(id, IsOk());
  EXPECT_EQ(fetch(device.client_id(), "not-the-session", sha, 0, &total, &bytes),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(fetch("client-unknown", device.session_token(), sha, 0, &total, &bytes),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(fetch(device.client_id(), device.session_token(), std::string(64, '0'), 0, &total,
                  &bytes),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(fetch(device.client_id(), device.session_token(), "../../etc/passwd", 0, &total,
                  &bytes),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(fetch(device.client_id(), device.session_token(), sha, -1, &total, &bytes),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(fetch(device.client_id(), device.session_token(), sha,
                  static_cast<int64_t>(base.size()) + 1, &total, &bytes),
            grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_TRUE(bytes.empty());
  ASSERT_EQ(fetch(device.client_id(), device.session_token(), sha, 0, &total, &bytes),
            grpc::StatusCode::OK);
  EXPECT_EQ(total, static_cast<int64_t>(base.size()));
  EXPECT_EQ(bytes, base);
  bytes.clear();
  ASSERT_EQ(fetch(device.client_id(), device.session_token(), sha, 777, &total, &bytes),
            grpc::StatusCode::OK);
  EXPECT_EQ(bytes, base.substr(777));
  // The int4 device form, by the digest the job's tasks name.
  v1::JobStatus status;
  {
    v1::GetJobRequest req;
    grpc::ClientContext ctx;
    ASSERT_TRUE(admin_->GetJob(&ctx, req, &status).ok());
  }
  auto file = model::LoadModel(data_root_ + "/base.pb");
  ASSERT_THAT(file, IsOk());
  std::string form;
  model::Int4DeviceForm(*file)->SerializeToString(&form);
  const std::string form_sha = privacy::Sha256Hex(form);
  EXPECT_EQ(status.config().language_model().base_int4_sha256(), form_sha);
  EXPECT_EQ(status.config().language_model().base_sha256(), sha);
  bytes.clear();
  ASSERT_EQ(fetch(device.client_id(), device.session_token(), form_sha, 0, &total, &bytes),
            grpc::StatusCode::OK);
  EXPECT_EQ(total, static_cast<int64_t>(form.size()));
  EXPECT_EQ(bytes, form);
  bytes.clear();
  ASSERT_EQ(fetch(device.client_id(), device.session_token(), form_sha, 100, &total, &bytes),
            grpc::StatusCode::OK);
  EXPECT_EQ(bytes, form.substr(100));

  // A device that stops reading holds one download, not more, and not for long: its second
  // download is refused while the first is open, and the first is cancelled at its time
  // limit (here 2 s: the floor, plus 1 s per 32 KiB); then the device downloads again.
  v1::FetchBaseModelRequest req;
  req.set_client_id(device.client_id());
  req.set_session_token(device.session_token());
  req.set_sha256(sha);
  grpc::ChannelArguments slow;  // a small receive window that does not grow: Write blocks
  slow.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  slow.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 4096);
  auto slow_stub = v1::Coordinator::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials(), slow));
  grpc::ClientContext stalled_ctx;
  auto stalled = slow_stub->FetchBaseModel(&stalled_ctx, req);
  v1::BaseModelChunk first;
  ASSERT_TRUE(stalled->Read(&first));  // the header: the server's handler is running
  ASSERT_TRUE(first.has_header());
  bytes.clear();
  EXPECT_EQ(fetch(device.client_id(), device.session_token(), sha, 0, &total, &bytes),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Not reading: the server blocks on flow control until the time limit cancels it.
  absl::SleepFor(base_download_floor_ + absl::Seconds(static_cast<double>(base.size()) / 32768) +
                 absl::Seconds(1));
  while (stalled->Read(&first)) {
  }
  EXPECT_FALSE(stalled->Finish().ok());
  bytes.clear();
  EXPECT_EQ(fetch(device.client_id(), device.session_token(), sha, 0, &total, &bytes),
            grpc::StatusCode::OK);
  EXPECT_EQ(bytes, base);
}

TEST_F(ClientGrpcIntegrationTest, TextDevicesFineTuneALanguageModelWithLoraAdapters) {
  data_root_ = dir_ + "/data";
  std::filesystem::create_directories(data_root_);
  ASSERT_NO_FATAL_FAILURE(testing::WriteTinyLanguageModel(data_root_, 300));
  const std::string base_path = data_root_ + "/base.pb";
  const std::string corpus = testing::TinyLanguageModelText(40);
  // A third device holds another base of the same architecture: it declines every task.
  const std::string other_dir = dir_ + "/other";
  std::filesystem::create_directories(other_dir);
  ASSERT_NO_FATAL_FAILURE(testing::WriteTinyLanguageModel(other_dir, 300, /*seed=*/2));
  StartServer("127.0.0.1:0");
  for (int i = 0; i < 3; ++i) {
    StartClient(server_->port(), i, nullptr, [&](client::ClientRuntimeOptions& o) {
      o.data = nullptr;
      o.text = {{"doc-" + std::to_string(i), corpus.substr(i * 300)}};
      o.lm_base_path = i < 2 ? base_path : other_dir + "/base.pb";
    });
  }
  // Every device registered before the job starts (round 1 must sample all three; a
  // loaded machine can take seconds).
  for (int i = 0; i < 600 && coordinator_->ListClients()->size() < 3; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(coordinator_->ListClients()->size(), 3u);
  auto id = StartJob(TinyLoraJob(3));
  ASSERT_THAT(id, IsOk());
  const v1::JobStatus status = WaitForJob(*id, absl::Seconds(90));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  auto rounds = coordinator_->ListRounds(*id);
  ASSERT_THAT(rounds, IsOk());
  std::vector<double> perplexity;
  for (const v1::RoundRecord& r : *rounds) {
    if (r.state() != v1::ROUND_STATE_COMPLETED) continue;
    EXPECT_EQ(r.metrics().participants(), 2);
    EXPECT_GT(r.metrics().eval_tokens(), 0);
    // The device with another base declines its first task with the reason, and is not
    // sampled again in this job.
    int declined = 0;
    for (const v1::ClientRoundMetrics& c : r.metrics().clients()) {
      if (c.outcome() != v1::ClientRoundMetrics::OUTCOME_DECLINED) continue;
      ++declined;
      EXPECT_THAT(c.reason(), ::testing::HasSubstr("SHA-256"));
    }
    EXPECT_EQ(declined, r.round() == 1 ? 1 : 0) << "round " << r.round();
    EXPECT_EQ(r.metrics().sampled(), r.round() == 1 ? 3 : 2) << "round " << r.round();
    perplexity.push_back(r.metrics().test_perplexity());
    // Adapters only, both ways: far below the base's bytes (the declining device fetched
    // nothing).
    EXPECT_LT(r.metrics().bytes_down(), 2 * 4 * 40000);
  }
  ASSERT_EQ(perplexity.size(), 3u);
  // The untrained base is near-uniform over its (at most 300) tokens; the adapters learn the text.
  EXPECT_LT(perplexity.back(), 0.5 * 300);
  EXPECT_LT(perplexity.back(), perplexity.front());
}

// A device in an attacker's hands over real gRPC: its updates are sign-flipped and scaled
// ×10 after training, and it claims 10× its examples at registration (what
// bench/hostile_client does to fedge-client). The default defences keep the job going
// without it: every round completes, its update is rejected by the direction check with
// the reason, the honest three are accepted, and the model still learns.
TEST_F(ClientGrpcIntegrationTest, AHostileDeviceIsExcludedByTheDefaultDefences) {
  StartServer("127.0.0.1:0");
  for (int i = 0; i < 3; ++i) StartClient(server_->port(), i);
  StartClient(server_->port(), 3, nullptr, [](client::ClientRuntimeOptions& o) {
    o.testing_claimed_examples = 10 * o.data->num_examples;
    o.testing_rewrite_update = [claimed = o.testing_claimed_examples](
                                   const v1::ModelProto&, client::LocalUpdate& u) {
      for (v1::TensorProto& t : *u.delta.mutable_parameters()) {
        for (int i = 0; i < t.values_size(); ++i) t.set_values(i, -10.0f * t.values(i));
      }
      u.num_examples = claimed;
      return absl::OkStatus();
    };
  });
  for (int i = 0; i < 100 && coordinator_->ListClients()->size() < 4; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto job = StartJob(MakeJob(/*rounds=*/3, /*per_round=*/4));
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(90));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  const std::string hostile = runtimes_[3]->client_id();
  auto rounds = coordinator_->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  int completed = 0;
  double last_accuracy = 0;
  for (const v1::RoundRecord& r : *rounds) {
    if (r.state() != v1::ROUND_STATE_COMPLETED) continue;
    ++completed;
    EXPECT_EQ(r.metrics().robustness().excluded(), 1) << "round " << r.round();
    ASSERT_EQ(r.metrics().clients_size(), 4);
    for (const v1::ClientRoundMetrics& c : r.metrics().clients()) {
      if (c.client_id() == hostile) {
        EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_REJECTED) << "round " << r.round();
        EXPECT_THAT(c.reason(), HasSubstr("cosine"));
      } else {
        EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED) << c.client_id();
      }
    }
    // The hostile claim is out of the round's sums: the honest three's examples only.
    EXPECT_EQ(r.metrics().examples(), 300) << "round " << r.round();
    last_accuracy = r.metrics().test_accuracy();
  }
  EXPECT_EQ(completed, 3);
  EXPECT_GT(last_accuracy, 0.8);
}

// fedge-client's runtime with secure aggregation (SecAgg+ option), distributed DP and adaptive
// clipping: every device clips, adds its noise share, appends its (noised) unclipped count,
// masks and helps unmask; the coordinator releases only the sum, aggregates the survivors'
// mean, moves the clip norm and accounts ε.
TEST_F(ClientGrpcIntegrationTest, DevicesTrainWithSecureAggregationAndDistributedDp) {
  StartServer("127.0.0.1:0");
  for (int i = 0; i < 4; ++i) StartClient(server_->port(), i);
  for (int i = 0; i < 100 && coordinator_->ListClients()->size() < 4; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  v1::JobConfig config = MakeJob(/*rounds=*/2, /*per_round=*/4);
  config.mutable_privacy()->set_clip_norm(1.0);
  config.mutable_privacy()->set_noise_multiplier(0.5);
  config.mutable_privacy()->set_secure_aggregation_threshold(3);
  config.mutable_privacy()->set_secure_aggregation_plus(true);
  config.mutable_privacy()->mutable_adaptive_clipping();  // defaults: γ 0.5, η 0.2, σ_b 0.3
  config.mutable_round_policy()->set_quorum(3);
  auto job = StartJob(config);
  ASSERT_THAT(job, IsOk());
  auto before = coordinator_->ExportModel(*job);
  ASSERT_THAT(before, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(90));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  EXPECT_EQ(status.completed_rounds(), 2);
  auto rounds = coordinator_->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  double epsilon = 0;
  double clip = 1.0;
  for (const v1::RoundRecord& r : *rounds) {
    if (r.state() != v1::ROUND_STATE_COMPLETED) continue;
    const v1::RoundMetrics& m = r.metrics();
    EXPECT_EQ(m.participants(), 4);
    EXPECT_EQ(m.secure_aggregation().masked(), 4);
    EXPECT_EQ(m.secure_aggregation().unmasked_by(), 4);
    EXPECT_EQ(m.secure_aggregation().sum_digest().size(), 32u);
    EXPECT_GT(m.secure_aggregation().protocol_bytes(), 0);
    EXPECT_GT(m.epsilon(), epsilon);  // ε grows round by round
    epsilon = m.epsilon();
    EXPECT_EQ(m.dp_noise_multiplier(), 0.5);
    // The round ran at the clip norm the previous one chose, and chose the next.
    EXPECT_DOUBLE_EQ(m.dp_clip_norm(), clip);
    EXPECT_TRUE(std::isfinite(m.dp_unclipped_fraction()));
    EXPECT_DOUBLE_EQ(m.dp_next_clip_norm(), clip * std::exp(-0.2 * (m.dp_unclipped_fraction() - 0.5)));
    clip = m.dp_next_clip_norm();
    for (const v1::ClientRoundMetrics& c : m.clients()) {
      EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
      EXPECT_EQ(c.bytes_up(), 4 * (8 * 16 + 16 + 16 * 3 + 3 + 1));  // masked Δ and count
    }
  }
  auto after = coordinator_->ExportModel(*job);
  ASSERT_THAT(after, IsOk());
  EXPECT_NE(after->SerializeAsString(), before->SerializeAsString());
  StopClients();
  for (size_t i = 0; i < runtimes_.size(); ++i) {
    EXPECT_THAT(*results_[i], IsOk());
    EXPECT_EQ(runtimes_[i]->stats().rounds_completed, 2);
    EXPECT_EQ(runtimes_[i]->stats().tasks_abandoned, 0);  // never handed its task twice
  }
}

// A link that drops mid-upload: a proxy cuts the device's connection twice while
// its 4.3 MB update is on the way; each time the device asks the coordinator what it kept
// (UploadStatus) and resumes from there, so it resends less than one 1 MiB chunk per cut.
TEST_F(ClientGrpcIntegrationTest, UploadResumesAfterTheConnectionIsCutMidway) {
  StartServer("127.0.0.1:0");
  v1::JobConfig config = MakeJob(/*rounds=*/1, /*per_round=*/1);
  *config.mutable_model_spec() = model::MlpSpec({8, 2048, 512, 3}, "wide");
  auto net = model::Sequential::Create(config.model_spec());
  ASSERT_THAT(net, IsOk());
  const int64_t payload = 4 * (*net)->num_parameters();
  ASSERT_GT(payload, 4 << 20);
  ::fedge::testing::CuttingProxy proxy(server_->port(), {payload * 4 / 10, payload * 3 / 4});
  StartClient(proxy.port(), 0);
  for (int i = 0; i < 100 && coordinator_->ListClients()->empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto job = StartJob(config);
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(120));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  EXPECT_EQ(status.completed_rounds(), 1);
  EXPECT_EQ(proxy.cuts_done(), 2);
  StopClients();
  const client::ClientRuntimeStats stats = runtimes_[0]->stats();
  EXPECT_EQ(stats.rounds_completed, 1);
  EXPECT_EQ(stats.uploads_resumed, 2);
  // What went over the wire (the proxy's count of client→server bytes, the small register,
  // fetch and status calls included) beyond the payload itself.
  const int64_t resent = proxy.upstream_bytes() - payload;
  EXPECT_GE(resent, 0);
  EXPECT_LT(resent, 2 * (int64_t{1} << 20)) << "resent " << resent << " bytes over 2 cuts";
  std::printf("upload of %lld bytes, 2 cuts: %lld bytes on the wire (%lld over the payload); "
              "%lld bytes handed to the transport\n",
              static_cast<long long>(payload), static_cast<long long>(proxy.upstream_bytes()),
              static_cast<long long>(resent), static_cast<long long>(stats.upload_bytes_sent));
  auto rounds = coordinator_->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_FALSE(rounds->empty());
  EXPECT_EQ(rounds->back().metrics().participants(), 1);
}

TEST_F(ClientGrpcIntegrationTest, ClientStartedBeforeTheServerConnectsWhenItComesUp) {
  const int port = FreePort();
  StartClient(port, 0);
  absl::SleepFor(absl::Milliseconds(800));  // a few failed attempts
  StartServer("127.0.0.1:" + std::to_string(port));
  auto job = StartJob(MakeJob(/*rounds=*/1, /*per_round=*/1));
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(60));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  EXPECT_EQ(status.completed_rounds(), 1);
  StopClients();
  EXPECT_THAT(*results_[0], IsOk());
  EXPECT_GE(runtimes_[0]->stats().connection_failures, 1);
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 1);
}

TEST_F(ClientGrpcIntegrationTest, RestartedDeviceKeepsItsIdAndWrongTokenIsPermanent) {
  StartServer("127.0.0.1:0");
  StartClient(server_->port(), 0);
  for (int i = 0; i < 100 && runtimes_[0]->client_id().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string first = runtimes_[0]->client_id();
  ASSERT_FALSE(first.empty());
  StopClients();
  stop_ = false;
  StartClient(server_->port(), 0);  // same state file
  for (int i = 0; i < 100 && runtimes_[1]->client_id().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(runtimes_[1]->client_id(), first);
  StopClients();

  client::ClientRuntimeOptions o;
  o.target = "127.0.0.1:" + std::to_string(server_->port());
  o.enrollment_token = "wrong";
  o.insecure = true;
  o.data = std::make_shared<const data::Dataset>(MakeData(10, 1));
  auto r = client::ClientRuntime::Create(std::move(o));
  ASSERT_THAT(r, IsOk());
  std::atomic<bool> never{false};
  EXPECT_THAT((*r)->Run(never), ::fedge::testing::StatusIs(absl::StatusCode::kUnauthenticated,
                                                          ::testing::HasSubstr("Register")));
}

TEST_F(ClientGrpcIntegrationTest, EmbeddedLibraryTrainsWithItsDataSource) {
  StartServer("127.0.0.1:0");
  ClientConfig config;
  config.coordinator = "127.0.0.1:" + std::to_string(server_->port());
  config.enrollment_token = kToken;
  config.insecure = true;
  std::atomic<int> data_calls{0};
  config.data_source = [&data_calls](LocalData* d, std::string*) {
    ++data_calls;
    const data::Dataset ds = MakeData(80, 7);
    d->shape = ds.shape;
    d->num_classes = ds.num_classes;
    d->features = ds.features;
    d->labels = ds.labels;
    return true;
  };
  std::vector<RoundSummary> rounds;
  config.on_round = [&rounds](const RoundSummary& r) { rounds.push_back(r); };
  std::string error;
  std::unique_ptr<Client> client = Client::Create(config, &error);
  ASSERT_NE(client, nullptr) << error;
  bool ok = false;
  threads_.emplace_back([&] { ok = client->Run(stop_, &error); });
  auto job = StartJob(MakeJob(/*rounds=*/2, /*per_round=*/1));
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(60));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  StopClients();
  EXPECT_TRUE(ok) << error;
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_EQ(rounds[0].round, 1);
  EXPECT_EQ(rounds[1].round, 2);
  EXPECT_EQ(rounds[0].num_examples, 80);
  EXPECT_GT(rounds[0].bytes_up, 0);
  EXPECT_GT(rounds[0].bytes_down, 0);
  EXPECT_EQ(data_calls.load(), 3);  // at Create and before each task
}

// A device busy with its task for longer than the liveness timeout (here its data source takes
// 2.5 s against a 1 s timeout) stays in the round: its heartbeat keeps it live.
TEST_F(ClientGrpcIntegrationTest, ADeviceBusyPastTheLivenessTimeoutStaysInItsRound) {
  liveness_ = absl::Seconds(1);
  StartServer("127.0.0.1:0");
  client::ClientRuntimeOptions o;
  o.target = "127.0.0.1:" + std::to_string(server_->port());
  o.enrollment_token = kToken;
  o.insecure = true;
  o.data = std::make_shared<const data::Dataset>(MakeData(60, 5));
  o.data_source = [data = o.data]() -> absl::StatusOr<std::shared_ptr<const data::Dataset>> {
    absl::SleepFor(absl::Milliseconds(2500));
    return data;
  };
  o.fetch_wait_seconds = 1;
  auto r = client::ClientRuntime::Create(std::move(o));
  ASSERT_THAT(r, IsOk());
  runtimes_.push_back(std::move(r).value());
  client::ClientRuntime* runtime = runtimes_.back().get();
  threads_.emplace_back([this, runtime] { (void)runtime->Run(stop_); });
  auto job = StartJob(MakeJob(/*rounds=*/1, /*per_round=*/1));
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(30));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  EXPECT_EQ(status.latest_metrics().participants(), 1);
  EXPECT_EQ(status.latest_metrics().dropped(), 0);
  StopClients();
}

TEST_F(ClientGrpcIntegrationTest, DevicesReconnectAfterTheCoordinatorRestarts) {
  const int port = FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  StartServer(address);
  for (int i = 0; i < 2; ++i) StartClient(port, i);
  // Both registered, as the devices themselves know it (the coordinator lists a device a
  // moment before the device has read its answer).
  for (int i = 0; i < 100 && (coordinator_->ListClients()->size() < 2 ||
                              runtimes_[0]->client_id().empty() ||
                              runtimes_[1]->client_id().empty());
       ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string id0 = runtimes_[0]->client_id();
  ASSERT_FALSE(id0.empty());
  // The coordinator goes away (its state stays in the store) and comes back.
  StopServer();
  absl::SleepFor(absl::Milliseconds(500));
  StartServer(address);
  auto job = StartJob(MakeJob(/*rounds=*/2, /*per_round=*/2));
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(60));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  EXPECT_EQ(status.completed_rounds(), 2);
  StopClients();
  EXPECT_EQ(runtimes_[0]->client_id(), id0);
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 2);
  EXPECT_EQ(runtimes_[1]->stats().rounds_completed, 2);
}

// A round long enough to interrupt: 1000 epochs of batch 1 over 20000 examples, 20M steps
// (tens of seconds at least).
v1::JobConfig LongJob(double deadline_seconds) {
  v1::JobConfig job = MakeJob(/*rounds=*/1, /*per_round=*/1);
  job.mutable_local_training()->set_epochs(1000);
  job.mutable_local_training()->set_batch_size(1);
  job.mutable_round_policy()->set_deadline_seconds(deadline_seconds);
  return job;
}

TEST_F(ClientGrpcIntegrationTest, StopAbandonsTrainingPromptly) {
  StartServer("127.0.0.1:0");
  client_examples_ = 20000;
  StartClient(server_->port(), 0);
  for (int i = 0; i < 100 && runtimes_[0]->client_id().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto job = StartJob(LongJob(600));
  ASSERT_THAT(job, IsOk());
  // Wait until the device has its task (the round is open and it fetched), then stop it.
  for (int i = 0; i < 200; ++i) {
    auto rounds = coordinator_->ListRounds(*job);
    if (rounds.ok() && !rounds->empty()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  absl::SleepFor(absl::Milliseconds(500));
  const absl::Time stop_at = absl::Now();
  StopClients();
  EXPECT_LT(absl::Now() - stop_at, absl::Seconds(3));
  EXPECT_THAT(*results_[0], IsOk());
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 0);
  EXPECT_EQ(runtimes_[0]->stats().tasks_abandoned, 1);
}

TEST_F(ClientGrpcIntegrationTest, TaskPastItsDeadlineIsAbandoned) {
  StartServer("127.0.0.1:0");
  client_examples_ = 20000;
  StartClient(server_->port(), 0);
  for (int i = 0; i < 100 && runtimes_[0]->client_id().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto job = StartJob(LongJob(/*deadline_seconds=*/1));
  ASSERT_THAT(job, IsOk());
  for (int i = 0; i < 200 && runtimes_[0]->stats().tasks_abandoned < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_GE(runtimes_[0]->stats().tasks_abandoned, 1);
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 0);
  StopClients();
  EXPECT_THAT(*results_[0], IsOk());
}

TEST_F(ClientGrpcIntegrationTest, TaskOverTheMemoryBudgetIsRefusedBeforeDownload) {
  StartServer("127.0.0.1:0");
  client_budget_bytes_ = 4096;  // a round of the 8-16-3 mlp needs ~13 kB
  StartClient(server_->port(), 0);
  for (int i = 0; i < 100 && runtimes_[0]->client_id().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  v1::JobConfig job = MakeJob(/*rounds=*/1, /*per_round=*/1);
  job.mutable_round_policy()->set_deadline_seconds(2);
  ASSERT_THAT(StartJob(job), IsOk());
  for (int i = 0; i < 100 && runtimes_[0]->stats().tasks_abandoned < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  // The device told the coordinator why (UpdateHeader.refusal): the coordinator recorded
  // it and does not offer this job's tasks to it again.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(runtimes_[0]->stats().tasks_abandoned, 1);
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 0);
  auto clients = coordinator_->ListClients();
  ASSERT_THAT(clients, IsOk());
  ASSERT_EQ(clients->size(), 1u);
  EXPECT_THAT(clients->front().declined_reason(), HasSubstr("budget"));
  StopClients();
  EXPECT_THAT(*results_[0], IsOk());
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST_F(ClientGrpcIntegrationTest, MutualTlsDeviceTrainsAndADeviceWithoutACertificateCannot) {
  ASSERT_THAT(MakeTestCertificates(dir_), IsOk());
  const std::string ca = ReadText(dir_ + "/ca.crt");
  grpc::SslServerCredentialsOptions server_tls(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  server_tls.pem_root_certs = ca;
  server_tls.pem_key_cert_pairs.push_back(
      {ReadText(dir_ + "/server.key"), ReadText(dir_ + "/server.crt")});
  grpc::SslCredentialsOptions admin_tls;
  admin_tls.pem_root_certs = ca;
  admin_tls.pem_private_key = ReadText(dir_ + "/client.key");
  admin_tls.pem_cert_chain = ReadText(dir_ + "/client.crt");
  admin_credentials_ = grpc::SslCredentials(admin_tls);
  grpc::SslServerCredentialsOptions operators_tls(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  operators_tls.pem_key_cert_pairs = server_tls.pem_key_cert_pairs;
  StartServer("127.0.0.1:0", grpc::SslServerCredentials(server_tls),
              grpc::SslServerCredentials(operators_tls));

  client::ClientRuntimeOptions mtls;
  mtls.tls_root_ca_pem = ca;
  mtls.tls_cert_chain_pem = ReadText(dir_ + "/client.crt");
  mtls.tls_private_key_pem = ReadText(dir_ + "/client.key");
  StartClient(server_->port(), 0, &mtls);
  client::ClientRuntimeOptions no_cert;
  no_cert.tls_root_ca_pem = ca;
  StartClient(server_->port(), 1, &no_cert);

  auto job = StartJob(MakeJob(/*rounds=*/1, /*per_round=*/1));
  ASSERT_THAT(job, IsOk());
  const v1::JobStatus status = WaitForJob(*job, absl::Seconds(60));
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  StopClients();
  EXPECT_EQ(runtimes_[0]->stats().rounds_completed, 1);
  EXPECT_FALSE(runtimes_[0]->client_id().empty());
  // The device without a certificate never got in, and kept retrying.
  EXPECT_EQ(runtimes_[1]->client_id(), "");
  EXPECT_GE(runtimes_[1]->stats().connection_failures, 1);
  EXPECT_THAT(*results_[1], IsOk());
}

// ---- who may call Admin -----------------------------------------------------------------

// The status code of every Admin RPC made with `stub` against `job_id`: a dry-run StartJob,
// StopJob, GetJob, ListRounds, WatchJob (cut after 300 ms), ListClients, ExportModel.
std::map<std::string, grpc::StatusCode> CallEveryAdminRpc(v1::Admin::Stub& stub,
                                                          const std::string& job_id,
                                                          bool stop = false,
                                                          const std::string& device = "") {
  std::map<std::string, grpc::StatusCode> codes;
  static int sweep = 0;
  const std::string token_name = "sweep-" + std::to_string(++sweep);
  auto deadline = [](grpc::ClientContext& ctx, int ms) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
  };
  {
    v1::StartJobRequest req;
    *req.mutable_config() = MakeJob(1, 1);
    req.set_dry_run(true);
    v1::StartJobResponse resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["StartJob"] = stub.StartJob(&ctx, req, &resp).error_code();
  }
  {
    v1::GetJobRequest req;
    req.set_job_id(job_id);
    v1::JobStatus resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["GetJob"] = stub.GetJob(&ctx, req, &resp).error_code();
  }
  {
    v1::ListRoundsRequest req;
    req.set_job_id(job_id);
    v1::ListRoundsResponse resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["ListRounds"] = stub.ListRounds(&ctx, req, &resp).error_code();
  }
  {
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    grpc::ClientContext ctx;
    deadline(ctx, 300);
    auto reader = stub.WatchJob(&ctx, req);
    v1::JobEvent e;
    while (reader->Read(&e)) {
    }
    const grpc::StatusCode code = reader->Finish().error_code();
    // A watch of a running job is cut by its deadline: that it got that far is the answer.
    codes["WatchJob"] = code == grpc::StatusCode::DEADLINE_EXCEEDED ? grpc::StatusCode::OK : code;
  }
  {
    v1::ListClientsRequest req;
    v1::ListClientsResponse resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["ListClients"] = stub.ListClients(&ctx, req, &resp).error_code();
  }
  {
    v1::ExportModelRequest req;
    req.set_job_id(job_id);
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    auto reader = stub.ExportModel(&ctx, req);
    v1::ExportChunk c;
    while (reader->Read(&c)) {
    }
    codes["ExportModel"] = reader->Finish().error_code();
  }
  {
    v1::CreateEnrollmentTokenRequest req;
    req.set_name(token_name);
    req.set_max_uses(3);
    v1::CreateEnrollmentTokenResponse resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["CreateEnrollmentToken"] = stub.CreateEnrollmentToken(&ctx, req, &resp).error_code();
  }
  {
    v1::ListEnrollmentTokensRequest req;
    v1::ListEnrollmentTokensResponse resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["ListEnrollmentTokens"] = stub.ListEnrollmentTokens(&ctx, req, &resp).error_code();
  }
  {
    v1::RevokeEnrollmentTokenRequest req;
    req.set_name(token_name);
    v1::EnrollmentTokenRecord resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["RevokeEnrollmentToken"] = stub.RevokeEnrollmentToken(&ctx, req, &resp).error_code();
  }
  {
    v1::RevokeDeviceRequest req;
    req.set_client_id(device.empty() ? "no-such-device" : device);
    v1::RevokeDeviceResponse resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["RevokeDevice"] = stub.RevokeDevice(&ctx, req, &resp).error_code();
  }
  // Last: it ends the job when allowed (and `stop`); otherwise a job that does not exist.
  {
    v1::StopJobRequest req;
    req.set_job_id(stop ? job_id : "no-such-job");
    v1::StopJobResponse resp;
    grpc::ClientContext ctx;
    deadline(ctx, 10000);
    codes["StopJob"] = stub.StopJob(&ctx, req, &resp).error_code();
  }
  return codes;
}

// Checks who may call what on the running server: devices (with their certificate, when
// `device_credentials` has one, and their enrollment or session token) never; no token:
// unauthenticated; a viewer reads; an operator also starts, stops and exports.
void ClientGrpcIntegrationTest::CheckAdminAccess(
    std::shared_ptr<grpc::ChannelCredentials> device_credentials) {
  const grpc::StatusCode kDenied = grpc::StatusCode::PERMISSION_DENIED;
  auto job = StartJob(MakeJob(/*rounds=*/3, /*per_round=*/1));
  ASSERT_THAT(job, IsOk());

  // A device registers for a session token.
  auto devices = v1::Coordinator::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), device_credentials));
  v1::RegisterRequest reg;
  reg.set_enrollment_token(kToken);
  reg.mutable_profile()->set_num_examples(100);
  v1::RegisterResponse registered;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(devices->Register(&ctx, reg, &registered).ok());
  }
  const std::string device_token = registered.session_token();
  ASSERT_FALSE(device_token.empty());

  struct Caller {
    std::string who;
    std::unique_ptr<v1::Admin::Stub> stub;
  };
  std::vector<Caller> devices_as_callers;
  for (const std::string& token : {std::string(kToken), device_token}) {
    // On the operators' listener, with the device's own credentials.
    devices_as_callers.push_back(
        {"device token on the admin listener",
         v1::Admin::NewStub(OperatorChannel(
             "127.0.0.1:" + std::to_string(server_->admin_port()), device_credentials, token))});
    // On the devices' listener.
    devices_as_callers.push_back(
        {"device token on the devices' listener",
         v1::Admin::NewStub(OperatorChannel("127.0.0.1:" + std::to_string(server_->port()),
                                            device_credentials, token))});
  }
  // Even an operator's token is refused on the devices' listener.
  devices_as_callers.push_back(
      {"operator token on the devices' listener",
       v1::Admin::NewStub(OperatorChannel("127.0.0.1:" + std::to_string(server_->port()),
                                          device_credentials, operators_->operator_token()))});
  for (Caller& c : devices_as_callers) {
    for (const auto& [rpc, code] : CallEveryAdminRpc(*c.stub, *job, /*stop=*/true)) {
      EXPECT_EQ(code, kDenied) << c.who << ": " << rpc;
    }
  }
  for (const auto& [rpc, code] : CallEveryAdminRpc(*AdminStub(""), *job, /*stop=*/true)) {
    EXPECT_EQ(code, grpc::StatusCode::UNAUTHENTICATED) << "no token: " << rpc;
  }
  for (const auto& [rpc, code] : CallEveryAdminRpc(*AdminStub(operators_->viewer_token()), *job,
                                                   /*stop=*/true, registered.client_id())) {
    const bool writes = rpc != "GetJob" && rpc != "ListRounds" && rpc != "WatchJob" &&
                        rpc != "ListClients" && rpc != "ListEnrollmentTokens";
    EXPECT_EQ(code, writes ? kDenied : grpc::StatusCode::OK) << "viewer: " << rpc;
  }
  absl::StatusOr<v1::JobStatus> still = coordinator_->GetJob(*job);
  ASSERT_THAT(still, IsOk());
  EXPECT_EQ(still->state(), v1::JOB_STATE_RUNNING) << "no one but an operator stops a job";

  const auto by_operator =
      CallEveryAdminRpc(*admin_, *job, /*stop=*/true, registered.client_id());
  EXPECT_EQ(by_operator.size(), 11u);  // every RPC of admin.proto
  for (const auto& [rpc, code] : by_operator) {
    EXPECT_EQ(code, grpc::StatusCode::OK) << "operator: " << rpc;
  }
  // The device the operator revoked is refused from now on.
  {
    v1::FetchTaskRequest fetch;
    fetch.set_client_id(registered.client_id());
    fetch.set_session_token(device_token);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto reader = devices->FetchTask(&ctx, fetch);
    v1::TaskChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  absl::StatusOr<v1::JobStatus> stopped = coordinator_->GetJob(*job);
  ASSERT_THAT(stopped, IsOk());
  EXPECT_EQ(stopped->state(), v1::JOB_STATE_STOPPED);

  // A revoked operator is refused at its next call.
  ASSERT_THAT(operators_->tokens()->Revoke("op"), IsOk());
  v1::GetJobRequest req;
  v1::JobStatus resp;
  grpc::ClientContext ctx;
  EXPECT_EQ(admin_->GetJob(&ctx, req, &resp).error_code(), kDenied);
}

TEST_F(ClientGrpcIntegrationTest, OnlyOperatorsCallAdminUnderMutualTls) {
  ASSERT_THAT(MakeTestCertificates(dir_), IsOk());
  const std::string ca = ReadText(dir_ + "/ca.crt");
  const grpc::SslServerCredentialsOptions::PemKeyCertPair pair{ReadText(dir_ + "/server.key"),
                                                               ReadText(dir_ + "/server.crt")};
  grpc::SslServerCredentialsOptions devices_tls(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  devices_tls.pem_root_certs = ca;
  devices_tls.pem_key_cert_pairs.push_back(pair);
  grpc::SslServerCredentialsOptions admin_tls(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  admin_tls.pem_key_cert_pairs.push_back(pair);
  // The device's credentials: the fleet's CA and its certificate.
  grpc::SslCredentialsOptions device;
  device.pem_root_certs = ca;
  device.pem_private_key = ReadText(dir_ + "/client.key");
  device.pem_cert_chain = ReadText(dir_ + "/client.crt");
  grpc::SslCredentialsOptions op;
  op.pem_root_certs = ca;
  admin_credentials_ = grpc::SslCredentials(op);
  StartServer("127.0.0.1:0", grpc::SslServerCredentials(devices_tls),
              grpc::SslServerCredentials(admin_tls));
  CheckAdminAccess(grpc::SslCredentials(device));
}

TEST_F(ClientGrpcIntegrationTest, OnlyOperatorsCallAdminUnderServerTls) {
  ASSERT_THAT(MakeTestCertificates(dir_), IsOk());
  const std::string ca = ReadText(dir_ + "/ca.crt");
  grpc::SslServerCredentialsOptions tls(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  tls.pem_key_cert_pairs.push_back({ReadText(dir_ + "/server.key"), ReadText(dir_ + "/server.crt")});
  grpc::SslCredentialsOptions client;
  client.pem_root_certs = ca;
  admin_credentials_ = grpc::SslCredentials(client);
  StartServer("127.0.0.1:0", grpc::SslServerCredentials(tls), grpc::SslServerCredentials(tls));
  CheckAdminAccess(grpc::SslCredentials(client));
}

TEST_F(ClientGrpcIntegrationTest, OnlyOperatorsCallAdminOnAPlaintextLoopbackListener) {
  StartServer("127.0.0.1:0");
  CheckAdminAccess(grpc::InsecureChannelCredentials());
  // Plaintext Admin is refused anywhere but loopback.
  server::GrpcServerOptions so;
  so.listen_address = "127.0.0.1:0";
  so.credentials = grpc::InsecureServerCredentials();
  so.admin_listen_address = "0.0.0.0:0";
  so.admin_credentials = grpc::InsecureServerCredentials();
  so.admin_plaintext = true;
  so.operators = operators_->tokens();
  so.tick_interval = absl::ZeroDuration();
  auto refused = server::GrpcCoordinatorServer::Start(so, coordinator_.get(), store_.get());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("loopback"));
}

// ---- the binaries: fedge-client processes and fedgectl --------------------------------

struct Output {
  int exit_code = -1;
  std::string text;  // stdout and stderr
};

// Runs `argv` to completion, capturing its output.
Output RunProgram(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  Output out;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) return out;
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  ::waitpid(pid, &status, 0);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  std::stringstream s;
  s << in.rdbuf();
  out.text = s.str();
  return out;
}

pid_t SpawnProgram(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

TEST_F(ClientGrpcIntegrationTest, FedgeClientProcessesAndFedgectlRunAJob) {
  StartServer("127.0.0.1:0");
  const std::string target = "127.0.0.1:" + std::to_string(server_->port());
  {
    std::ofstream(dir_ + "/token") << kToken << "\n";
    std::ofstream(dir_ + "/operator-token") << operators_->operator_token() << "\n";
  }
  std::vector<pid_t> clients;
  for (int i = 0; i < 2; ++i) {
    const std::string shard = dir_ + "/client-" + std::to_string(i) + ".shard";
    ASSERT_THAT(data::WriteShard(shard, MakeData(100, 2000 + i)), IsOk());
    clients.push_back(SpawnProgram(
        {FEDGE_CLIENT_PATH, "--coordinator", target, "--insecure", "--enrollment-token-file",
         dir_ + "/token", "--shard", shard, "--state-dir", dir_ + "/device-" + std::to_string(i),
         "--fetch-wait-seconds", "1", "--compute-class", "medium", "--memory-budget-mb", "64"},
        dir_ + "/client-" + std::to_string(i) + ".log"));
    ASSERT_GT(clients.back(), 0);
  }
  const std::vector<std::string> ctl = {
      FEDGECTL_PATH, "--coordinator", "127.0.0.1:" + std::to_string(server_->admin_port()),
      "--insecure", "--token-file", dir_ + "/operator-token"};
  auto fedgectl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = ctl;
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProgram(argv, dir_ + "/fedgectl.log");
  };

  // A job file with an unknown field: refused locally, naming the field.
  {
    std::ofstream(dir_ + "/bad.textproto") << "name: \"x\"\narchitecture: \"mlp\"\nrounds: 2\nroundz: 3\n";
  }
  Output bad = fedgectl({"job", "start", dir_ + "/bad.textproto"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.text, HasSubstr("roundz"));
  EXPECT_EQ(fedgectl({"job", "start"}).exit_code, 2);
  EXPECT_EQ(fedgectl({"stop", "no-such-job"}).exit_code, 1);

  // Both devices registered, then the job.
  for (int i = 0; i < 200 && coordinator_->ListClients()->size() < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::string text;
  ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(MakeJob(2, 2), &text));
  {
    std::ofstream(dir_ + "/job.textproto") << text;
  }
  Output start = fedgectl({"job", "start", dir_ + "/job.textproto"});
  ASSERT_EQ(start.exit_code, 0) << start.text;
  EXPECT_THAT(start.text, HasSubstr("started job"));
  Output watch = fedgectl({"watch", "--replay"});
  EXPECT_EQ(watch.exit_code, 0) << watch.text;
  EXPECT_THAT(watch.text, HasSubstr("round    1"));
  EXPECT_THAT(watch.text, HasSubstr("round    2"));
  EXPECT_THAT(watch.text, HasSubstr("finished after 2 rounds"));
  Output status = fedgectl({"status"});
  EXPECT_EQ(status.exit_code, 0) << status.text;
  EXPECT_THAT(status.text, HasSubstr("finished"));
  EXPECT_THAT(status.text, HasSubstr("2 of 2 completed"));
  Output rounds = fedgectl({"rounds"});
  EXPECT_EQ(rounds.exit_code, 0) << rounds.text;
  EXPECT_THAT(rounds.text, HasSubstr("clients 2/2"));
  Output clients_out = fedgectl({"clients"});
  EXPECT_EQ(clients_out.exit_code, 0) << clients_out.text;
  EXPECT_THAT(clients_out.text, HasSubstr("2 client(s)"));
  EXPECT_THAT(clients_out.text, HasSubstr("medium"));
  Output exported = fedgectl({"export", "--out", dir_ + "/model.fedge"});
  EXPECT_EQ(exported.exit_code, 0) << exported.text;
  auto model = model::LoadModel(dir_ + "/model.fedge");
  ASSERT_THAT(model, IsOk());
  EXPECT_THAT(model::Sequential::FromProto(*model), IsOk());

  // Enrollment tokens and device revocation from the command line.
  Output created = fedgectl({"enrollment", "create", "batch-7", "--uses", "2", "--expires-hours", "1"});
  ASSERT_EQ(created.exit_code, 0) << created.text;
  EXPECT_THAT(created.text, HasSubstr("fedge-enrol-"));
  Output listed = fedgectl({"enrollment", "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.text;
  EXPECT_THAT(listed.text, HasSubstr("batch-7"));
  EXPECT_THAT(listed.text, HasSubstr("uses 0/2"));
  Output revoked = fedgectl({"enrollment", "revoke", "batch-7"});
  EXPECT_EQ(revoked.exit_code, 0) << revoked.text;
  EXPECT_THAT(revoked.text, HasSubstr("REVOKED"));
  Output unknown = fedgectl({"devices", "revoke", "no-such-device"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.text, HasSubstr("no device"));

  // SIGTERM: each client exits 0 after logging its rounds.
  for (size_t i = 0; i < clients.size(); ++i) {
    ::kill(clients[i], SIGTERM);
    int st = 0;
    ::waitpid(clients[i], &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "client " << i << " status " << st;
    std::ifstream in(dir_ + "/client-" + std::to_string(i) + ".log");
    std::stringstream log;
    log << in.rdbuf();
    EXPECT_THAT(log.str(), HasSubstr("round 1 "));
    EXPECT_THAT(log.str(), HasSubstr("round 2 "));
    struct stat sb;
    ASSERT_EQ(::stat((dir_ + "/device-" + std::to_string(i) + "/client.state").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0600u);
  }
}

}  // namespace
}  // namespace fedge
