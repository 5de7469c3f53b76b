#include "server/update_intake.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "aggregation/fed_cg.h"
#include "aggregation/weighted_mean.h"
#include "model/submodel_slicer.h"
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


aggregation::Update Uniform(const std::string& id, double weight, float value, size_t n = 6) {
  aggregation::Update u;
  u.client_id = id;
  u.weight = weight;
  aggregation::Tensor t;
  t.name = "w";
  t.shape = {static_cast<int64_t>(n)};
  t.values.assign(n, value);
  u.tensors.push_back(std::move(t));
  return u;
}

std::unique_ptr<RoundIntake> Intake(int batch, bool keep) {
  aggregation::TensorSpec spec;
  spec.name = "w";
  spec.shape = {6};
  auto mean = std::move(aggregation::WeightedMean::Create({spec})).value();
  RoundIntake::Options o;
  o.batch = batch;
  o.keep_updates = keep;
  return std::make_unique<RoundIntake>(std::move(mean), o);
}

TEST(RoundIntakeTest, BatchesGiveTheMeanOfOneByOneAndKeepTheUpdatesAskedFor) {
  for (int batch : {1, 2, 8}) {
    SCOPED_TRACE(batch);
    auto intake = Intake(batch, /*keep=*/batch == 2);
    ASSERT_THAT(intake->Add(Uniform("a", 1, 1.0f)), IsOk());
    ASSERT_THAT(intake->Add(Uniform("b", 3, 2.0f)), IsOk());
    ASSERT_THAT(intake->Add(Uniform("c", 4, -1.0f)), IsOk());
    EXPECT_TRUE(intake->Flush().empty());
    EXPECT_EQ(intake->kept().size(), batch == 2 ? 3u : 0u);
    absl::StatusOr<aggregation::ModelDelta> d = std::move(*intake).Report();
    ASSERT_THAT(d.status(), IsOk());
    EXPECT_EQ(d->total_weight, 8);
    EXPECT_FLOAT_EQ(d->tensors[0].values[0], (1 * 1.0f + 3 * 2.0f + 4 * -1.0f) / 8);
  }
}

