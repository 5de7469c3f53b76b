// The web console's HTTP side (server/grpc/console_http.h) with cpp-httplib as the client:
// static files, the JSON API's authentication and roles (the Admin service's), stopping a
// job, the event stream and its bound, and the refusal of plaintext off loopback. The page
// itself is driven in a browser by tests/python/console_browser_test.py.
#include "server/grpc/console_http.h"

#include <httplib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/admin_api.h"
#include "server/coordinator.h"
#include "server/store.h"
#include "tests/operator_channel.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"
#include "tests/test_certificates.h"

namespace fedge {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::fedge::testing::TestOperators;
using ::testing::HasSubstr;

constexpr char kJob[] =
    "name: \"console\"\n"
    "model_spec { name: \"tiny\" input_shape: 8 "
    "layers { name: \"fc1\" dense { in_features: 8 out_features: 3 } } }\n"
    "rounds: 3\nselection { clients_per_round: 1 }\nround_policy { quorum: 1 }\n";

class ConsoleHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/console_http_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    auto store = server::Store::Open(dir_);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(store).value();
    server::CoordinatorOptions o;
    o.enrollment_token = "enrol";
    o.evaluation_data = std::make_shared<const data::Dataset>(testing::SeparableData(50, 8, 3, 1));
    auto c = server::Coordinator::Create(o, store_.get());
    ASSERT_THAT(c, IsOk());
    coordinator_ = std::move(c).value();
    operators_ = std::make_unique<TestOperators>(dir_);
    server::AdminLimits limits;
    limits.watch_interval = absl::Milliseconds(20);
    api_ = std::make_unique<server::AdminApi>(coordinator_.get(), store_.get(), limits,
                                              server::AdminAccess{operators_->tokens(), true});
  }

  void Serve(int max_event_streams = 16) {
    server::ConsoleOptions o;
    o.listen = "127.0.0.1:0";
    o.max_event_streams = max_event_streams;
    auto s = server::ConsoleHttpServer::Start(o, api_.get());
    ASSERT_THAT(s, IsOk());
    console_ = std::move(s).value();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", console_->port());
    client_->set_read_timeout(10, 0);
  }

  httplib::Headers As(const std::string& token) {
    return {{"Authorization", "Bearer " + token}};
  }

  std::string StartJob() {
    v1::StartJobRequest r;
    r.set_config_text(kJob);
    auto op = api_->Authenticate("Bearer " + operators_->operator_token(), "127.0.0.1",
                                 server::OperatorRole::kOperator, "test");
    EXPECT_THAT(op, IsOk());
    auto started = api_->StartJob(*op, "test", r);
    EXPECT_THAT(started, IsOk());
    return started->job_id();
  }

  std::string dir_;
  std::unique_ptr<server::Store> store_;
  std::unique_ptr<server::Coordinator> coordinator_;
  std::unique_ptr<TestOperators> operators_;
  std::unique_ptr<server::AdminApi> api_;
  std::unique_ptr<server::ConsoleHttpServer> console_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ConsoleHttpTest, ServesThePageAndItsFilesWithoutCredentials) {
  Serve();
  auto page = client_->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->get_header_value("Content-Type"), HasSubstr("text/html"));
  EXPECT_THAT(page->body, HasSubstr("<title>fedge console</title>"));
  EXPECT_THAT(page->get_header_value("Content-Security-Policy"), HasSubstr("default-src 'self'"));
  auto chart = client_->Get("/chart.js");
  ASSERT_TRUE(chart);
  EXPECT_EQ(chart->status, 200);
  EXPECT_THAT(chart->body, HasSubstr("Chart"));
  auto js = client_->Get("/console.js");
  ASSERT_TRUE(js);
  EXPECT_THAT(js->body, HasSubstr("/api/whoami"));
  auto missing = client_->Get("/etc/passwd");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST_F(ConsoleHttpTest, TheApiNeedsAnOperatorTokenWithTheRightRole) {
  Serve();
  auto none = client_->Get("/api/jobs");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_THAT(none->body, HasSubstr("\"code\":\"UNAUTHENTICATED\""));
  EXPECT_EQ(none->get_header_value("Cache-Control"), "no-store");
  auto bogus = client_->Get("/api/jobs", As("fedge-op-not-a-token"));
  ASSERT_TRUE(bogus);
  EXPECT_EQ(bogus->status, 403);
  auto device = client_->Get("/api/clients", As("enrol"));  // the enrollment token
  ASSERT_TRUE(device);
  EXPECT_EQ(device->status, 403);
  auto who = client_->Get("/api/whoami", As(operators_->viewer_token()));
  ASSERT_TRUE(who);
  EXPECT_EQ(who->status, 200);
  EXPECT_THAT(who->body, HasSubstr("\"role\":\"viewer\""));
  auto jobs = client_->Get("/api/jobs", As(operators_->viewer_token()));
  ASSERT_TRUE(jobs);
  EXPECT_EQ(jobs->status, 200);
  EXPECT_EQ(jobs->body, "{\"jobs\":[]}");
}

