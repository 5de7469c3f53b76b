// fedge/client.h is what a device app includes: it must stand alone, without gRPC,
// protobuf or Abseil headers.
#include "fedge/client.h"

#if defined(GRPCPP_GRPCPP_H) || defined(GRPCPP_CHANNEL_H) || defined(GOOGLE_PROTOBUF_MESSAGE_H__) || \
    defined(ABSL_BASE_CONFIG_H_)
#error "fedge/client.h must not pull in gRPC, protobuf or Abseil headers"
#endif

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge {
namespace {

using ::testing::HasSubstr;

ClientConfig BaseConfig() {
  ClientConfig c;
  c.coordinator = "127.0.0.1:1";
  c.enrollment_token = "t";
  c.insecure = true;
  return c;
}

TEST(PublicClientTest, CreateWithADataSource) {
  ClientConfig c = BaseConfig();
  int calls = 0;
  c.data_source = [&calls](LocalData* d, std::string*) {
    ++calls;
    d->shape = {2};
    d->num_classes = 2;
    d->features = {0.f, 1.f, 1.f, 0.f};
    d->labels = {0, 1};
    return true;
  };
  std::string error;
  std::unique_ptr<Client> client = Client::Create(c, &error);
  ASSERT_NE(client, nullptr) << error;
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(client->client_id(), "");
}

TEST(PublicClientTest, BadConfigsGiveAnError) {
  std::string error;
  ClientConfig c = BaseConfig();
  c.data_source = [](LocalData*, std::string* e) {
    *e = "camera roll locked";
    return false;
  };
  EXPECT_EQ(Client::Create(c, &error), nullptr);
  EXPECT_THAT(error, HasSubstr("camera roll locked"));

  c = BaseConfig();  // no data at all
  EXPECT_EQ(Client::Create(c, &error), nullptr);
  EXPECT_THAT(error, HasSubstr("no local data"));

  c = BaseConfig();
  c.shard_path = "/nonexistent/client.shard";
  EXPECT_EQ(Client::Create(c, &error), nullptr);
  EXPECT_THAT(error, HasSubstr("/nonexistent/client.shard"));

  c = BaseConfig();
  c.data_source = [](LocalData* d, std::string*) {
    d->shape = {2};
    d->num_classes = 2;
    d->features = {0.f, 1.f};
    d->labels = {0, 5};  // label out of range, features too short
    return true;
  };
  EXPECT_EQ(Client::Create(c, &error), nullptr);
  EXPECT_THAT(error, HasSubstr("Dataset"));
}

}  // namespace
}  // namespace fedge
