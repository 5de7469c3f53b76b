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

TEST_F(OperatorTokensTest, ATokenExpiresAtItsTimeAndAnOldFileNeverExpires) {
  OperatorTokens tokens(path_);
  const int64_t created = 1'800'000'000;
  absl::StatusOr<std::string> t = tokens.Add("temp", OperatorRole::kOperator, created,
                                             created + 3600);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> forever = tokens.Add("ops", OperatorRole::kViewer, created);
  ASSERT_TRUE(forever.ok());
  EXPECT_TRUE(tokens.Authenticate(*t, absl::FromUnixSeconds(created + 3599)).ok());
  absl::StatusOr<Operator> late = tokens.Authenticate(*t, absl::FromUnixSeconds(created + 3600));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(late.status().message(), "expired")) << late.status();
  EXPECT_TRUE(tokens.Authenticate(*forever, absl::FromUnixSeconds(created + 100 * 86400)).ok());
  absl::StatusOr<std::vector<Operator>> all = tokens.List();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)[0].expires_unix_s, created + 3600);
  EXPECT_EQ((*all)[1].expires_unix_s, 0);
  // An expiry not after the creation is refused.
  EXPECT_EQ(tokens.Add("x", OperatorRole::kViewer, created, created).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens.Add("y", OperatorRole::kViewer, created, -5).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A version-1 file (no expiry field) still authenticates, as never expiring, and is
  // written as version 2 at the next edit.
  std::string text;
  {
    std::ifstream in(path_);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_TRUE(absl::StrContains(text, "fedge-operators 2\n"));
  const size_t line = text.find("\nops ");
  ASSERT_NE(line, std::string::npos);
  std::string ops_line = text.substr(line + 1);
  ops_line = ops_line.substr(0, ops_line.find('\n'));  // "ops viewer HASH CREATED 0 active"
  const size_t zero = ops_line.rfind(" 0 active");
  ASSERT_NE(zero, std::string::npos);
  const std::string v1 = "fedge-operators 1\n" + ops_line.substr(0, zero) + " active\n";
  {
    std::ofstream out(path_, std::ios::trunc);
    out << v1;
  }
  ASSERT_EQ(chmod(path_.c_str(), 0600), 0);
  OperatorTokens reread(path_);
  absl::StatusOr<Operator> old = reread.Authenticate(*forever, absl::FromUnixSeconds(4'000'000'000));
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->expires_unix_s, 0);
  ASSERT_TRUE(reread.Add("new", OperatorRole::kViewer, created).ok());
  std::ifstream in(path_);
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header, "fedge-operators 2");
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
