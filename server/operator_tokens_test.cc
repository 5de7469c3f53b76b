#include "server/operator_tokens.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace fedge::server {
namespace {

class OperatorTokensTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fedge-operator-tokens-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = OperatorTokens::PathIn(dir_.string());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(OperatorTokensTest, AddedTokenAuthenticatesWithItsRoleAndOnlyTheHashIsStored) {
  OperatorTokens tokens(path_);
  absl::StatusOr<std::string> alice = tokens.Add("alice", OperatorRole::kOperator, 100);
  ASSERT_TRUE(alice.ok()) << alice.status();
  absl::StatusOr<std::string> bob = tokens.Add("bob", OperatorRole::kViewer, 200);
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_TRUE(absl::StartsWith(*alice, kOperatorTokenPrefix));
  EXPECT_NE(*alice, *bob);

  OperatorTokens reader(path_);  // another process's view: the coordinator
  absl::StatusOr<Operator> a = reader.Authenticate(*alice);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->name, "alice");
  EXPECT_EQ(a->role, OperatorRole::kOperator);
  absl::StatusOr<Operator> b = reader.Authenticate(*bob);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->role, OperatorRole::kViewer);

  std::ifstream in(path_);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find(alice->substr(sizeof(kOperatorTokenPrefix) - 1)), std::string::npos);
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(OperatorTokensTest, UnknownEmptyAndDeviceTokensAreRefused) {
  OperatorTokens tokens(path_);
  ASSERT_TRUE(tokens.Add("alice", OperatorRole::kOperator, 1).ok());
  EXPECT_EQ(tokens.Authenticate("").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(tokens.Authenticate("the-enrollment-token").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(tokens.Authenticate(std::string(kOperatorTokenPrefix) + std::string(64, 'a'))
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(OperatorTokensTest, RevocationTakesEffectForARunningReader) {
  OperatorTokens coordinator(path_);
  OperatorTokens cli(path_);
  absl::StatusOr<std::string> t = cli.Add("alice", OperatorRole::kOperator, 1);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(coordinator.Authenticate(*t).ok());
  ASSERT_TRUE(cli.Revoke("alice").ok());
  absl::StatusOr<Operator> after = coordinator.Authenticate(*t);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(after.status().message(), "revoked")) << after.status();
  // A revoked name is not reused; an unknown one cannot be revoked.
  EXPECT_EQ(cli.Add("alice", OperatorRole::kViewer, 2).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(cli.Revoke("carol").code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<Operator>> all = cli.List();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_TRUE((*all)[0].revoked);
}

TEST_F(OperatorTokensTest, MissingLooseOrCorruptFileFailsClosed) {
  OperatorTokens tokens(path_);
  absl::StatusOr<Operator> none = tokens.Authenticate("x");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "operators add")) << none.status();

  absl::StatusOr<std::string> t = tokens.Add("alice", OperatorRole::kOperator, 1);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(tokens.Authenticate(*t).ok());
  ASSERT_EQ(chmod(path_.c_str(), 0644), 0);
  absl::StatusOr<Operator> loose = tokens.Authenticate(*t);
  EXPECT_EQ(loose.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(loose.status().message(), "chmod 600")) << loose.status();
  ASSERT_EQ(chmod(path_.c_str(), 0600), 0);
  ASSERT_TRUE(tokens.Authenticate(*t).ok());

  {
    std::ofstream out(path_, std::ios::app);
    out << "mallory admin 00 1 active\n";
  }
  absl::StatusOr<Operator> corrupt = tokens.Authenticate(*t);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(corrupt.status().message(), "line 3")) << corrupt.status();
}

TEST_F(OperatorTokensTest, NamesAndRolesAreValidated) {
  OperatorTokens tokens(path_);
  EXPECT_EQ(tokens.Add("", OperatorRole::kViewer, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens.Add("a b", OperatorRole::kViewer, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens.Add("a\nb", OperatorRole::kViewer, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens.Add(std::string(65, 'a'), OperatorRole::kViewer, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseOperatorRole("viewer").ok());
  EXPECT_EQ(ParseOperatorRole("admin").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OperatorAuthorizeTest, OperatorIncludesViewerButNotTheReverse) {
  Operator viewer{"v", OperatorRole::kViewer};
  Operator op{"o", OperatorRole::kOperator};
  EXPECT_TRUE(Authorize(viewer, OperatorRole::kViewer, "GetJob").ok());
  EXPECT_EQ(Authorize(viewer, OperatorRole::kOperator, "StopJob").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Authorize(op, OperatorRole::kViewer, "GetJob").ok());
  EXPECT_TRUE(Authorize(op, OperatorRole::kOperator, "StopJob").ok());
}

}  // namespace
}  // namespace fedge::server
