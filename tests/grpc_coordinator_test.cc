// The coordinator over real gRPC on 127.0.0.1 (an ephemeral port), in-process: devices
// written against the generated stubs register, long-poll tasks, train with
// client::TrainLocally, upload in chunks; operators use the Admin stub. Covers a model far
// over gRPC's 4 MB default and every kind of bad input, each with a clear error and an
// unharmed coordinator.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/rng.h"
#include "client/local_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/payload.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "proto/admin.grpc.pb.h"
#include "proto/coordinator.grpc.pb.h"
#include "server/coordinator.h"
#include "server/grpc/grpc_server.h"
#include "server/store.h"
#include "tests/operator_channel.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"

namespace fedge {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::OperatorChannel;
using ::fedge::testing::TestOperators;
using ::testing::HasSubstr;

constexpr char kToken[] = "enroll-me";

// The tests' separable synthetic problem (tests/synthetic_data.h).
data::Dataset MakeData(int n, int features, int classes, uint64_t seed) {
  return ::fedge::testing::SeparableData(n, features, classes, seed);
}

struct Device {
  std::string id, token;
  data::Dataset data;
};

struct FetchedTask {
  grpc::Status status;
  bool idle = false;
  v1::TaskHeader header;
  std::string payload;
  v1::ModelProto model;  // spec + decoded parameters
  std::optional<v1::ModelProto> teacher;  // when the task has one
};

// Decodes one section of a task's payload (any task encoding) into `m`'s parameters.
absl::Status DecodeSection(const v1::TensorManifest& manifest, absl::string_view bytes,
                           v1::ModelProto* m) {
  return model::DecodeModelParameters(manifest, bytes, m,
                                      {v1::TENSOR_ENCODING_FLOAT32,
                                       v1::TENSOR_ENCODING_INT8_PER_CHANNEL,
                                       v1::TENSOR_ENCODING_INT4_BLOCK32});
}

int64_t SectionBytes(const v1::TensorManifest& manifest) {
  int64_t n = 0;
  for (const v1::TensorInfo& t : manifest.tensors()) n += t.byte_size();
  return n;
}

class GrpcCoordinatorTest : public ::testing::Test {
 protected:
  void Start(int features, int classes, bool reflection = false, double register_burst = 500) {
    dir_ = ::testing::TempDir() + "/grpc_coordinator_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    auto store = server::Store::Open(dir_);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(store).value();
    server::CoordinatorOptions o;
    o.enrollment_token = kToken;
    o.evaluation_data = std::make_shared<const data::Dataset>(MakeData(200, features, classes, 99));
    auto c = server::Coordinator::Create(o, store_.get());
    ASSERT_THAT(c, IsOk());
    coordinator_ = std::move(c).value();
    server::GrpcServerOptions so;
    so.listen_address = "127.0.0.1:0";
    so.credentials = grpc::InsecureServerCredentials();
    so.tick_interval = absl::Milliseconds(20);
    so.limits.watch_interval = absl::Milliseconds(50);
    so.limits.max_wait = absl::Seconds(5);
    so.reflection = reflection;
    so.limits.register_burst = register_burst;
    so.limits.register_per_second = register_burst < 500 ? 0.001 : 20;
    operators_ = std::make_unique<TestOperators>(dir_);
    so.admin_listen_address = "127.0.0.1:0";
    so.admin_credentials = grpc::InsecureServerCredentials();
    so.admin_plaintext = true;
    so.operators = operators_->tokens();
    if (options_hook_) options_hook_(so);
    auto s = server::GrpcCoordinatorServer::Start(so, coordinator_.get(), store_.get());
    ASSERT_THAT(s, IsOk());
    server_ = std::move(s).value();
    ASSERT_GT(server_->port(), 0);
    ASSERT_GT(server_->admin_port(), 0);
    // A default channel: gRPC's 4 MB receive limit stays in force on the client.
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    devices_stub_ = v1::Coordinator::NewStub(channel_);
    admin_ = v1::Admin::NewStub(OperatorChannel(absl::StrCat("127.0.0.1:", server_->admin_port()),
                                                grpc::InsecureChannelCredentials(),
                                                operators_->operator_token()));
    features_ = features;
    classes_ = classes;
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  static void SetDeadline(grpc::ClientContext& ctx, int seconds = 60) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }

  Device Enroll(uint64_t seed, int examples = 100, int64_t memory_budget_bytes = 0) {
    v1::RegisterRequest r;
    r.set_enrollment_token(kToken);
    r.mutable_profile()->set_num_examples(examples);
    r.mutable_profile()->set_memory_budget_bytes(memory_budget_bytes);
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status s = devices_stub_->Register(&ctx, r, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.max_message_bytes(), int64_t{8} << 20);
    EXPECT_EQ(resp.chunk_bytes(), 1 << 20);
    return Device{resp.client_id(), resp.session_token(),
                  MakeData(examples, features_, classes_, seed)};
  }

