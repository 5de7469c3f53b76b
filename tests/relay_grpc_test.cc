// The root's Relay service over gRPC (server/grpc/relay_service.h): who may call it. A
// relay token (role relay) opens the relay calls and nothing else, as the relay its name
// says; operator tokens, device credentials and no token open none of them; the devices'
// listener does not serve the service at all; a part larger than the running job's sums
// can be is refused before its bytes are read.
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "proto/relay.grpc.pb.h"
#include "server/coordinator.h"
#include "server/grpc/grpc_server.h"
#include "tests/operator_channel.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::testing::HasSubstr;

class RelayGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    operators_ = std::make_unique<::fedge::testing::TestOperators>(dir_.path());
    absl::StatusOr<std::string> relay = operators_->tokens()->Add("relay-a", OperatorRole::kRelay, 1);
    ASSERT_THAT(relay, IsOk());
    relay_token_ = *relay;
    absl::StatusOr<std::string> odd = operators_->tokens()->Add("ops@site", OperatorRole::kRelay, 1);
    ASSERT_THAT(odd, IsOk());
    odd_token_ = *odd;
    CoordinatorOptions o;
    o.enrollment_token = "enroll-me";
    auto c = Coordinator::Create(o, nullptr);
    ASSERT_THAT(c, IsOk());
    coordinator_ = *std::move(c);
    GrpcServerOptions so;
    so.listen_address = "127.0.0.1:0";
    so.credentials = grpc::InsecureServerCredentials();
    so.admin_listen_address = "127.0.0.1:0";
    so.admin_credentials = grpc::InsecureServerCredentials();
    so.admin_plaintext = true;
    so.operators = operators_->tokens();
    so.tick_interval = absl::ZeroDuration();
    auto s = GrpcCoordinatorServer::Start(so, coordinator_.get(), nullptr);
    ASSERT_THAT(s, IsOk());
    server_ = *std::move(s);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration());
  }
  std::unique_ptr<v1::Relay::Stub> RelayStub(const std::string& token, bool devices_port = false) {
    return v1::Relay::NewStub(::fedge::testing::OperatorChannel(
        absl::StrCat("127.0.0.1:", devices_port ? server_->port() : server_->admin_port()),
        grpc::InsecureChannelCredentials(), token));
  }
  grpc::Status Sync(v1::Relay::Stub& stub, const std::string& relay_id,
                    v1::RelayAssignment* out = nullptr) {
    grpc::ClientContext context;
    v1::RelaySyncRequest request;
    request.set_relay_id(relay_id);
    v1::RelayAssignment a;
    grpc::Status s = stub.Sync(&context, request, &a);
    if (out != nullptr) *out = a;
    return s;
  }

  ::fedge::testing::ScopedTempDir dir_;
  std::unique_ptr<::fedge::testing::TestOperators> operators_;
  std::string relay_token_, odd_token_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<GrpcCoordinatorServer> server_;
};

TEST_F(RelayGrpcTest, ARelayTokenOpensTheRelayCallsAsItsOwnRelayAndNothingElse) {
  auto relay = RelayStub(relay_token_);
  v1::RelayAssignment a;
  ASSERT_TRUE(Sync(*relay, "", &a).ok());
  EXPECT_EQ(a.relay_id(), "relay-a");  // the token's name
  EXPECT_TRUE(Sync(*relay, "relay-a").ok());
  grpc::Status other = Sync(*relay, "relay-b");
  EXPECT_EQ(other.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(other.error_message(), HasSubstr("cannot speak for relay relay-b"));
  // No operator call, not even a viewer's.
  auto admin = v1::Admin::NewStub(::fedge::testing::OperatorChannel(
      absl::StrCat("127.0.0.1:", server_->admin_port()), grpc::InsecureChannelCredentials(),
      relay_token_));
  grpc::ClientContext context;
  v1::GetJobRequest request;
  v1::JobStatus response;
  EXPECT_EQ(admin->GetJob(&context, request, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(RelayGrpcTest, OtherCredentialsAndOtherListenersOpenNoRelayCall) {
  EXPECT_EQ(Sync(*RelayStub(operators_->operator_token()), "").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Sync(*RelayStub(operators_->viewer_token()), "").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Sync(*RelayStub(""), "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Sync(*RelayStub("enroll-me"), "").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // A relay token whose name is no relay id is refused, naming why.
  grpc::Status odd = Sync(*RelayStub(odd_token_), "");
  EXPECT_EQ(odd.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(odd.error_message(), HasSubstr("relay id"));
  // The devices' listener does not serve relays.
  EXPECT_EQ(Sync(*RelayStub(relay_token_, /*devices_port=*/true), "").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // A revoked relay token opens nothing.
  ASSERT_THAT(operators_->tokens()->Revoke("relay-a"), IsOk());
  EXPECT_EQ(Sync(*RelayStub(relay_token_), "").error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(RelayGrpcTest, APartLargerThanTheJobsSumsIsRefusedBeforeItsBytes) {
  auto relay = RelayStub(relay_token_);
  grpc::ClientContext context;
  v1::PartialResponse response;
  auto writer = relay->UploadPartial(&context, &response);
  v1::PartialChunk head;
  head.mutable_header()->set_job_id("none");
  head.mutable_header()->set_total_bytes(int64_t{1} << 40);
  writer->Write(head);
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("take at most 0"));
}

}  // namespace
}  // namespace fedge::server
