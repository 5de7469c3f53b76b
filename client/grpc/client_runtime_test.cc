#include "client/grpc/client_runtime.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "client/device_state.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

ClientRuntimeOptions Valid() {
  ClientRuntimeOptions o;
  o.target = "127.0.0.1:1";
  o.enrollment_token = "t";
  o.insecure = true;
  data::Dataset d;
  d.num_examples = 1;
  d.shape = {2};
  d.num_classes = 2;
  d.features = {0.f, 1.f};
  d.labels = {1};
  o.data = std::make_shared<const data::Dataset>(d);
  return o;
}

TEST(ClientRuntimeTest, CreateChecksTheOptions) {
  EXPECT_THAT(ClientRuntime::Create(Valid()), IsOk());
  ClientRuntimeOptions o = Valid();
  o.target.clear();
  EXPECT_THAT(ClientRuntime::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target")));
  o = Valid();
  o.enrollment_token.clear();
  EXPECT_THAT(ClientRuntime::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token")));
  o = Valid();
  o.data = nullptr;
  EXPECT_THAT(ClientRuntime::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("local data")));
  o = Valid();
  o.insecure = false;
  o.tls_cert_chain_pem = "cert";  // no key
  EXPECT_THAT(ClientRuntime::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mutual TLS")));
  o = Valid();
  o.tls_root_ca_pem = "ca";  // with insecure
  EXPECT_THAT(ClientRuntime::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("insecure")));
  o = Valid();
  o.backoff.jitter = 2;
  EXPECT_THAT(ClientRuntime::Create(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Backoff")));
}

TEST(ClientRuntimeTest, ReadsTheClientIdFromTheStateFile) {
  std::string dir = (std::filesystem::temp_directory_path() / "client_runtime_XXXXXX").string();
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  ClientRuntimeOptions o = Valid();
  o.state_path = dir + "/client.state";
  ASSERT_THAT(SaveDeviceState(o.state_path, {"c-42", std::string(64, 'a')}), IsOk());
  auto r = ClientRuntime::Create(o);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ((*r)->client_id(), "c-42");
  // A state file others can read is refused rather than silently trusted.
  ASSERT_EQ(::chmod(o.state_path.c_str(), 0644), 0);
  EXPECT_THAT(ClientRuntime::Create(o), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("0644")));
  std::filesystem::remove_all(dir);
}

TEST(ClientRuntimeTest, RunReturnsPromptlyWhenStoppedWhileTheCoordinatorIsAway) {
  ClientRuntimeOptions o = Valid();
  auto r = ClientRuntime::Create(o);
  ASSERT_THAT(r, IsOk());
  std::atomic<bool> stop{true};
  EXPECT_THAT((*r)->Run(stop), IsOk());
  EXPECT_EQ((*r)->stats().registrations, 0);
}

}  // namespace
}  // namespace fedge::client
