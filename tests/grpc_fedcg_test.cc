// FedCG over the real transport: fedge-client's runtime
// (client::ClientRuntime) trains FedCG tasks against the gRPC coordinator on loopback, and a
// client-side interceptor records the serialized bytes of every message each device sends,
// on every RPC (Register, FetchTask's request, every UploadUpdate chunk, UploadStatus, Leave).
// The check: no tensor name of the device's extractor E or discriminator D, and no 16-byte
// window of the float32 bytes of their parameters (as they are after the device's last
// training), appears in any recorded message. A deliberately broken device that appends E to
// its update shows the check catches a leak, and the coordinator refuses that update, naming
// the tensor, while the round completes with the others.
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/fedcg_trainer.h"
#include "client/grpc/client_runtime.h"
#include "client/device_state.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "tests/operator_channel.h"
#include "server/coordinator.h"
#include "server/grpc/grpc_server.h"
#include "server/store.h"
#include "tests/recording_interceptor.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"

namespace fedge {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::RecordingFactory;
using ::fedge::testing::SentMessages;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kToken[] = "fedcg-enrollment";

// A device's private parameters as they are: name → float32 bytes (little-endian, as the
// wire would carry them).
struct PrivateTensors {
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> tensors;
  int trainings = 0;
};

void Snapshot(client::FedCgClient& c, PrivateTensors* out) {
  std::vector<std::pair<std::string, std::string>> t;
  auto add = [&](const std::vector<model::Parameter*>& params) {
    for (const model::Parameter* p : params) {
      t.emplace_back(p->name, std::string(reinterpret_cast<const char*>(p->value.data()),
                                          p->value.size() * sizeof(float)));
    }
  };
  add(c.extractor().parameters());
  add(c.discriminator().parameters());
  std::lock_guard<std::mutex> lock(out->mu);
  out->tensors = std::move(t);
  ++out->trainings;
}

// What of `secret` appears in `sent`: each finding names the message and either a tensor name
// or the tensor whose 16-byte window was found. Empty: nothing leaked.
std::vector<std::string> FindLeaks(const std::vector<std::pair<std::string, std::string>>& sent,
                                   const std::vector<std::pair<std::string, std::string>>& secret) {
  absl::flat_hash_map<std::string, std::string> windows;  // 16 bytes → tensor name
  for (const auto& [name, bytes] : secret) {
    for (size_t i = 0; i + 16 <= bytes.size(); i += 4) windows.emplace(bytes.substr(i, 16), name);
  }
  std::vector<std::string> found;
  for (size_t m = 0; m < sent.size(); ++m) {
    const auto& [method, bytes] = sent[m];
    for (const auto& [name, unused] : secret) {
      if (absl::StrContains(bytes, name)) {
        found.push_back(absl::StrCat("message ", m, " (", method, ") names ", name));
      }
    }
    for (size_t i = 0; i + 16 <= bytes.size(); ++i) {
      auto it = windows.find(absl::string_view(bytes.data() + i, 16));
      if (it != windows.end()) {
        found.push_back(absl::StrCat("message ", m, " (", method, ") holds bytes of ", it->second,
                                     " at offset ", i));
        break;  // one finding per message is enough
      }
    }
  }
  return found;
}

v1::JobConfig FedCgJob(int rounds, int per_round, int quorum) {
  v1::JobConfig job;
  job.set_name("fedcg-grpc");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_selection()->set_min_registered(per_round);
  job.mutable_round_policy()->set_quorum(quorum);
  job.mutable_round_policy()->set_deadline_seconds(60);
  v1::LocalTraining& t = *job.mutable_local_training();
  t.set_epochs(1);
  t.set_batch_size(8);
  t.set_learning_rate(1e-3);
  t.set_shuffle_seed(5);
  v1::FedCgParams& f = *job.mutable_strategy()->mutable_fed_cg();
  f.set_gan_epochs(1);
  f.set_distill_steps(10);
  f.set_eval_holdout_fraction(0.25);
  return job;
}

class GrpcFedCgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "grpc_fedcg_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto store = server::Store::Open(dir_ + "/coordinator");
    ASSERT_THAT(store, IsOk());
    store_ = std::move(store).value();
    server::CoordinatorOptions o;
    o.enrollment_token = kToken;
    auto c = server::Coordinator::Create(o, store_.get());
    ASSERT_THAT(c, IsOk());
    coordinator_ = std::move(c).value();
    server::GrpcServerOptions so;
    so.listen_address = "127.0.0.1:0";
    so.credentials = grpc::InsecureServerCredentials();
    so.tick_interval = absl::Milliseconds(50);
    so.limits.max_wait = absl::Seconds(2);
    so.limits.retry_after_ms = 100;
    operators_ = std::make_unique<testing::TestOperators>(dir_);
    so.admin_listen_address = "127.0.0.1:0";
    so.admin_credentials = grpc::InsecureServerCredentials();
    so.admin_plaintext = true;
    so.operators = operators_->tokens();
    auto s = server::GrpcCoordinatorServer::Start(so, coordinator_.get(), store_.get());
    ASSERT_THAT(s, IsOk());
    server_ = std::move(s).value();
    admin_ = v1::Admin::NewStub(testing::OperatorChannel(
        "127.0.0.1:" + std::to_string(server_->admin_port()), grpc::InsecureChannelCredentials(),
        operators_->operator_token()));
  }

  void TearDown() override {
    StopClients();
    if (server_) server_->Shutdown(absl::Seconds(1));
    server_.reset();
    coordinator_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A device with 40 band images; every message it sends is recorded in sent_[index], its
  // E and D after each training in private_[index].
  void StartDevice(int index, bool leaks_extractor = false, int64_t memory_budget_bytes = 0) {
    sent_.push_back(std::make_unique<SentMessages>());
    private_.push_back(std::make_unique<PrivateTensors>());
    SentMessages* sent = sent_.back().get();
    PrivateTensors* priv = private_.back().get();
    client::ClientRuntimeOptions o;
    o.target = "127.0.0.1:" + std::to_string(server_->port());
    o.enrollment_token = kToken;
    o.insecure = true;
    o.data = std::make_shared<const data::Dataset>(::fedge::testing::BandImages(40, 3, 100 + index));
    o.state_path = dir_ + "/device-" + std::to_string(index) + ".state";
    o.fetch_wait_seconds = 1;
    o.profile.set_memory_budget_bytes(memory_budget_bytes);
    o.backoff.initial = absl::Milliseconds(100);
    o.backoff.max = absl::Seconds(1);
    o.seed = static_cast<uint64_t>(index) + 1;
    o.leave_on_stop = true;  // one more RPC to inspect
    o.interceptors = [sent] {
      std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> v;
      v.push_back(std::make_unique<RecordingFactory>(sent));
      return v;
    };
    o.on_fedcg_trained = [priv](client::FedCgClient& c) { Snapshot(c, priv); };
    o.testing_fedcg_upload_extractor = leaks_extractor;
    auto r = client::ClientRuntime::Create(std::move(o));
    ASSERT_THAT(r, IsOk());
    runtimes_.push_back(std::move(r).value());
    client::ClientRuntime* runtime = runtimes_.back().get();
    threads_.emplace_back([this, runtime] { EXPECT_THAT(runtime->Run(stop_), IsOk()); });
  }

  void StopClients() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  std::string StartJob(const v1::JobConfig& job) {
    v1::StartJobRequest req;
    *req.mutable_config() = job;
    v1::StartJobResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = admin_->StartJob(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.job_id();
  }

  v1::JobStatus WaitForJob(const std::string& job_id, absl::Duration limit) {
    const absl::Time end = absl::Now() + limit;
    v1::JobStatus status;
    while (absl::Now() < end) {
      v1::GetJobRequest req;
      req.set_job_id(job_id);
      grpc::ClientContext ctx;
      if (admin_->GetJob(&ctx, req, &status).ok() && status.state() != v1::JOB_STATE_RUNNING) {
        break;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return status;
  }

  std::vector<v1::RoundRecord> CompletedRounds(const std::string& job_id) {
    auto rounds = coordinator_->ListRounds(job_id);
    EXPECT_THAT(rounds, IsOk());
    std::vector<v1::RoundRecord> out;
    for (const v1::RoundRecord& r : *rounds) {
      if (r.state() == v1::ROUND_STATE_COMPLETED) out.push_back(r);
    }
    return out;
  }

  std::vector<std::pair<std::string, std::string>> Secret(int device) {
    std::lock_guard<std::mutex> lock(private_[device]->mu);
    return private_[device]->tensors;
  }

  std::string dir_;
  std::unique_ptr<server::Store> store_;
  std::unique_ptr<server::Coordinator> coordinator_;
  std::unique_ptr<server::GrpcCoordinatorServer> server_;
  std::unique_ptr<testing::TestOperators> operators_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<SentMessages>> sent_;
  std::vector<std::unique_ptr<PrivateTensors>> private_;
  std::vector<std::unique_ptr<client::ClientRuntime>> runtimes_;
  std::vector<std::thread> threads_;
};

TEST_F(GrpcFedCgTest, ExtractorAndDiscriminatorNeverLeaveTheDevice) {
  for (int i = 0; i < 2; ++i) StartDevice(i);
  const std::string job = StartJob(FedCgJob(/*rounds=*/2, /*per_round=*/2, /*quorum=*/2));
  const v1::JobStatus status = WaitForJob(job, absl::Seconds(120));
  ASSERT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  const std::vector<v1::RoundRecord> rounds = CompletedRounds(job);
  ASSERT_EQ(rounds.size(), 2u);
  for (const v1::RoundRecord& r : rounds) {
    const v1::RoundMetrics& m = r.metrics();
    EXPECT_EQ(m.participants(), 2);
    EXPECT_FALSE(m.evaluated());  // no central evaluation without an extractor
    ASSERT_TRUE(m.has_fed_cg());
    EXPECT_EQ(m.fed_cg().distill_steps(), 10);
    EXPECT_GT(m.fed_cg().first_kl(), 0);
    EXPECT_EQ(m.fed_cg().clients_evaluated(), 2);
    EXPECT_EQ(m.fed_cg().eval_examples(), 20);  // 25% of 40, per device
    EXPECT_GE(m.fed_cg().client_accuracy(), 0);
    EXPECT_LE(m.fed_cg().client_accuracy(), 1);
    EXPECT_EQ(m.fed_cg().evaluated_model_round(), r.round() - 1);
    for (const v1::ClientRoundMetrics& c : m.clients()) {
      EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED) << c.reason();
      EXPECT_EQ(c.eval_examples(), 10);
    }
  }
  // The central model is C and G only.
  auto model = coordinator_->ExportModel(job);
  ASSERT_THAT(model, IsOk());
  for (const v1::TensorProto& t : model->parameters()) {
    EXPECT_TRUE(absl::StartsWith(t.name(), "C.") || absl::StartsWith(t.name(), "G.")) << t.name();
  }
  StopClients();
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(private_[d]->trainings, 2) << "device " << d;
    const auto secret = Secret(d);
    ASSERT_FALSE(secret.empty());
    const auto sent = sent_[d]->Get();
    // The recording saw the uploads: the C and G tensors by name, in several chunks.
    int uploads = 0;
    bool names_c = false, names_g = false;
    for (const auto& [method, bytes] : sent) {
      uploads += absl::EndsWith(method, "/UploadUpdate");
      names_c |= absl::StrContains(bytes, "C.fc1.weight");
      names_g |= absl::StrContains(bytes, "G.embed.weight");
    }
    EXPECT_GE(uploads, 2 * 3) << "header, data and trailer of two uploads";
    EXPECT_TRUE(names_c && names_g);
    EXPECT_THAT(FindLeaks(sent, secret), ::testing::IsEmpty()) << "device " << d;
  }
}

TEST_F(GrpcFedCgTest, AnUploadCarryingTheExtractorIsRefusedAndTheRoundCompletes) {
  for (int i = 0; i < 2; ++i) StartDevice(i);
  StartDevice(2, /*leaks_extractor=*/true);
  const std::string job = StartJob(FedCgJob(/*rounds=*/1, /*per_round=*/3, /*quorum=*/2));
  const v1::JobStatus status = WaitForJob(job, absl::Seconds(120));
  ASSERT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  const std::vector<v1::RoundRecord> rounds = CompletedRounds(job);
  ASSERT_EQ(rounds.size(), 1u);
  const v1::RoundMetrics& m = rounds[0].metrics();
  EXPECT_EQ(m.participants(), 2);
  EXPECT_EQ(m.rejected(), 1);
  const std::string leaky = runtimes_[2]->client_id();
  bool seen = false;
  for (const v1::ClientRoundMetrics& c : m.clients()) {
    if (c.client_id() != leaky) {
      EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED) << c.reason();
      continue;
    }
    seen = true;
    EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_REJECTED);
    EXPECT_THAT(c.reason(), HasSubstr("E.conv1.weight"));
    EXPECT_THAT(c.reason(), HasSubstr("never leave the device"));
  }
  EXPECT_TRUE(seen);
  StopClients();
  // The inspection catches the broken device (by name and by bytes) and only it.
  const std::vector<std::string> leaks = FindLeaks(sent_[2]->Get(), Secret(2));
  EXPECT_THAT(leaks, ::testing::Contains(HasSubstr("names E.conv1.weight")));
  EXPECT_THAT(leaks, ::testing::Contains(HasSubstr("holds bytes of E.")));
  for (int d = 0; d < 2; ++d) {
    EXPECT_THAT(FindLeaks(sent_[d]->Get(), Secret(d)), ::testing::IsEmpty()) << "device " << d;
  }
}

