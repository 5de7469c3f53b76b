#include "client/device_state.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

TEST(DeviceStateTest, SavesWithMode0600AndReloads) {
  const fedge::testing::ScopedTempDir tmp("device_state");
  const std::string dir = tmp.path();
  const std::string path = dir + "/client.state";
  const mode_t old = ::umask(0);  // even a permissive umask must not widen the mode
  ASSERT_THAT(SaveDeviceState(path, {"client-000123", ""}), IsOk());
  ::umask(old);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = LoadDeviceState(path);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->client_id, "client-000123");
  // Overwrite keeps the mode and replaces the id.
  ASSERT_THAT(SaveDeviceState(path, {"client-9", ""}), IsOk());
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(LoadDeviceState(path)->client_id, "client-9");
  std::filesystem::remove_all(dir);
}

TEST(DeviceStateTest, KeepsTheDeviceKeyAndReadsFilesWithoutOne) {
  const fedge::testing::ScopedTempDir tmp("device_state");
  const std::string dir = tmp.path();
  const std::string path = dir + "/client.state";
  const std::string key(64, 'a');
  ASSERT_THAT(SaveDeviceState(path, {"c-1", key}), IsOk());
  auto loaded = LoadDeviceState(path);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->device_key, key);
  ASSERT_THAT(SaveDeviceState(path, {"c-1", ""}), IsOk());  // a file from before device keys
  EXPECT_EQ(LoadDeviceState(path)->device_key, "");
  EXPECT_THAT(SaveDeviceState(path, {"c-1", "has space"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("device_key")));
  std::filesystem::remove_all(dir);
}

TEST(DeviceStateTest, MissingFileIsNotFound) {
  const fedge::testing::ScopedTempDir tmp("device_state");
  const std::string dir = tmp.path();
  EXPECT_THAT(LoadDeviceState(dir + "/none"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("none")));
  std::filesystem::remove_all(dir);
}

TEST(DeviceStateTest, RefusesAFileOthersCanRead) {
  const fedge::testing::ScopedTempDir tmp("device_state");
  const std::string dir = tmp.path();
  const std::string path = dir + "/client.state";
  ASSERT_THAT(SaveDeviceState(path, {"c1", ""}), IsOk());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  EXPECT_THAT(LoadDeviceState(path),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("0644")));
  std::filesystem::remove_all(dir);
}

TEST(DeviceStateTest, RejectsMalformedFilesAndIds) {
  const fedge::testing::ScopedTempDir tmp("device_state");
  const std::string dir = tmp.path();
  const std::string path = dir + "/client.state";
  {
    std::ofstream(path) << "something else\n";
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_THAT(LoadDeviceState(path), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no client_id")));
  EXPECT_THAT(SaveDeviceState(path, {"", ""}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client_id")));
  EXPECT_THAT(SaveDeviceState(path, {"has space", ""}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client_id")));
  EXPECT_THAT(SaveDeviceState(dir + "/no/such/dir/f", {"c", ""}), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no/such")));
  std::filesystem::remove_all(dir);
}

TEST(DeviceStateTest, FedCgPrivateStateIsOwnerOnlyAndRoundTrips) {
  const fedge::testing::ScopedTempDir tmp("device_state");
  const std::string dir = tmp.path();
  const std::string path = dir + "/client.state.fedcg";
  v1::ModelProto state;
  state.mutable_spec()->set_name("job-1");
  v1::TensorProto* t = state.add_parameters();
  t->set_name("E.conv1.weight");
  t->add_shape(2);
  t->add_values(0.25f);
  t->add_values(-1.5f);
  EXPECT_THAT(LoadFedCgPrivateState(path), StatusIs(absl::StatusCode::kNotFound, HasSubstr("fedcg")));
  ASSERT_THAT(SaveFedCgPrivateState(path, state), IsOk());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = LoadFedCgPrivateState(path);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->SerializeAsString(), state.SerializeAsString());
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_THAT(LoadFedCgPrivateState(path), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("0640")));
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  std::ofstream(path, std::ios::trunc) << "not a model";
  EXPECT_THAT(LoadFedCgPrivateState(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a FedCG state")));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fedge::client