  std::string StartJob(const std::string& text) {
    v1::StartJobRequest req;
    req.set_config_text(text);
    v1::StartJobResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status s = admin_->StartJob(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.job_id();
  }

  std::string JobText(const std::string& model, int rounds, int per_round, int quorum,
                      double deadline_seconds = 60) {
    return absl::StrCat("name: \"grpc-test\"\n", model, "\nrounds: ", rounds,
                        "\nselection { clients_per_round: ", per_round,
                        " }\nround_policy { quorum: ", quorum, " deadline_seconds: ",
                        deadline_seconds, " }\n"
                        "local_training { epochs: 1 batch_size: 16 learning_rate: 0.1 }\n");
  }

  // Long-polls for a task; reassembles and decodes the model like a device would.
  FetchedTask Fetch(const Device& d, int wait_seconds = 5) {
    FetchedTask out;
    v1::FetchTaskRequest req;
    req.set_client_id(d.id);
    req.set_session_token(d.token);
    req.set_wait_seconds(wait_seconds);
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    auto reader = devices_stub_->FetchTask(&ctx, req);
    v1::TaskChunk msg;
    std::optional<model::PayloadAssembler> assembler;
    while (reader->Read(&msg)) {
      if (msg.has_idle()) {
        out.idle = true;
      } else if (msg.has_header()) {
        out.header = msg.header();
        auto a = model::PayloadAssembler::Create(msg.header().total_bytes(), int64_t{1} << 30);
        EXPECT_THAT(a, IsOk());
        assembler.emplace(std::move(a).value());
      } else if (msg.has_data()) {
        EXPECT_THAT(assembler->Add(msg.data()), IsOk());
      } else if (msg.has_trailer()) {
        auto bytes = assembler->Finish(msg.trailer());
        EXPECT_THAT(bytes, IsOk());
        if (bytes.ok()) out.payload = std::move(bytes).value();
      }
    }
    out.status = reader->Finish();
    if (out.status.ok() && !out.idle) {
      auto net = model::Sequential::Create(out.header.model_spec());
      EXPECT_THAT(net, IsOk());
      out.model = (*net)->ToProto();
      const int64_t model_bytes = SectionBytes(out.header.manifest());
      EXPECT_THAT(DecodeSection(out.header.manifest(),
                                absl::string_view(out.payload).substr(0, model_bytes), &out.model),
                  IsOk());
      if (out.header.has_teacher_spec()) {
        auto teacher = model::Sequential::Create(out.header.teacher_spec());
        EXPECT_THAT(teacher, IsOk());
        out.teacher = (*teacher)->ToProto();
        EXPECT_THAT(DecodeSection(out.header.teacher_manifest(),
                                  absl::string_view(out.payload).substr(model_bytes),
                                  &*out.teacher),
                    IsOk());
      }
    }
    return out;
  }

  // Polls until the task arrives (the tick thread opens rounds asynchronously).
  FetchedTask FetchUntilTask(const Device& d) {
    for (int i = 0; i < 10; ++i) {
      FetchedTask t = Fetch(d);
      EXPECT_TRUE(t.status.ok()) << t.status.error_message();
      if (!t.status.ok() || !t.idle) return t;
    }
    ADD_FAILURE() << "no task for " << d.id;
    return {};
  }

  static v1::UpdateHeader HeaderFor(const Device& d, const FetchedTask& t) {
    v1::UpdateHeader h;
    h.set_client_id(d.id);
    h.set_session_token(d.token);
    h.set_job_id(t.header.job_id());
    h.set_round(t.header.round());
    h.set_task_id(t.header.task_id());
    h.set_num_examples(d.data.num_examples);
    return h;
  }

  // The update's messages: header (with manifest and total), data chunks, trailer.
  static std::vector<v1::UpdateChunk> UploadMessages(v1::UpdateHeader header,
                                                     const model::EncodedPayload& p,
                                                     int64_t chunk_bytes = 1 << 20) {
    std::vector<v1::UpdateChunk> msgs(1);
    if (!header.has_manifest()) *header.mutable_manifest() = p.manifest;
    if (header.total_bytes() == 0) header.set_total_bytes(static_cast<int64_t>(p.bytes.size()));
    *msgs[0].mutable_header() = std::move(header);
    model::ForEachChunk(p.bytes, chunk_bytes, [&](const v1::DataChunk& c) {
      msgs.emplace_back();
      *msgs.back().mutable_data() = c;
      return true;
    });
    msgs.emplace_back();
    *msgs.back().mutable_trailer() = model::MakeTrailer(p.bytes);
    return msgs;
  }

  grpc::Status Send(const std::vector<v1::UpdateChunk>& msgs,
                    v1::UploadUpdateResponse* response = nullptr) {
    v1::UploadUpdateResponse ignored;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    auto writer = devices_stub_->UploadUpdate(&ctx, response ? response : &ignored);
    for (const v1::UpdateChunk& m : msgs) {
      if (!writer->Write(m)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Trains on the task (with its teacher, if any) and returns the Δ encoded as the task asks.
  model::EncodedPayload Train(const Device& d, const FetchedTask& t) {
    auto options = client::OptionsFromTask(t.header, /*seed=*/1);
    EXPECT_THAT(options, IsOk());
    if (t.teacher.has_value()) options->teacher = &*t.teacher;
    auto update = client::TrainLocally(t.model, d.data, *options);
    EXPECT_THAT(update, IsOk());
    auto p = model::EncodeModelParameters(update->delta, t.header.update_encoding(), /*seed=*/7);
    EXPECT_THAT(p, IsOk());
    return std::move(p).value();
  }

  grpc::Status Work(const Device& d) {
    FetchedTask t = FetchUntilTask(d);
    if (!t.status.ok()) return t.status;
    return Send(UploadMessages(HeaderFor(d, t), Train(d, t)));
  }

  v1::JobStatus GetJob(const std::string& id) {
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::JobStatus status;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status s = admin_->GetJob(&ctx, req, &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  v1::JobStatus WaitForRounds(const std::string& id, int64_t rounds) {
    v1::JobStatus status;
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (absl::Now() < until) {
      status = GetJob(id);
      if (status.completed_rounds() >= rounds) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return status;
  }

  std::vector<v1::RoundRecord> ListRounds(const std::string& id) {
    v1::ListRoundsRequest req;
    req.set_job_id(id);
    v1::ListRoundsResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status s = admin_->ListRounds(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.rounds().begin(), resp.rounds().end()};
  }

  std::string ExportModel(const std::string& id, v1::ExportHeader* header) {
    v1::ExportModelRequest req;
    req.set_job_id(id);
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    auto reader = admin_->ExportModel(&ctx, req);
    v1::ExportChunk msg;
    std::optional<model::PayloadAssembler> a;
    std::string bytes;
    while (reader->Read(&msg)) {
      if (msg.has_header()) {
        *header = msg.header();
        a.emplace(std::move(model::PayloadAssembler::Create(header->total_bytes(), 1 << 30)).value());
      } else if (msg.has_data()) {
        EXPECT_THAT(a->Add(msg.data()), IsOk());
      } else if (msg.has_trailer()) {
        auto b = a->Finish(msg.trailer());
        EXPECT_THAT(b, IsOk());
        if (b.ok()) bytes = std::move(b).value();
      }
    }
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return bytes;
  }

  std::string dir_;
  int features_ = 0, classes_ = 0;
  std::unique_ptr<server::Store> store_;
  std::unique_ptr<server::Coordinator> coordinator_;
  std::unique_ptr<server::GrpcCoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> devices_stub_;
  std::function<void(server::GrpcServerOptions&)> options_hook_;  // applied before Start
  std::unique_ptr<TestOperators> operators_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

const char kTinyMlp[] =
    "model_spec { name: \"tiny\" input_shape: 8 "
    "layers { name: \"fc1\" dense { in_features: 8 out_features: 16 } } "
    "layers { name: \"relu1\" relu {} } "
    "layers { name: \"fc2\" dense { in_features: 16 out_features: 3 } } }";

TEST_F(GrpcCoordinatorTest, DevicesCompleteRoundsOverGrpc) {
  Start(8, 3);
  std::vector<Device> devices;
  for (int i = 0; i < 3; ++i) devices.push_back(Enroll(1000 + i));
  // Nothing to do yet: the long poll answers idle after the wait.
  FetchedTask idle = Fetch(devices[0], 0);
  ASSERT_TRUE(idle.status.ok()) << idle.status.error_message();
  EXPECT_TRUE(idle.idle);

  const std::string job = StartJob(JobText(kTinyMlp, 3, 3, 3));
  ASSERT_FALSE(job.empty());
  // A live watcher: every round's close, then the job's end (replay_history makes the
  // result independent of when the watcher's first poll happens).
  std::vector<int64_t> watched_closed;
  v1::JobState watched_state = v1::JOB_STATE_UNSPECIFIED;
  grpc::Status watch_status;
  std::thread watcher([&] {
    v1::WatchJobRequest req;  // empty job id: the running job
    req.set_replay_history(true);
    grpc::ClientContext ctx;
    SetDeadline(ctx, 60);
    auto reader = admin_->WatchJob(&ctx, req);
    v1::JobEvent e;
    while (reader->Read(&e)) {
      if (e.has_round_closed()) watched_closed.push_back(e.round_closed().round());
      if (e.has_job_changed()) watched_state = e.job_changed().state();
    }
    watch_status = reader->Finish();
  });
  for (int round = 1; round <= 3; ++round) {
    for (const Device& d : devices) {
      v1::UploadUpdateResponse resp;
      FetchedTask t = FetchUntilTask(d);
      ASSERT_TRUE(t.status.ok()) << t.status.error_message();
      EXPECT_EQ(t.header.round(), round);
      EXPECT_EQ(t.header.training().batch_size(), 16);
      // Small chunks: many per upload.
      grpc::Status s = Send(UploadMessages(HeaderFor(d, t), Train(d, t), 100), &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
      EXPECT_EQ(resp.round(), round);
      EXPECT_EQ(resp.bytes_received(), 4 * (8 * 16 + 16 + 16 * 3 + 3));
    }
    EXPECT_EQ(WaitForRounds(job, round).completed_rounds(), round);
  }
  const v1::JobStatus status = GetJob(job);
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED);
  watcher.join();
  EXPECT_TRUE(watch_status.ok()) << watch_status.error_message();
  EXPECT_EQ(watched_closed, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(watched_state, v1::JOB_STATE_FINISHED);
  EXPECT_EQ(GetJob("").job_id(), job);  // empty = the most recent job
  const std::vector<v1::RoundRecord> rounds = ListRounds(job);
  ASSERT_EQ(rounds.size(), 3u);
  for (const v1::RoundRecord& r : rounds) {
    EXPECT_EQ(r.state(), v1::ROUND_STATE_COMPLETED);
    EXPECT_EQ(r.metrics().participants(), 3);
    EXPECT_EQ(r.metrics().examples(), 300);
    EXPECT_TRUE(r.metrics().evaluated());
  }
  EXPECT_GT(rounds[2].metrics().test_accuracy(), 0.8);

  // WatchJob with history: three round_closed events, then the job's end.
  {
    v1::WatchJobRequest req;
    req.set_job_id(job);
    req.set_replay_history(true);
    grpc::ClientContext ctx;
    SetDeadline(ctx, 10);
    auto reader = admin_->WatchJob(&ctx, req);
    v1::JobEvent e;
    std::vector<int64_t> closed;
    v1::JobState final_state = v1::JOB_STATE_UNSPECIFIED;
    while (reader->Read(&e)) {
      if (e.has_round_closed()) closed.push_back(e.round_closed().round());
      if (e.has_job_changed()) final_state = e.job_changed().state();
    }
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(closed, (std::vector<int64_t>{1, 2, 3}));
    EXPECT_EQ(final_state, v1::JOB_STATE_FINISHED);
  }

  // ExportModel: a ModelProto that model/ loads, equal to the central model.
  v1::ExportHeader header;
  const std::string bytes = ExportModel(job, &header);
  EXPECT_EQ(header.round(), 3);
  v1::ModelProto exported;
  ASSERT_TRUE(exported.ParseFromString(bytes));
  EXPECT_THAT(model::Sequential::FromProto(exported), IsOk());
  EXPECT_EQ(exported.SerializeAsString(), coordinator_->ExportModel(job)->SerializeAsString());

  // ListClients, then one device leaves.
  {
    v1::ListClientsRequest req;
    v1::ListClientsResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    ASSERT_TRUE(admin_->ListClients(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.clients_size(), 3);
    EXPECT_EQ(resp.clients(0).rounds_participated(), 3);
  }
  {
    v1::LeaveRequest req;
    req.set_client_id(devices[2].id);
    req.set_session_token(devices[2].token);
    req.set_reason("test over");
    v1::LeaveResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    ASSERT_TRUE(devices_stub_->Leave(&ctx, req, &resp).ok());
    FetchedTask after = Fetch(devices[2], 0);
    EXPECT_EQ(after.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    v1::ListClientsRequest req;
    v1::ListClientsResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    ASSERT_TRUE(admin_->ListClients(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.clients_size(), 2);
  }
}

// Identity takeover: a second device with the enrollment token names the victim's id
// mid-round. Without the victim's device key it gets a new id of its own; the victim's
// session stays valid and its upload is the one accepted, and the impostor's upload as the
// victim is refused. The victim, with its key, re-registers under its own id.
TEST_F(GrpcCoordinatorTest, NamingAnotherDevicesIdGivesANewIdAndLeavesTheVictimAlone) {
  Start(8, 3);
  v1::RegisterRequest first;
  first.set_enrollment_token(kToken);
  first.mutable_profile()->set_num_examples(100);
  v1::RegisterResponse victim_reg;
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    ASSERT_TRUE(devices_stub_->Register(&ctx, first, &victim_reg).ok());
  }
  ASSERT_EQ(victim_reg.device_key().size(), 64u);
  Device victim{victim_reg.client_id(), victim_reg.session_token(), MakeData(100, 8, 3, 1)};
  const std::string job = StartJob(JobText(kTinyMlp, 1, 1, 1));
  ASSERT_FALSE(job.empty());
  FetchedTask t = FetchUntilTask(victim);
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  // The impostor: the enrollment token and the victim's id, no key or a guessed one.
  for (const std::string& key : {std::string(), std::string(64, '0')}) {
    v1::RegisterRequest takeover = first;
    takeover.set_previous_client_id(victim.id);
    takeover.set_device_key(key);
    v1::RegisterResponse got;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    ASSERT_TRUE(devices_stub_->Register(&ctx, takeover, &got).ok());
    EXPECT_NE(got.client_id(), victim.id);
    EXPECT_FALSE(got.device_key().empty());
    // Its upload as the victim, with its own session: refused.
    Device impostor{victim.id, got.session_token(), victim.data};
    EXPECT_EQ(Send(UploadMessages(HeaderFor(impostor, t), Train(victim, t))).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // The victim's own upload goes through and completes the round.
  v1::UploadUpdateResponse resp;
  grpc::Status s = Send(UploadMessages(HeaderFor(victim, t), Train(victim, t)), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(WaitForRounds(job, 1).completed_rounds(), 1);
  // With its key the victim keeps its id.
  v1::RegisterRequest again = first;
  again.set_previous_client_id(victim.id);
  again.set_device_key(victim_reg.device_key());
  v1::RegisterResponse back;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  ASSERT_TRUE(devices_stub_->Register(&ctx, again, &back).ok());
  EXPECT_EQ(back.client_id(), victim.id);
}

TEST_F(GrpcCoordinatorTest, ModelOverGrpcDefaultMessageLimitRoundTrips) {
  Start(784, 10);
  const Device d = Enroll(7, 32);
  // mlp 784-3300-3300-10: 13.5M floats, 54 MB — far over gRPC's 4 MB default (and over
  // 50 MB).
  const std::string job = StartJob(absl::StrCat(
      "name: \"big\"\n", "model_spec { name: \"big\" input_shape: 784 ",
      "layers { name: \"fc1\" dense { in_features: 784 out_features: 3300 } } ",
      "layers { name: \"r1\" relu {} } ",
      "layers { name: \"fc2\" dense { in_features: 3300 out_features: 3300 } } ",
      "layers { name: \"r2\" relu {} } ",
      "layers { name: \"fc3\" dense { in_features: 3300 out_features: 10 } } }\n",
      "rounds: 1\nselection { clients_per_round: 1 }\nround_policy { quorum: 1 }\n",
      "local_training { epochs: 1 batch_size: 32 learning_rate: 0.01 }\n"));
  ASSERT_FALSE(job.empty());
  FetchedTask t = FetchUntilTask(d);
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  constexpr int64_t kParams = 784 * 3300 + 3300 + 3300 * 3300 + 3300 + 3300 * 10 + 10;
  static_assert(4 * kParams > 50'000'000);
  EXPECT_EQ(t.header.total_bytes(), 4 * kParams);
  EXPECT_EQ(static_cast<int64_t>(t.payload.size()), 4 * kParams);
  const model::EncodedPayload update = Train(d, t);
  v1::UploadUpdateResponse resp;
  grpc::Status s = Send(UploadMessages(HeaderFor(d, t), update), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.bytes_received(), 4 * kParams);
  const v1::JobStatus status = WaitForRounds(job, 1);
  EXPECT_EQ(status.completed_rounds(), 1);
  EXPECT_EQ(status.latest_metrics().bytes_up(), 4 * kParams);
  v1::ExportHeader header;
  const std::string bytes = ExportModel(job, &header);
  EXPECT_GT(bytes.size(), static_cast<size_t>(4 * kParams));
  v1::ModelProto exported;
  ASSERT_TRUE(exported.ParseFromString(bytes));
  EXPECT_THAT(model::Sequential::FromProto(exported), IsOk());
}

TEST_F(GrpcCoordinatorTest, BadInputGetsAClearErrorAndLeavesTheCoordinatorUnharmed) {
  Start(8, 3);
  // Enrollment: wrong or missing token.
  for (const std::string& token : {std::string("guess"), std::string()}) {
    v1::RegisterRequest r;
    r.set_enrollment_token(token);
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status s = devices_stub_->Register(&ctx, r, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(s.error_message(), HasSubstr("enrollment token"));
  }
  std::vector<Device> d;
  // Five devices; the fifth is sampled but never answers, so the round stays open (until
  // its 3 s deadline) while the first four misbehave.
  for (int i = 0; i < 5; ++i) d.push_back(Enroll(2000 + i));
  // Session: wrong or missing token.
  for (const std::string& token : {std::string("wrong"), std::string()}) {
    Device bad = d[0];
    bad.token = token;
    FetchedTask t = Fetch(bad, 0);
    EXPECT_EQ(t.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(t.status.error_message(), HasSubstr("session token"));
  }
  // A job text with an unknown field, and one with an impossible value.
  {
    v1::StartJobRequest req;
    req.set_config_text(JobText(kTinyMlp, 1, 4, 1) + "learning_rate_typo: 3\n");
    v1::StartJobResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status s = admin_->StartJob(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("learning_rate_typo"));
  }
  {
    v1::StartJobRequest req;
    req.set_config_text(JobText(kTinyMlp, 0, 4, 1));
    v1::StartJobResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status s = admin_->StartJob(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("rounds"));
  }
  // One round, all five sampled, quorum 1.
  const std::string job = StartJob(JobText(kTinyMlp, 1, 5, 1, /*deadline_seconds=*/3));
  std::vector<FetchedTask> tasks;
  for (int i = 0; i < 4; ++i) tasks.push_back(FetchUntilTask(d[i]));
  for (const FetchedTask& t : tasks) ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  const model::EncodedPayload good = Train(d[0], tasks[0]);

  auto expect = [&](const grpc::Status& s, grpc::StatusCode code, const std::string& text) {
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(text));
  };
  // Client 0: faults that discard the upload but keep the task.
  {
    v1::UpdateHeader h = HeaderFor(d[0], tasks[0]);
    h.set_session_token("wrong");
    expect(Send(UploadMessages(h, good)), grpc::StatusCode::UNAUTHENTICATED, "session token");
    h = HeaderFor(d[0], tasks[0]);
    h.set_round(7);
    expect(Send(UploadMessages(h, good)), grpc::StatusCode::FAILED_PRECONDITION, "round 7");
  }
  {
    std::vector<v1::UpdateChunk> msgs = UploadMessages(HeaderFor(d[0], tasks[0]), good, 64);
    msgs.resize(msgs.size() - 2);  // truncated: the last chunk and the trailer never come
    expect(Send(msgs), grpc::StatusCode::DATA_LOSS, "without its trailer");
  }
  {
    std::vector<v1::UpdateChunk> msgs = UploadMessages(HeaderFor(d[0], tasks[0]), good, 64);
    msgs.back().mutable_trailer()->set_crc32(msgs.back().trailer().crc32() ^ 1u);
    expect(Send(msgs), grpc::StatusCode::DATA_LOSS, "CRC-32");
  }
  {
    std::vector<v1::UpdateChunk> msgs = UploadMessages(HeaderFor(d[0], tasks[0]), good, 64);
    std::swap(msgs[1], msgs[2]);  // chunks out of order
    expect(Send(msgs), grpc::StatusCode::INVALID_ARGUMENT, "offset 64, expected offset 0");
  }
  {
    // Resuming an upload the coordinator never kept (a stream the device ended itself is not
    // kept), and asking what it kept with a wrong session token.
    v1::UpdateHeader h = HeaderFor(d[0], tasks[0]);
    h.set_resume_offset(64);
    expect(Send(UploadMessages(h, good, 64)), grpc::StatusCode::FAILED_PRECONDITION,
           "cannot resume the upload");
    v1::UploadStatusRequest req;
    req.set_client_id(d[0].id);
    req.set_session_token("wrong");
    req.set_task_id(tasks[0].header.task_id());
    v1::UploadStatusResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    expect(devices_stub_->UploadStatus(&ctx, req, &resp), grpc::StatusCode::UNAUTHENTICATED,
           "session token");
    req.set_session_token(d[0].token);
    req.set_task_id(std::string(100000, 't'));  // over the string limit
    grpc::ClientContext ctx2;
    SetDeadline(ctx2);
    EXPECT_EQ(devices_stub_->UploadStatus(&ctx2, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    req.set_task_id(tasks[0].header.task_id());
    grpc::ClientContext ctx3;
    SetDeadline(ctx3);
    ASSERT_TRUE(devices_stub_->UploadStatus(&ctx3, req, &resp).ok());
    EXPECT_EQ(resp.bytes_received(), 0);
  }
  {
    // One message over the server's 8 MiB limit.
    std::vector<v1::UpdateChunk> msgs = UploadMessages(HeaderFor(d[0], tasks[0]), good);
    msgs[1].mutable_data()->mutable_data()->append(9 << 20, 'x');
    EXPECT_EQ(Send(msgs).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // Malformed updates drop their client from the round (never the round).
  {
    v1::UpdateHeader h = HeaderFor(d[1], tasks[1]);
    h.set_total_bytes(int64_t{1} << 40);
    expect(Send(UploadMessages(h, good)), grpc::StatusCode::INVALID_ARGUMENT,
           "announces 1099511627776 bytes");
    // Dropped: even a good update is refused now.
    expect(Send(UploadMessages(HeaderFor(d[1], tasks[1]), good)),
           grpc::StatusCode::FAILED_PRECONDITION, "not (or no longer) part of round 1");
  }
  {
    // Tensor shapes that differ from the task (same byte count: 16x8 read as 8x16).
    model::EncodedPayload misshapen = good;
    misshapen.manifest.mutable_tensors(0)->set_shape(0, 8);
    misshapen.manifest.mutable_tensors(0)->set_shape(1, 16);
    expect(Send(UploadMessages(HeaderFor(d[2], tasks[2]), misshapen)),
           grpc::StatusCode::INVALID_ARGUMENT, "'fc1.weight' has shape [8, 16], expected [16, 8]");
  }
  {
    // NaN in a value.
    model::EncodedPayload nan = good;
    const float bad = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(nan.bytes.data() + 8, &bad, 4);
    expect(Send(UploadMessages(HeaderFor(d[3], tasks[3]), nan)),
           grpc::StatusCode::INVALID_ARGUMENT, "'fc1.weight' has a non-finite value");
  }
  // The coordinator is unharmed: client 0's valid update is accepted...
  v1::UploadUpdateResponse resp;
  grpc::Status ok = Send(UploadMessages(HeaderFor(d[0], tasks[0]), good), &resp);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  // ...once.
  expect(Send(UploadMessages(HeaderFor(d[0], tasks[0]), good)), grpc::StatusCode::ALREADY_EXISTS,
         "already sent");
  // At the deadline the round completes with one participant and three rejections.
  const v1::JobStatus status = WaitForRounds(job, 1);
  EXPECT_EQ(status.completed_rounds(), 1);
  EXPECT_EQ(status.state(), v1::JOB_STATE_FINISHED);
  const std::vector<v1::RoundRecord> rounds = ListRounds(job);
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].metrics().participants(), 1);
  EXPECT_EQ(rounds[0].metrics().rejected(), 3);
  EXPECT_EQ(rounds[0].metrics().dropped(), 1);
  // An update for a job that is over.
  expect(Send(UploadMessages(HeaderFor(d[1], tasks[1]), good)), grpc::StatusCode::FAILED_PRECONDITION,
         "not running");
}

// Health checking and server reflection, spoken with the generic stub (their messages are
// tiny hand-encoded protos: no generated code needed).
// Sub-models over gRPC: tiers by memory budget, int8 task weights, an int4 teacher for the
// small tier, int8 stochastic-rounded updates; an update in the full model's shapes from a
// small-tier device and an int8 update with a corrupt scale are refused with clear errors
// while the round completes with the good update.
TEST_F(GrpcCoordinatorTest, TiersQuantizedTransferAndTeacherOverGrpc) {
  Start(8, 3);
  const int64_t kMiB = int64_t{1} << 20;
  Device big = Enroll(1, 100, 128 * kMiB);
  Device corrupt = Enroll(2, 100, 128 * kMiB);
  Device small = Enroll(3, 100, 1 * kMiB);
  const std::string kTwoHidden =
      "model_spec { name: \"tiny2\" input_shape: 8 "
      "layers { name: \"fc1\" dense { in_features: 8 out_features: 64 } } "
      "layers { name: \"relu1\" relu {} } "
      "layers { name: \"fc2\" dense { in_features: 64 out_features: 64 } } "
      "layers { name: \"relu2\" relu {} } "
      "layers { name: \"fc3\" dense { in_features: 64 out_features: 3 } } }";
  const std::string job = StartJob(absl::StrCat(
      JobText(kTwoHidden, 1, 3, 1),
      "sub_models { tiers { name: \"full\" width_ratio: 1 } tiers { name: \"quarter\" "
      "width_ratio: 0.25 } rules { tier: \"full\" min_memory_budget_bytes: 67108864 } "
      "default_tier: \"quarter\" }\n"
      "distillation { weight: 0.5 teacher_compute_mode: COMPUTE_MODE_INT4 }\n"
      "transfer { task_encoding: TENSOR_ENCODING_INT8_PER_CHANNEL "
      "update_encoding: TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED }\n"));
  ASSERT_FALSE(job.empty());
  const int64_t full_floats = 8 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3;
  const int64_t quarter_floats = 8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3;

  FetchedTask tb = FetchUntilTask(big);
  ASSERT_TRUE(tb.status.ok()) << tb.status.error_message();
  EXPECT_EQ(tb.header.tier(), "full");
  EXPECT_FALSE(tb.teacher.has_value());  // the full model has nothing larger to learn from
  for (const v1::TensorInfo& t : tb.header.manifest().tensors()) {
    EXPECT_EQ(t.encoding(), v1::TENSOR_ENCODING_INT8_PER_CHANNEL) << t.name();
  }
  const auto specs = [](const v1::ModelProto& m) { return model::ParameterSpecs(m); };
  EXPECT_EQ(tb.header.total_bytes(),
            model::EncodedPayloadBytes(specs(tb.model), v1::TENSOR_ENCODING_INT8_PER_CHANNEL));
  EXPECT_LT(tb.header.total_bytes(), full_floats * 4 * 35 / 100);  // int8 + row scales

  FetchedTask ts = FetchUntilTask(small);
  ASSERT_TRUE(ts.status.ok()) << ts.status.error_message();
  EXPECT_EQ(ts.header.tier(), "quarter");
  EXPECT_DOUBLE_EQ(ts.header.width_ratio(), 0.25);
  EXPECT_EQ(ts.model.parameters(0).shape(0), 16);
  ASSERT_TRUE(ts.teacher.has_value());
  EXPECT_EQ(ts.teacher->parameters(0).shape(0), 64);  // the full central model...
  for (const v1::TensorInfo& t : ts.header.teacher_manifest().tensors()) {
    EXPECT_EQ(t.encoding(), v1::TENSOR_ENCODING_INT4_BLOCK32) << t.name();  // ...as int4
  }
  // Both sections dequantize to (about) the central model the coordinator keeps.
  auto central = coordinator_->ExportModel(job);
  ASSERT_THAT(central, IsOk());
  for (int i = 0; i < central->parameters_size(); ++i) {
    const auto& want = central->parameters(i).values();
    const auto& got = ts.teacher->parameters(i).values();
    ASSERT_EQ(want.size(), got.size());
    float max_abs = 0, max_err = 0;
    for (int k = 0; k < want.size(); ++k) {
      max_abs = std::max(max_abs, std::abs(want[k]));
      max_err = std::max(max_err, std::abs(want[k] - got[k]));
    }
    EXPECT_LE(max_err, max_abs / 7.0f) << central->parameters(i).name();  // int4: 1/16 steps
  }

  FetchedTask tc = FetchUntilTask(corrupt);
  ASSERT_TRUE(tc.status.ok()) << tc.status.error_message();

  // The small device sends Δ in the full model's shapes: refused, naming its tier.
  {
    v1::ModelProto full_delta = tb.model;
    auto p = model::EncodeModelParameters(full_delta, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, 1);
    ASSERT_THAT(p, IsOk());
    grpc::Status s = Send(UploadMessages(HeaderFor(small, ts), *p));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("tier 'quarter'"));
  }
  // An int8 update whose first chunk scale is NaN: refused, naming the scale.
  {
    model::EncodedPayload p = Train(corrupt, tc);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(&p.bytes[p.manifest.tensors(0).offset()], &nan, sizeof nan);
    grpc::Status s = Send(UploadMessages(HeaderFor(corrupt, tc), p));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("scale"));
  }
  // The good device's int8 update is taken; the round completes with it.
  model::EncodedPayload good = Train(big, tb);
  for (const v1::TensorInfo& t : good.manifest.tensors()) {
    EXPECT_EQ(t.encoding(), v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  }
  EXPECT_LE(static_cast<double>(good.bytes.size()), 0.27 * full_floats * 4);
  v1::UploadUpdateResponse resp;
  grpc::Status s = Send(UploadMessages(HeaderFor(big, tb), good), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(WaitForRounds(job, 1).completed_rounds(), 1);
  const std::vector<v1::RoundRecord> rounds = ListRounds(job);
  ASSERT_EQ(rounds.size(), 1u);
  const v1::RoundMetrics& m = rounds[0].metrics();
  EXPECT_EQ(m.participants(), 1);
  EXPECT_EQ(m.rejected(), 2);
  ASSERT_EQ(m.clients_size(), 3);
  for (const v1::ClientRoundMetrics& c : m.clients()) {
    if (c.client_id() == big.id) {
      EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
      EXPECT_EQ(c.bytes_up(), static_cast<int64_t>(good.bytes.size()));
      EXPECT_EQ(c.bytes_down(), tb.header.total_bytes());
    } else {
      EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_REJECTED);
    }
    if (c.client_id() == small.id) {
      EXPECT_EQ(c.tier(), "quarter");
      EXPECT_EQ(c.bytes_down(), ts.header.total_bytes());  // sub-model + int4 teacher
      EXPECT_EQ(c.bytes_down(),
                model::EncodedPayloadBytes(specs(ts.model), v1::TENSOR_ENCODING_INT8_PER_CHANNEL) +
                    model::EncodedPayloadBytes(specs(*ts.teacher), v1::TENSOR_ENCODING_INT4_BLOCK32));
      EXPECT_LT(c.bytes_down(), (quarter_floats + full_floats) * 4 / 4);
    }
  }
}

// Registrations from one address are bounded (a burst, then a rate): past it, a clear
// RESOURCE_EXHAUSTED that a device backs off from; nothing is enrolled.
TEST_F(GrpcCoordinatorTest, RegistrationsFromOneAddressAreRateLimited) {
  Start(8, 3, /*reflection=*/false, /*register_burst=*/3);
  v1::RegisterRequest r;
  r.set_enrollment_token(kToken);
  r.mutable_profile()->set_num_examples(10);
  for (int i = 0; i < 3; ++i) {
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    ASSERT_TRUE(devices_stub_->Register(&ctx, r, &resp).ok()) << i;
  }
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  const grpc::Status s = devices_stub_->Register(&ctx, r, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("too many registrations"));
  EXPECT_EQ(coordinator_->ListClients()->size(), 3u);
}

// The threads of this process (/proc/self/status).
int ThreadCount() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "Threads:")) return std::stoi(line.substr(8));
  }
  return -1;
}

// An upload stream that never sends its header (a peer that has not authenticated) holds
// no server thread: with 16 threads for the server, 300 such streams leave room for a
// device to register and an operator to look at the job.
TEST_F(GrpcCoordinatorTest, IdleUploadStreamsHoldNoThread) {
  options_hook_ = [](server::GrpcServerOptions& so) { so.max_threads = 16; };
  Start(8, 3);
  const int threads_before = ThreadCount();
  constexpr int kIdle = 300;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<v1::UploadUpdateResponse> responses(kIdle);
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>>> idle;
  for (int i = 0; i < kIdle; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    SetDeadline(*contexts.back(), 60);
    idle.push_back(devices_stub_->UploadUpdate(contexts.back().get(), &responses[i]));
  }
  // Calls on the same connection after the idle streams: served.
  Device d = Enroll(1);
  EXPECT_FALSE(d.id.empty());
  {
    v1::GetJobRequest req;
    v1::JobStatus status;
    grpc::ClientContext ctx;
    SetDeadline(ctx, 10);
    // No job yet: NOT_FOUND is an answer; RESOURCE_EXHAUSTED would mean no thread.
    EXPECT_NE(admin_->GetJob(&ctx, req, &status).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  const int threads_during = ThreadCount();
  EXPECT_LT(threads_during - threads_before, 64)
      << "threads before " << threads_before << ", with " << kIdle << " idle streams "
      << threads_during;
  for (int i = 0; i < kIdle; ++i) {
    contexts[i]->TryCancel();
    idle[i]->Finish();
  }
}

// One address holds at most max_streams_per_peer long polls and uploads at once; a stream
// that ends gives its slot back.
TEST_F(GrpcCoordinatorTest, StreamsInFlightPerAddressAreCapped) {
  options_hook_ = [](server::GrpcServerOptions& so) { so.limits.max_streams_per_peer = 5; };
  Start(8, 3);
  const Device d = Enroll(1);
  // Six idle uploads (held until their 3 s deadline) and a 1 s long poll at once, from one
  // address: the server takes them in whatever order they reach it, holds five and refuses
  // the other two at once.
  constexpr int kStreams = 6;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<v1::UploadUpdateResponse> responses(kStreams);
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>>> streams;
  std::vector<grpc::Status> ends(kStreams);
  std::vector<std::thread> waiting;  // each stream's status as soon as it comes
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    SetDeadline(*contexts.back(), 3);
    streams.push_back(devices_stub_->UploadUpdate(contexts.back().get(), &responses[i]));
    waiting.emplace_back([&, i] { ends[i] = streams[i]->Finish(); });
  }
  const FetchedTask fetch = Fetch(d, 1);
  int refused = fetch.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ? 1 : 0;
  if (refused == 0) {
    EXPECT_TRUE(fetch.status.ok()) << fetch.status.error_message();
  }
  for (std::thread& t : waiting) t.join();
  for (int i = 0; i < kStreams; ++i) {
    const grpc::Status& s = ends[i];
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      EXPECT_THAT(s.error_message(), HasSubstr("in flight from this address"));
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    }
  }
  EXPECT_EQ(refused, 2);
  // They ended: the slots are free again.
  FetchedTask fetched;
  for (int i = 0; i < 100; ++i) {  // the server sees the ends shortly after
    fetched = Fetch(d, 0);
    if (fetched.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(fetched.status.ok()) << fetched.status.error_message();
}

TEST_F(GrpcCoordinatorTest, UploadStreamWithoutAHeaderIsEndedAtTheHeaderTimeout) {
  options_hook_ = [](server::GrpcServerOptions& so) {
    so.limits.upload_header_timeout = absl::Milliseconds(300);
  };
  Start(8, 3);
  v1::UploadUpdateResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx, 30);
  auto writer = devices_stub_->UploadUpdate(&ctx, &resp);
  const grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(s.error_message(), HasSubstr("no upload header within"));
  // A header that comes in time is taken (and refused here on its merits: no such session).
  grpc::ClientContext ctx2;
  SetDeadline(ctx2, 30);
  auto writer2 = devices_stub_->UploadUpdate(&ctx2, &resp);
  v1::UpdateChunk header;
  header.mutable_header()->set_client_id("nobody");
  header.mutable_header()->set_session_token("x");
  ASSERT_TRUE(writer2->Write(header));
  writer2->WritesDone();
  EXPECT_EQ(writer2->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// Health checking is on; reflection only when asked for (--reflection): it is tried both
// ways, on two servers of one process.
TEST_F(GrpcCoordinatorTest, ReflectionIsOffUnlessAskedFor) {
  Start(8, 3);
  grpc::GenericStub generic(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  SetDeadline(ctx, 10);
  auto call = generic.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(2));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(2)) {
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(GrpcCoordinatorTest, HealthCheckingAndReflectionAreOn) {
  Start(8, 3, /*reflection=*/true);
  grpc::GenericStub generic(channel_);
  grpc::CompletionQueue cq;
  auto wait = [&cq](void* tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, tag);
    return ok;
  };
  auto bytes_of = [](const grpc::ByteBuffer& b) {
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(b.Dump(&slices).ok());
    std::string out;
    for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
    return out;
  };
  {
    // grpc.health.v1.Health/Check with service "" → status SERVING (field 1 = 1).
    grpc::ClientContext ctx;
    SetDeadline(ctx, 10);
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1), response;
    auto call = generic.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    wait(reinterpret_cast<void*>(1));
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(bytes_of(response), std::string("\x08\x01", 2));
  }
  {
    // grpc.reflection.v1alpha.ServerReflection: list_services (field 7) lists ours.
    grpc::ClientContext ctx;
    SetDeadline(ctx, 10);
    auto call = generic.PrepareCall(
        &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    ASSERT_TRUE(wait(reinterpret_cast<void*>(1)));
    grpc::Slice list("\x3a\x01*", 3);
    grpc::ByteBuffer request(&list, 1), response;
    call->Write(request, reinterpret_cast<void*>(2));
    ASSERT_TRUE(wait(reinterpret_cast<void*>(2)));
    call->Read(&response, reinterpret_cast<void*>(3));
    ASSERT_TRUE(wait(reinterpret_cast<void*>(3)));
    const std::string listed = bytes_of(response);
    EXPECT_THAT(listed, HasSubstr("fedge.v1.Coordinator"));
    EXPECT_THAT(listed, HasSubstr("fedge.v1.Admin"));
    call->WritesDone(reinterpret_cast<void*>(4));
    wait(reinterpret_cast<void*>(4));
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    wait(reinterpret_cast<void*>(5));
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace fedge
