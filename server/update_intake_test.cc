#include "server/update_intake.h"

#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "aggregation/fed_cg.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/payload.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

std::shared_ptr<const v1::ModelProto> TaskModel() {
  auto net = std::move(model::Sequential::Create(model::MlpSpec({6, 5, 2}))).value();
  net->InitParameters(1);
  return std::make_shared<const v1::ModelProto>(net->ToProto());
}

// A device's update header and payload: Δ = `scale` everywhere, in `encoding`.
struct Sent {
  v1::UpdateHeader header;
  std::string payload;
};
Sent Encode(const v1::ModelProto& task, v1::TensorEncoding encoding, float scale = 0.25f) {
  v1::ModelProto delta = task;
  for (v1::TensorProto& t : *delta.mutable_parameters()) {
    for (int i = 0; i < t.values_size(); ++i) t.set_values(i, scale * ((i % 3) - 1));
  }
  auto p = std::move(model::EncodeModelParameters(delta, encoding, 7)).value();
  Sent s;
  s.header.set_client_id("dev-1");
  s.header.set_num_examples(12);
  *s.header.mutable_manifest() = p.manifest;
  s.header.set_total_bytes(static_cast<int64_t>(p.bytes.size()));
  s.payload = p.bytes;
  return s;
}

ExpectedUpdate Expect(v1::TensorEncoding encoding) {
  ExpectedUpdate e;
  e.model = TaskModel();
  e.encoding = encoding;
  e.what = "the task's model";
  return e;
}

TEST(UpdateIntakeTest, DecodesEveryUpdateEncodingIntoAWeightedUpdate) {
  for (v1::TensorEncoding enc :
       {v1::TENSOR_ENCODING_FLOAT32, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED}) {
    SCOPED_TRACE(v1::TensorEncoding_Name(enc));
    const ExpectedUpdate e = Expect(enc);
    const Sent s = Encode(*e.model, enc);
    EXPECT_EQ(e.payload_bytes(), static_cast<int64_t>(s.payload.size()));
    ASSERT_THAT(CheckUpdateAnnouncement(s.header, e), IsOk());
    absl::StatusOr<aggregation::Update> u = DecodeUpdatePayload(s.header, s.payload, e);
    ASSERT_THAT(u.status(), IsOk());
    EXPECT_EQ(u->client_id, "dev-1");
    EXPECT_EQ(u->weight, 12);
    ASSERT_EQ(u->tensors.size(), 4u);
    EXPECT_EQ(u->tensors[0].name, "fc1.weight");
    EXPECT_EQ(u->tensors[0].shape, (std::vector<int64_t>{5, 6}));
    ASSERT_TRUE(u->max_abs.has_value());
    EXPECT_NEAR(*u->max_abs, 0.25, 0.01);
    EXPECT_NEAR(u->tensors[0].values[0], -0.25f, 0.01f);
    EXPECT_NEAR(u->tensors[0].values[1], 0.0f, 0.01f);
  }
}

TEST(UpdateIntakeTest, RefusesAnnouncementsThatCannotBeTheTasksUpdate) {
  const ExpectedUpdate e = Expect(v1::TENSOR_ENCODING_FLOAT32);
  Sent s = Encode(*e.model, v1::TENSOR_ENCODING_FLOAT32);
  s.header.set_total_bytes(s.header.total_bytes() * 4);
  EXPECT_THAT(CheckUpdateAnnouncement(s.header, e),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the task's model takes 188 as TENSOR_ENCODING_FLOAT32")));
  // A sub-model task names its tier in the error.
  ExpectedUpdate tier = e;
  tier.what = "the task's sub-model (tier 'half', width 0.5)";
  EXPECT_THAT(CheckUpdateAnnouncement(s.header, tier),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tier 'half'")));
}

TEST(UpdateIntakeTest, TheStrategyRefusesTensorNamesBeforeThePayload) {
  auto fed_cg = aggregation::FedCg::Create({});
  ASSERT_THAT(fed_cg.status(), IsOk());
  ExpectedUpdate e = Expect(v1::TENSOR_ENCODING_FLOAT32);
  e.strategy = fed_cg->get();
  Sent s = Encode(*e.model, v1::TENSOR_ENCODING_FLOAT32);
  s.header.mutable_manifest()->mutable_tensors(0)->set_name("E.conv1.weight");
  EXPECT_THAT(CheckUpdateAnnouncement(s.header, e),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'E.conv1.weight', a parameter of its private extractor")));
}

TEST(UpdateIntakeTest, PayloadsThatDoNotFitTheTaskAreRefusedNamingWhy) {
  const ExpectedUpdate e = Expect(v1::TENSOR_ENCODING_FLOAT32);
  const Sent good = Encode(*e.model, v1::TENSOR_ENCODING_FLOAT32);
  // Shorter than announced.
  EXPECT_THAT(DecodeUpdatePayload(good.header, good.payload.substr(4), e).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not fit")));
  // A non-finite value.
  Sent nan = good;
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(nan.payload.data() + 8, &inf, sizeof inf);
  EXPECT_THAT(DecodeUpdatePayload(nan.header, nan.payload, e).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Tensors in another order than the task's.
  Sent swapped = good;
  swapped.header.mutable_manifest()->mutable_tensors()->SwapElements(0, 1);
  EXPECT_FALSE(DecodeUpdatePayload(swapped.header, swapped.payload, e).ok());
  // An encoding other than the job's.
  const Sent int8 = Encode(*e.model, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  EXPECT_FALSE(DecodeUpdatePayload(int8.header, int8.payload, e).ok());
}

}  // namespace
}  // namespace fedge::server
