#include "sim/training_share.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::sim {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;

TEST(TrainingShareTest, ResultsRoundTripAndMalformedOnesAreInternal) {
  client::LocalUpdate u;
  u.num_examples = 12;
  u.train_loss = 0.25;
  u.steps = 3;
  u.delta_norm = 1.5;
  u.delta.add_parameters()->set_name("w");
  auto back = DecodeResult(EncodeResult(u), 2);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(back->num_examples, 12);
  EXPECT_EQ(back->delta_norm, 1.5);
  EXPECT_EQ(back->delta.parameters(0).name(), "w");
  auto error = DecodeResult(EncodeResult(absl::CancelledError("stopped")), 2);
  EXPECT_THAT(error.status(), StatusIs(absl::StatusCode::kCancelled));
  std::string cut = EncodeResult(u);
  cut.resize(cut.size() / 2);
  EXPECT_THAT(DecodeResult(cut, 2).status(), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(DecodeResult("", 2).status(), StatusIs(absl::StatusCode::kInternal));
}

TEST(TrainingShareTest, SharesRoundTripAndRefuseClientsOutsideThePopulation) {
  v1::ModelProto model;
  model.add_parameters()->set_name("w");
  v1::TaskHeader header;
  header.set_round(4);
  TrainingJob job;
  job.client = 7;
  job.header = &header;
  job.model = &model;
  job.seed = 99;
  const std::string bytes = EncodeShare({job, job});
  MessageReader r(bytes);
  ASSERT_EQ(r.Kind(), kShareMessage);
  Share share;
  ASSERT_THAT(DecodeShare(r, /*population=*/10, share), IsOk());
  ASSERT_EQ(share.jobs.size(), 2u);
  EXPECT_EQ(share.models.size(), 1u);  // the model once
  EXPECT_EQ(share.jobs[1].client, 7);
  EXPECT_EQ(share.jobs[1].seed, 99u);
  EXPECT_EQ(share.jobs[1].header->round(), 4);
  MessageReader small(bytes);
  small.Kind();
  Share none;
  EXPECT_THAT(DecodeShare(small, /*population=*/5, none), StatusIs(absl::StatusCode::kInternal));
}

}  // namespace
}  // namespace fedge::sim
