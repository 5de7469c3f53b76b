#include "server/registry.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kToken[] = "enroll-me";

class RegistryTest : public ::testing::Test {
 protected:
  RegistryOptions Options(Store* store = nullptr) {
    EnrollmentOptions e;
    e.deployment_token = kToken;
    e.clock = &clock_;
    enrollment_.push_back(std::make_unique<EnrollmentTokens>(e, store));
    RegistryOptions o;
    o.clock = &clock_;
    o.enrollment = enrollment_.back().get();
    o.liveness_timeout = absl::Seconds(10);
    o.max_examples_per_client = 1000;
    return o;
  }
  static v1::RegisterRequest Request(const std::string& previous = "", int64_t examples = 10) {
    v1::RegisterRequest r;
    r.set_enrollment_token(kToken);
    r.set_previous_client_id(previous);
    r.mutable_profile()->set_num_examples(examples);
    r.mutable_profile()->set_memory_budget_bytes(1 << 20);
    r.mutable_profile()->set_platform("linux-aarch64");
    return r;
  }

  base::ManualClock clock_;
  std::vector<std::unique_ptr<EnrollmentTokens>> enrollment_;  // one per registry made
};

TEST_F(RegistryTest, EnrollmentNeedsTheTokenAndAProfileInBounds) {
  ClientRegistry registry(Options(), nullptr);
  v1::RegisterRequest wrong = Request();
  wrong.set_enrollment_token("guess");
  EXPECT_THAT(registry.Register(wrong).status(), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(registry.Register(Request("", -1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of bounds")));
  EXPECT_THAT(registry.Register(Request("", 1001)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::RegisterRequest long_platform = Request();
  long_platform.mutable_profile()->set_platform(std::string(129, 'x'));
  EXPECT_THAT(registry.Register(long_platform).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(registry.size(), 0u);

  absl::StatusOr<v1::RegisterResponse> r = registry.Register(Request());
  ASSERT_THAT(r.status(), IsOk());
  EXPECT_THAT(r->client_id(), StartsWith("c-"));
  EXPECT_EQ(r->client_id().size(), 18u);
  EXPECT_EQ(r->session_token().size(), 64u);
  EXPECT_EQ(r->liveness_timeout_ms(), 10000);
  EXPECT_EQ(registry.ProfileOf(r->client_id()).platform(), "linux-aarch64");
}

TEST_F(RegistryTest, SessionsAuthenticateAndAReRegistrationReplacesTheSession) {
  ClientRegistry registry(Options(), nullptr);
  const v1::RegisterResponse first = *registry.Register(Request());
  EXPECT_THAT(registry.Authenticate(first.client_id(), first.session_token()), IsOk());
  EXPECT_THAT(registry.Authenticate(first.client_id(), "not-the-token"),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(registry.Authenticate("c-unknown", first.session_token()),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // The same device again, naming its id with its key: the same id, a new session; the old
  // one is gone.
  ASSERT_EQ(first.device_key().size(), 64u);
  v1::RegisterRequest same = Request(first.client_id());
  same.set_device_key(first.device_key());
  const v1::RegisterResponse again = *registry.Register(same);
  EXPECT_EQ(again.client_id(), first.client_id());
  EXPECT_TRUE(again.device_key().empty());  // it keeps the key it has
  EXPECT_NE(again.session_token(), first.session_token());
  EXPECT_THAT(registry.Authenticate(first.client_id(), first.session_token()),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(registry.Authenticate(again.client_id(), again.session_token()), IsOk());
  // An id nobody has is not handed out on request (only to trusted in-process callers).
  const v1::RegisterResponse named = *registry.Register(Request("v00000042"));
  EXPECT_NE(named.client_id(), "v00000042");
  EXPECT_EQ(registry.size(), 2u);
}

// Another device with the enrollment token names a victim's id: without the victim's key
// (none, a wrong one, another device's) it gets a new id and key, and the victim's session
// and id are untouched. With a store, the same.
TEST_F(RegistryTest, NamingAnotherDevicesIdWithoutItsKeyGivesANewId) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("registry_takeover_" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto store = Store::Open(dir);
  ASSERT_THAT(store.status(), IsOk());
  for (Store* s : {static_cast<Store*>(nullptr), store->get()}) {
    ClientRegistry registry(Options(), s);
    const v1::RegisterResponse victim = *registry.Register(Request());
    const v1::RegisterResponse other = *registry.Register(Request());
    for (const std::string& key : {std::string(), std::string("guess"), other.device_key()}) {
      v1::RegisterRequest takeover = Request(victim.client_id());
      takeover.set_device_key(key);
      const absl::StatusOr<v1::RegisterResponse> r = registry.Register(takeover);
      ASSERT_THAT(r.status(), IsOk());
      EXPECT_NE(r->client_id(), victim.client_id());
      EXPECT_EQ(r->device_key().size(), 64u);
      EXPECT_NE(r->device_key(), victim.device_key());
      EXPECT_THAT(registry.Authenticate(victim.client_id(), victim.session_token()), IsOk());
    }
    EXPECT_EQ(registry.size(), 5u);
  }
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_F(RegistryTest, TrustedCallersNameTheirDevices) {
  RegistryOptions o = Options();
  o.accept_requested_client_ids = true;
  ClientRegistry registry(o, nullptr);
  EXPECT_EQ(registry.Register(Request("v00000042"))->client_id(), "v00000042");
  // Characters outside [A-Za-z0-9_.-] get a random id instead.
  EXPECT_THAT(registry.Register(Request("bad id\n"))->client_id(), StartsWith("c-"));
}

TEST_F(RegistryTest, LivenessLeavingAndDeclinesDecideWhoMayBeSampled) {
  ClientRegistry registry(Options(), nullptr);
  const v1::RegisterResponse a = *registry.Register(Request());
  clock_.Advance(absl::Seconds(6));
  const v1::RegisterResponse b = *registry.Register(Request());
  const v1::RegisterResponse c = *registry.Register(Request());
  std::vector<std::string> ids = {a.client_id(), b.client_id(), c.client_id()};
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(registry.LiveIds(clock_.Now()), ids);  // sorted
  // a is silent past the timeout; a call makes it live again.
  clock_.Advance(absl::Seconds(5));
  EXPECT_FALSE(registry.Live(a.client_id(), clock_.Now()));
  EXPECT_TRUE(registry.Live(b.client_id(), clock_.Now()));
  ASSERT_THAT(registry.Authenticate(a.client_id(), a.session_token()), IsOk());
  EXPECT_TRUE(registry.Live(a.client_id(), clock_.Now()));
  // b leaves: no longer live, and its session is over.
  ASSERT_THAT(registry.Leave(b.client_id(), b.session_token()), IsOk());
  EXPECT_FALSE(registry.Live(b.client_id(), clock_.Now()));
  EXPECT_THAT(registry.Authenticate(b.client_id(), b.session_token()),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // c declines a task: not sampled until it registers again or a new job starts; the
  // reason stays on its record.
  registry.MarkDeclined(c.client_id(), "over budget");
  EXPECT_THAT(registry.LiveIds(clock_.Now()), ElementsAre(a.client_id()));
  registry.ClearJobDeclines();
  EXPECT_EQ(registry.LiveIds(clock_.Now()).size(), 2u);
  registry.MarkDeclined(c.client_id(), "over budget");
  std::vector<v1::ClientRecord> records = registry.Records();
  ASSERT_EQ(records.size(), 3u);
  EXPECT_TRUE(std::is_sorted(records.begin(), records.end(), [](const auto& x, const auto& y) {
    return x.client_id() < y.client_id();
  }));
  for (const v1::ClientRecord& r : records) {
    if (r.client_id() == c.client_id()) {
      EXPECT_EQ(r.declined_reason(), "over budget");
    }
    if (r.client_id() == b.client_id()) {
      EXPECT_EQ(r.state(), v1::CLIENT_STATE_LEFT);
    }
  }
  v1::RegisterRequest c_again = Request(c.client_id());
  c_again.set_device_key(c.device_key());
  ASSERT_EQ(registry.Register(c_again)->client_id(), c.client_id());
  EXPECT_EQ(registry.LiveIds(clock_.Now()).size(), 2u);  // a and c (b left)
}

TEST_F(RegistryTest, RecordsCarryTierAndParticipation) {
  ClientRegistry registry(Options(), nullptr);
  const v1::RegisterResponse a = *registry.Register(Request());
  registry.SetTier(a.client_id(), "half");
  registry.CountParticipation({a.client_id(), "c-nobody"});
  registry.CountParticipation({a.client_id()});
  const v1::ClientRecord r = registry.Records().at(0);
  EXPECT_EQ(r.tier(), "half");
  EXPECT_EQ(r.rounds_participated(), 2);
  EXPECT_EQ(r.profile().num_examples(), 10);
  EXPECT_EQ(r.enrolled_unix_ms(), absl::ToUnixMillis(clock_.Now()));
}

TEST_F(RegistryTest, ARestartedRegistryKnowsTheStoresDevicesAndTheirSessions) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("registry_test_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(dir);
  v1::RegisterResponse a;
  {
    auto store = Store::Open(dir);
    ASSERT_THAT(store.status(), IsOk());
    ClientRegistry registry(Options(), store->get());
    a = *registry.Register(Request());
    registry.SetTier(a.client_id(), "quarter");
  }
  auto store = Store::Open(dir);
  ASSERT_THAT(store.status(), IsOk());
  ClientRegistry registry(Options(), store->get());
  EXPECT_EQ(registry.size(), 0u);
  ASSERT_THAT(registry.Restore(), IsOk());
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_TRUE(registry.Live(a.client_id(), clock_.Now()));
  EXPECT_THAT(registry.Authenticate(a.client_id(), a.session_token()), IsOk());
  EXPECT_THAT(registry.Authenticate(a.client_id(), "stale"),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(registry.ProfileOf(a.client_id()).platform(), "linux-aarch64");
  std::filesystem::remove_all(dir);
}

v1::CreateEnrollmentTokenRequest NamedToken(const std::string& name, int64_t uses,
                                            int64_t expires_in_seconds = 0) {
  v1::CreateEnrollmentTokenRequest r;
  r.set_name(name);
  r.set_max_uses(uses);
  r.set_expires_in_seconds(expires_in_seconds);
  return r;
}

// Named tokens, in memory and in the store: a use per new device (none for a proven
// re-registration), an expiry, a revocation.
class RegistryEnrollmentTest : public RegistryTest, public ::testing::WithParamInterface<bool> {
 protected:
  // A fresh store when the parameter asks for one (null otherwise, or when it fails to open).
  std::unique_ptr<Store> StoreIfParam(const std::string& name) {
    if (!GetParam()) return nullptr;
    const std::string dir = ::testing::TempDir() + "/" + name + std::to_string(getpid());
    std::filesystem::remove_all(dir);
    auto opened = Store::Open(dir);
    EXPECT_THAT(opened, IsOk());
    return opened.ok() ? *std::move(opened) : nullptr;
  }
};

TEST_P(RegistryEnrollmentTest, NamedTokensCountNewDevicesExpireAndAreRevoked) {
  std::unique_ptr<Store> store = StoreIfParam("registry_enrollment_");
  if (GetParam()) ASSERT_NE(store, nullptr);
  ClientRegistry registry(Options(store.get()), store.get());
  EnrollmentTokens& tokens = *enrollment_.back();
  auto once = tokens.Create(NamedToken("batch-1", 1));
  ASSERT_THAT(once, IsOk());
  EXPECT_THAT(once->token(), StartsWith("fedge-enrol-"));
  EXPECT_THAT(tokens.Create(NamedToken("batch-1", 5)).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(tokens.Create(NamedToken("bad name", 5)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));

  v1::RegisterRequest r = Request();
  r.set_enrollment_token(once->token());
  auto first = registry.Register(r);
  ASSERT_THAT(first, IsOk());
  // The same device again, proving its id: no use counted.
  v1::RegisterRequest again = r;
  again.set_previous_client_id(first->client_id());
  again.set_device_key(first->device_key());
  ASSERT_THAT(registry.Register(again), IsOk());
  // A second device: the token is used up.
  EXPECT_THAT(registry.Register(r).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("used up")));

  auto day = tokens.Create(NamedToken("day", 0, 86400));
  ASSERT_THAT(day, IsOk());
  r.set_enrollment_token(day->token());
  ASSERT_THAT(registry.Register(r), IsOk());
  clock_.Advance(absl::Hours(25));
  EXPECT_THAT(registry.Register(r).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("expired")));

  auto open = tokens.Create(NamedToken("open", 0));
  ASSERT_THAT(open, IsOk());
  r.set_enrollment_token(open->token());
  ASSERT_THAT(registry.Register(r), IsOk());
  auto revoked = tokens.Revoke("open");
  ASSERT_THAT(revoked, IsOk());
  EXPECT_TRUE(revoked->revoked());
  EXPECT_THAT(registry.Register(r).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("revoked")));
  // The deployment's token is unaffected.
  EXPECT_THAT(registry.Register(Request()), IsOk());

  auto listed = tokens.List();
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].name(), "batch-1");
  EXPECT_EQ((*listed)[0].uses(), 1);
  EXPECT_EQ((*listed)[1].uses(), 1);
  EXPECT_TRUE((*listed)[2].revoked());
}

TEST_P(RegistryEnrollmentTest, RevokedDeviceLosesItsSessionAndItsId) {
  std::unique_ptr<Store> store = StoreIfParam("registry_revoke_");
  if (GetParam()) ASSERT_NE(store, nullptr);
  ClientRegistry registry(Options(store.get()), store.get());
  auto a = registry.Register(Request());
  auto b = registry.Register(Request());
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(registry.Revoke("nobody").status(), StatusIs(absl::StatusCode::kNotFound));
  auto record = registry.Revoke(a->client_id());
  ASSERT_THAT(record, IsOk());
  EXPECT_EQ(record->state(), v1::CLIENT_STATE_REVOKED);
  EXPECT_THAT(registry.Authenticate(a->client_id(), a->session_token(),
                                    ClientRegistry::Seen::kFetching),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(registry.LiveIds(clock_.Now()), ElementsAre(b->client_id()));
  v1::RegisterRequest back = Request(a->client_id());
  back.set_device_key(a->device_key());
  EXPECT_THAT(registry.Register(back).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("revoked")));
  // Naming the id without its key: a new device, as for anyone.
  auto other = registry.Register(Request(a->client_id()));
  ASSERT_THAT(other, IsOk());
  EXPECT_NE(other->client_id(), a->client_id());
  EXPECT_THAT(registry.Authenticate(b->client_id(), b->session_token()), IsOk());
  if (store != nullptr) {
    // A restarted coordinator keeps it revoked.
    ClientRegistry restarted(Options(store.get()), store.get());
    ASSERT_THAT(restarted.Restore(), IsOk());
    EXPECT_THAT(restarted.Register(back).status(), StatusIs(absl::StatusCode::kPermissionDenied));
  }
}

INSTANTIATE_TEST_SUITE_P(MemoryAndStore, RegistryEnrollmentTest, ::testing::Bool());

}  // namespace
}  // namespace fedge::server
