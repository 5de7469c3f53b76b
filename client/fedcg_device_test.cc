#include "client/fedcg_device.h"

#include <filesystem>
#include <string>
#include <vector>

#include "client/device_round.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/fedcg_nets.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;

v1::TaskHeader FedCgTask(const std::string& job, int round) {
  v1::TaskHeader t;
  t.set_job_id(job);
  t.set_round(round);
  t.mutable_training()->set_epochs(1);
  t.mutable_training()->set_batch_size(8);
  t.mutable_training()->set_shuffle_seed(5);
  t.mutable_training()->set_weight_decay(1e-3);  // E moves in every round
  t.mutable_fed_cg()->set_gan_epochs(1);
  t.mutable_fed_cg()->set_eval_holdout_fraction(0.25);
  return t;
}

v1::ModelProto Global(const v1::TaskHeader& t) {
  return FedCgSharedModel(model::FedCgShapeFromParams(t.fed_cg())).value();
}

std::vector<float> Extractor(FedCgClient& c) {
  std::vector<float> v;
  for (const model::Parameter* p : c.extractor().parameters()) {
    v.insert(v.end(), p->value.begin(), p->value.end());
  }
  return v;
}

TEST(FedCgDeviceTest, HoldsOutItsOwnSplitUnlessGivenEvaluationData) {
  const data::Dataset raw = testing::BandImages(40, 3, 1);
  const data::Dataset test = testing::BandImages(12, 3, 2);
  const v1::TaskHeader t = FedCgTask("job-a", 1);
  auto held = FedCgDevice::PrepareData(t, "dev-1", raw, nullptr);
  ASSERT_THAT(held.status(), IsOk());
  EXPECT_EQ(held->eval.num_examples, 10);
  EXPECT_EQ(held->train.num_examples, 30);
  // The split is the device's: another id holds out other examples.
  auto other = FedCgDevice::PrepareData(t, "dev-2", raw, nullptr);
  ASSERT_THAT(other.status(), IsOk());
  EXPECT_NE(held->eval.features, other->eval.features);
  auto given = FedCgDevice::PrepareData(t, "dev-1", raw, &test);
  ASSERT_THAT(given.status(), IsOk());
  EXPECT_EQ(given->train.num_examples, 40);
  EXPECT_EQ(given->eval.num_examples, 12);
}

TEST(FedCgDeviceTest, KeepsItsExtractorWithinAJobAndStartsAfreshForAnother) {
  FedCgDevice device({});
  const data::Dataset raw = testing::BandImages(24, 3, 1);
  const v1::TaskHeader r1 = FedCgTask("job-a", 1);
  auto d = FedCgDevice::PrepareData(r1, "dev-1", raw, nullptr);
  ASSERT_THAT(d.status(), IsOk());
  auto u1 = device.RunTask(r1, Global(r1), "dev-1", *d);
  ASSERT_THAT(u1.status(), IsOk());
  FedCgClient* first = device.client();
  ASSERT_NE(first, nullptr);
  const std::vector<float> trained = Extractor(*first);
  // Only the shared C.* and G.* leave the device.
  for (const v1::TensorProto& p : u1->delta.parameters()) {
    EXPECT_TRUE(p.name().rfind("C.", 0) == 0 || p.name().rfind("G.", 0) == 0) << p.name();
  }
  ASSERT_THAT(device.RunTask(FedCgTask("job-a", 2), Global(r1), "dev-1", *d).status(), IsOk());
  EXPECT_EQ(device.client(), first);
  EXPECT_NE(Extractor(*device.client()), trained);  // trained on
  FedCgDevice fresh({});
  ASSERT_THAT(fresh.RunTask(FedCgTask("job-b", 1), Global(r1), "dev-1", *d).status(), IsOk());
  ASSERT_THAT(device.RunTask(FedCgTask("job-b", 1), Global(r1), "dev-1", *d).status(), IsOk());
  // A new job: a new extractor, the one any device starts that job with.
  EXPECT_EQ(Extractor(*device.client()), Extractor(*fresh.client()));
}

TEST(FedCgDeviceTest, RestartedDeviceRestoresItsExtractorForTheSameJobOnly) {
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / "fedcg_device_test.state.fedcg").string();
  std::filesystem::remove(path);
  const data::Dataset raw = testing::BandImages(24, 3, 1);
  const v1::TaskHeader r1 = FedCgTask("job-a", 1);
  auto d = FedCgDevice::PrepareData(r1, "dev-1", raw, nullptr);
  ASSERT_THAT(d.status(), IsOk());
  std::vector<float> saved;
  {
    FedCgDevice device({path});
    ASSERT_THAT(device.RunTask(r1, Global(r1), "dev-1", *d).status(), IsOk());
    ASSERT_THAT(device.RunTask(FedCgTask("job-a", 2), Global(r1), "dev-1", *d).status(), IsOk());
    saved = Extractor(*device.client());
    EXPECT_EQ(device.states_restored(), 0);
  }
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  FedCgDevice restarted({path});
  // Restored at the job's next task, before it trains: a cancelled task shows the E it had.
  auto cancelled = restarted.RunTask(FedCgTask("job-a", 3), Global(r1), "dev-1", *d,
                                     [] { return true; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(restarted.states_restored(), 1);
  EXPECT_EQ(Extractor(*restarted.client()), saved);
  FedCgDevice other_job({path});
  EXPECT_EQ(other_job.RunTask(FedCgTask("job-b", 1), Global(r1), "dev-1", *d,
                              [] { return true; }).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(other_job.states_restored(), 0);
  EXPECT_NE(Extractor(*other_job.client()), saved);
  std::filesystem::remove(path);
}


}  // namespace
}  // namespace fedge::client