TEST(RoundIntakeTest, RefusesWhatTheAggregatorRefusesAndSumsThatCouldOverflow) {
  auto intake = Intake(8, false);
  EXPECT_THAT(intake->Add(Uniform("short", 1, 1.0f, 5)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(intake->Add(Uniform("nan", 1, std::nanf(""))),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(intake->Add(Uniform("big", 1e8, 1e29f)), IsOk());
  // 1e8·1e29 + 1e8·1e30 > 1e38: the second is refused, the first stays.
  EXPECT_THAT(intake->Add(Uniform("bigger", 1e8, 1e30f)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("could overflow")));
  EXPECT_TRUE(intake->Flush().empty());
  auto d = std::move(*intake).Report();
  ASSERT_THAT(d.status(), IsOk());
  EXPECT_EQ(d->num_updates, 1);
}

// With the update bound: updates wait for the close, the outlier is clipped to 2 × the
// median norm and its weight capped at the job's 10, then 2 × the median weight; the
// metrics say so.
TEST(RoundIntakeTest, TheBoundWeighsAndClipsBeforeTheMean) {
  aggregation::TensorSpec spec{"w", {6}};
  RoundIntake::Options o;
  o.batch = 1;
  UpdateBound::Options b;
  b.max_weight = 10;
  b.weight_multiple = 2;
  b.norm_multiple = 2;
  o.bound = b;
  RoundIntake intake(std::move(aggregation::WeightedMean::Create({spec})).value(), o);
  ASSERT_THAT(intake.Add(Uniform("a", 2, 1.0f)), IsOk());
  ASSERT_THAT(intake.Add(Uniform("b", 2, 1.0f)), IsOk());
  ASSERT_THAT(intake.Add(Uniform("evil", 1e6, -1e30f)), IsOk());
  EXPECT_TRUE(intake.Flush().empty());
  v1::RobustnessRoundMetrics m;
  intake.ReportBound(&m);
  EXPECT_EQ(m.clipped(), 1);
  EXPECT_EQ(m.weight_capped(), 2);  // the job's cap, then the round's
  EXPECT_EQ(m.weight_cap(), 4);
  EXPECT_NEAR(m.norm_bound(), 2 * std::sqrt(6.0), 1e-6);
  auto d = std::move(intake).Report();
  ASSERT_THAT(d.status(), IsOk());
  EXPECT_EQ(d->total_weight, 8);
  // (2·1 + 2·1 + 4·(−2)) / 8: the outlier's values are −2 once its norm is 2·√6.
  EXPECT_NEAR(d->tensors[0].values[0], -0.5, 1e-5);
}

TEST(RoundIntakeTest, SubModelUpdatesExpandToTheFullShapesWithTheirCoverage) {
  auto net = std::move(model::Sequential::Create(model::MlpSpec({6, 8, 2}))).value();
  auto slicer = std::move(model::SubModelSlicer::Create(model::MlpSpec({6, 8, 2}), 0.5,
                                                        model::SubModelExtraction::kLeading, 0))
                    .value();
  aggregation::Update u;
  u.client_id = "small";
  u.weight = 1;
  for (const model::TensorSlice& s : slicer.slices()) {
    aggregation::Tensor t;
    t.name = s.name;
    t.shape = s.sub_shape();
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    t.values.assign(static_cast<size_t>(n), 1.0f);
    u.tensors.push_back(std::move(t));
  }
  absl::StatusOr<aggregation::Update> full = ExpandSubModelUpdate(slicer, "client small", u);
  ASSERT_THAT(full.status(), IsOk());
  EXPECT_EQ(full->tensors[0].shape, (std::vector<int64_t>{8, 6}));
  ASSERT_TRUE(full->tensors[0].held.has_value());
  // Rows 0-3 held (the leading half of the hidden units), the rest zero and not held.
  EXPECT_EQ(full->tensors[0].values[0], 1.0f);
  EXPECT_EQ(full->tensors[0].values[4 * 6], 0.0f);
  aggregation::Update wrong = u;
  wrong.tensors[0].shape = {8, 6};
  EXPECT_THAT(ExpandSubModelUpdate(slicer, "client small", wrong).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client small")));
  wrong.tensors.pop_back();
  EXPECT_THAT(ExpandSubModelUpdate(slicer, "client small", wrong).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensors")));
}

// What an update claims about itself is checked against what the coordinator knows: the
// device's registered example count bounds its weight, and its figures must be finite.
TEST(UpdateIntakeTest, ClaimsAreBoundedByTheRegistrationAndFinite) {
  v1::UpdateHeader h;
  h.set_client_id("dev");
  h.set_num_examples(100);
  aggregation::Update u;
  u.weight = 100;
  EXPECT_THAT(CheckUpdateClaims(h, u, /*registered_examples=*/100, 1 << 30), IsOk());
  EXPECT_THAT(CheckUpdateClaims(h, u, 99, 1 << 30),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("registered 99")));
  EXPECT_THAT(CheckUpdateClaims(h, u, 100, 50), StatusIs(absl::StatusCode::kInvalidArgument));
  u.weight = 101;
  EXPECT_THAT(CheckUpdateClaims(h, u, 1000, 1 << 30),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight")));
  u.weight = 100;
  h.mutable_metrics()->set_train_seconds(-1);
  EXPECT_THAT(CheckUpdateClaims(h, u, 100, 1 << 30),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  h.mutable_metrics()->set_train_seconds(1);
  h.mutable_metrics()->set_train_loss(std::numeric_limits<double>::infinity());
  EXPECT_THAT(CheckUpdateClaims(h, u, 100, 1 << 30),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
}

}  // namespace
}  // namespace fedge::server