TEST_F(ConsoleHttpTest, AViewerReadsAJobAndOnlyAnOperatorStopsIt) {
  Serve();
  const std::string job = StartJob();
  auto status = client_->Get(("/api/jobs/" + job).c_str(), As(operators_->viewer_token()));
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
  EXPECT_THAT(status->body, HasSubstr("\"state\":\"JOB_STATE_RUNNING\""));
  EXPECT_THAT(status->body, HasSubstr("\"completed_rounds\":\"0\""));  // int64: a string
  auto list = client_->Get("/api/jobs", As(operators_->viewer_token()));
  ASSERT_TRUE(list);
  EXPECT_THAT(list->body, HasSubstr(job));
  auto rounds = client_->Get(("/api/jobs/" + job + "/rounds").c_str(),
                             As(operators_->viewer_token()));
  ASSERT_TRUE(rounds);
  EXPECT_EQ(rounds->status, 200);

  const std::string stop = "/api/jobs/" + job + "/stop";
  auto refused = client_->Post(stop.c_str(), As(operators_->viewer_token()),
                               "{\"reason\": \"viewer\"}", "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 403);
  EXPECT_THAT(refused->body, HasSubstr("needs the operator role"));
  auto malformed = client_->Post(stop.c_str(), As(operators_->operator_token()),
                                 "{\"reason\": 5}", "application/json");
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->status, 400);
  // A body past 64 KiB is refused before any handler runs, with or without a token.
  auto huge = client_->Post(stop.c_str(), std::string(100 << 10, 'x'), "application/json");
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 413);
  auto unknown = client_->Post("/api/jobs/no-such-job/stop", As(operators_->operator_token()),
                               "{}", "application/json");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  ASSERT_THAT(coordinator_->GetJob(job), IsOk());
  EXPECT_EQ(coordinator_->GetJob(job)->state(), v1::JOB_STATE_RUNNING);
  auto stopped = client_->Post(stop.c_str(), As(operators_->operator_token()),
                               "{\"reason\": \"from the test\"}", "application/json");
  ASSERT_TRUE(stopped);
  EXPECT_EQ(stopped->status, 200);
  EXPECT_THAT(stopped->body, HasSubstr("\"state\":\"JOB_STATE_STOPPED\""));
}

TEST_F(ConsoleHttpTest, EventStreamsEndWithTheJobAndAreBounded) {
  Serve(/*max_event_streams=*/1);
  const std::string job = StartJob();
  const std::string events = "/api/jobs/" + job + "/events";
  // One stream stays open (nothing ticks the coordinator: the job waits for its round).
  std::string received;
  std::thread watcher([&] {
    httplib::Client c("127.0.0.1", console_->port());
    c.set_read_timeout(30, 0);
    c.Get(events.c_str(), As(operators_->viewer_token()),
          [&](const char* data, size_t n) {
            received.append(data, n);
            return true;
          });
  });
  // Wait until the first stream holds the only slot.
  for (int i = 0; i < 500 && received.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto second = client_->Get(events.c_str(), As(operators_->viewer_token()));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 503);
  EXPECT_THAT(second->body, HasSubstr("event streams are open already"));
  // Stopping the job ends the stream with its job_changed event.
  ASSERT_THAT(coordinator_->StopJob(job), IsOk());
  watcher.join();
  EXPECT_THAT(received, HasSubstr("event: job_changed\ndata: {"));
  EXPECT_THAT(received, HasSubstr("JOB_STATE_STOPPED"));
  // The slot is free again: a stream of the stopped job answers at once and ends.
  auto again = client_->Get(events.c_str(), As(operators_->viewer_token()));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_THAT(again->get_header_value("Content-Type"), HasSubstr("text/event-stream"));
  EXPECT_THAT(again->body, HasSubstr("event: job_changed"));
}

TEST_F(ConsoleHttpTest, PlaintextOffLoopbackAndHalfATlsPairAreRefused) {
  server::ConsoleOptions o;
  o.listen = "0.0.0.0:0";
  EXPECT_THAT(server::ConsoleHttpServer::Start(o, api_.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not on loopback")));
  o.listen = "127.0.0.1:0";
  o.tls_cert_file = dir_ + "/server.crt";
  EXPECT_THAT(server::ConsoleHttpServer::Start(o, api_.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("certificate and its key")));
  o.tls_key_file = dir_ + "/missing.key";
  EXPECT_THAT(server::ConsoleHttpServer::Start(o, api_.get()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot load")));
  o.tls_cert_file.clear();
  o.tls_key_file.clear();
  o.listen = "127.0.0.1";
  EXPECT_THAT(server::ConsoleHttpServer::Start(o, api_.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not host:port")));
}

// With the coordinator's certificate the console is HTTPS: a client that trusts the CA reads
// the API with its token; the same port does not answer plain HTTP.
TEST_F(ConsoleHttpTest, WithACertificateTheConsoleIsHttps) {
  ASSERT_THAT(testing::MakeTestCertificates(dir_), IsOk());
  server::ConsoleOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_cert_file = dir_ + "/server.crt";
  o.tls_key_file = dir_ + "/server.key";
  auto s = server::ConsoleHttpServer::Start(o, api_.get());
  ASSERT_THAT(s, IsOk());
  EXPECT_TRUE((*s)->tls());
  httplib::SSLClient tls("127.0.0.1", (*s)->port());
  tls.set_ca_cert_path((dir_ + "/ca.crt").c_str());
  tls.enable_server_certificate_verification(true);
  auto who = tls.Get("/api/whoami", As(operators_->operator_token()));
  ASSERT_TRUE(who) << httplib::to_string(who.error());
  EXPECT_EQ(who->status, 200);
  EXPECT_THAT(who->body, HasSubstr("\"role\":\"operator\""));
  httplib::Client plain("127.0.0.1", (*s)->port());
  plain.set_read_timeout(2, 0);
  auto refused = plain.Get("/api/whoami", As(operators_->operator_token()));
  EXPECT_TRUE(!refused || refused->status != 200);
}

}  // namespace
}  // namespace fedge