// A device stopped after round 1 and started again (same state file) continues the job with
// the extractor and discriminator it had: they were written, mode 0600 and with the job id,
// to "<state file>.fedcg" after its training, and the restarted runtime loads them.
// A device whose memory budget cannot hold FedCG's four networks (about 8 MB for the dense
// G and D) declines the task before downloading it, says why, and trains nothing; a device
// with room for them takes the job's tasks.
TEST_F(GrpcFedCgTest, ATaskOverTheDevicesMemoryBudgetIsDeclinedBeforeTraining) {
  StartDevice(0, /*leaks_extractor=*/false, /*memory_budget_bytes=*/4'000'000);
  v1::JobConfig config = FedCgJob(/*rounds=*/1, /*per_round=*/1, /*quorum=*/1);
  config.mutable_selection()->set_min_registered(1);
  config.mutable_round_policy()->set_deadline_seconds(2);
  const std::string job = StartJob(config);
  for (int i = 0; i < 200 && runtimes_[0]->stats().tasks_abandoned < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(runtimes_[0]->stats().tasks_abandoned, 1);
  auto clients = coordinator_->ListClients();
  ASSERT_THAT(clients, IsOk());
  ASSERT_EQ(clients->size(), 1u);
  EXPECT_THAT(clients->front().declined_reason(),
              AllOf(HasSubstr("MemoryBudget"), HasSubstr("budget of 4.0 MB")));
  // A second device with room takes the round.
  StartDevice(1, /*leaks_extractor=*/false, /*memory_budget_bytes=*/64'000'000);
  const v1::JobStatus status = WaitForJob(job, absl::Seconds(120));
  ASSERT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  StopClients();
  {
    std::lock_guard<std::mutex> lock(private_[0]->mu);
    EXPECT_EQ(private_[0]->trainings, 0);
  }
  std::lock_guard<std::mutex> lock(private_[1]->mu);
  EXPECT_EQ(private_[1]->trainings, 1);
}

TEST_F(GrpcFedCgTest, ARestartedDeviceContinuesWithItsExtractor) {
  const std::string job = StartJob(FedCgJob(/*rounds=*/2, /*per_round=*/1, /*quorum=*/1));
  const std::string state_path = dir_ + "/restarted.state";
  auto options = [&](PrivateTensors* priv, std::atomic<bool>* stop_after_training) {
    client::ClientRuntimeOptions o;
    o.target = "127.0.0.1:" + std::to_string(server_->port());
    o.enrollment_token = kToken;
    o.insecure = true;
    o.data = std::make_shared<const data::Dataset>(::fedge::testing::BandImages(40, 3, 7));
    o.state_path = state_path;
    o.fetch_wait_seconds = 1;
    o.backoff.initial = absl::Milliseconds(100);
    o.backoff.max = absl::Seconds(1);
    o.on_fedcg_trained = [priv, stop_after_training](client::FedCgClient& c) {
      Snapshot(c, priv);
      if (stop_after_training != nullptr) *stop_after_training = true;
    };
    return o;
  };
  PrivateTensors first, second;
  std::atomic<bool> stop_first{false};
  auto a = client::ClientRuntime::Create(options(&first, &stop_first));
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT((*a)->Run(stop_first), IsOk());  // returns after uploading round 1
  EXPECT_EQ(first.trainings, 1);
  auto saved = client::LoadFedCgPrivateState(state_path + ".fedcg");
  ASSERT_THAT(saved, IsOk());
  EXPECT_EQ(saved->spec().name(), job);
  ASSERT_EQ(saved->parameters_size(), static_cast<int>(first.tensors.size()));
  for (int i = 0; i < saved->parameters_size(); ++i) {
    const v1::TensorProto& t = saved->parameters(i);
    EXPECT_EQ(t.name(), first.tensors[i].first);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.values().data()),
                          t.values_size() * sizeof(float)),
              first.tensors[i].second)
        << t.name();
  }

  std::atomic<bool> stop_second{false};
  auto b = client::ClientRuntime::Create(options(&second, nullptr));
  ASSERT_THAT(b, IsOk());
  std::thread runner([&] { EXPECT_THAT((*b)->Run(stop_second), IsOk()); });
  const v1::JobStatus status = WaitForJob(job, absl::Seconds(120));
  stop_second = true;
  runner.join();
  ASSERT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  EXPECT_EQ(CompletedRounds(job).size(), 2u);
  EXPECT_EQ((*b)->client_id(), (*a)->client_id());
  EXPECT_EQ((*b)->stats().fedcg_states_restored, 1);
  EXPECT_EQ(second.trainings, 1);
}

// Quantized transfer with FedCG: C and G travel to the devices as int8 per channel and the
// updates come back int8 (stochastic rounding); the server rebuilds each C_i, G_i from its own
// w_t plus the decoded Δ_i for the distillation.
TEST_F(GrpcFedCgTest, QuantizedTransferRunsAndShrinksTheBytes) {
  for (int i = 0; i < 2; ++i) StartDevice(i);
  v1::JobConfig config = FedCgJob(/*rounds=*/1, /*per_round=*/2, /*quorum=*/2);
  config.mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  config.mutable_transfer()->set_update_encoding(v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  const std::string job = StartJob(config);
  const v1::JobStatus status = WaitForJob(job, absl::Seconds(120));
  ASSERT_EQ(status.state(), v1::JOB_STATE_FINISHED) << status.message();
  const std::vector<v1::RoundRecord> rounds = CompletedRounds(job);
  ASSERT_EQ(rounds.size(), 1u);
  const v1::RoundMetrics& m = rounds[0].metrics();
  EXPECT_EQ(m.participants(), 2);
  EXPECT_EQ(m.fed_cg().distill_steps(), 10);
  EXPECT_EQ(m.fed_cg().clients_evaluated(), 2);
  // C and G as float32 are 4 bytes a value; int8 about 1 (plus a scale per row / 256 values).
  auto model = coordinator_->ExportModel(job);
  ASSERT_THAT(model, IsOk());
  int64_t values = 0;
  for (const v1::TensorProto& t : model->parameters()) values += t.values_size();
  for (const v1::ClientRoundMetrics& c : m.clients()) {
    EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED) << c.reason();
    EXPECT_LT(c.bytes_up(), values * 2) << c.client_id();
    EXPECT_LT(c.bytes_down(), values * 2) << c.client_id();
    EXPECT_GT(c.bytes_up(), values) << c.client_id();
  }
}

}  // namespace
}  // namespace fedge
