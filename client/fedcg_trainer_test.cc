#include "client/fedcg_trainer.h"

#include <cmath>
#include <string>

#include "base/rng.h"
#include "gtest/gtest.h"

namespace fedge::client {
namespace {

// 32×32 grey images: class c lights a 8×8 square at one of 4 positions plus noise
// (4 classes of the model's 10).
data::Dataset MakeImages(int n, uint64_t seed) {
  base::Rng rng(seed);
  data::Dataset d;
  d.num_examples = n;
  d.shape = {1, 32, 32};
  d.num_classes = 10;
  d.features.resize(static_cast<size_t>(n) * 1024);
  d.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    const int c = i % 4;
    d.labels[i] = c;
    float* img = d.features.data() + static_cast<size_t>(i) * 1024;
    for (int p = 0; p < 1024; ++p) img[p] = static_cast<float>(rng.Normal() * 0.3) - 1.0f;
    const int r0 = (c / 2) * 16 + 4, c0 = (c % 2) * 16 + 4;
    for (int r = r0; r < r0 + 8; ++r) {
      for (int q = c0; q < c0 + 8; ++q) img[r * 32 + q] += 2.0f;
    }
  }
  return d;
}

v1::ModelProto InitialGlobal(const model::FedCgShape& shape) {
  auto c = std::move(model::CreateFedCgClassifier(shape)).value();
  auto g = std::move(model::CreateFedCgGenerator(shape)).value();
  c->InitParameters(11);
  g->InitParameters(12);
  return SharedParametersProto(*c, *g);
}

FedCgClientOptions SmallOptions() {
  FedCgClientOptions o;
  o.local_epochs = 3;
  o.gan_epochs = 1;
  o.batch_size = 8;
  o.learning_rate = 3e-3f;
  return o;
}

TEST(FedCgTrainerTest, UploadHoldsOnlyClassifierAndGeneratorTensors) {
  model::FedCgShape shape;
  auto client = std::move(FedCgClient::Create(shape, SmallOptions(), 1)).value();
  const v1::ModelProto global = InitialGlobal(shape);
  const std::vector<float> e_before = client->extractor().parameters()[0]->value;
  const std::vector<float> d_before = client->discriminator().parameters()[1]->value;
  auto update = client->TrainRound(global, MakeImages(64, 2), /*round=*/3);
  ASSERT_TRUE(update.ok()) << update.status();
  // Exactly the tensors of `global`, in order, all C.* or G.*; nothing of E or D.
  ASSERT_EQ(update->delta.parameters_size(), global.parameters_size());
  bool generator_moved = false, classifier_moved = false;
  for (int i = 0; i < update->delta.parameters_size(); ++i) {
    const v1::TensorProto& t = update->delta.parameters(i);
    EXPECT_EQ(t.name(), global.parameters(i).name());
    EXPECT_TRUE(t.name().rfind("C.", 0) == 0 || t.name().rfind("G.", 0) == 0) << t.name();
    ASSERT_EQ(t.values_size(), global.parameters(i).values_size());
    for (float v : t.values()) {
      if (v != 0.0f) (t.name()[0] == 'G' ? generator_moved : classifier_moved) = true;
    }
  }
  EXPECT_TRUE(generator_moved);
  EXPECT_TRUE(classifier_moved);
  // The private networks did train (and stay on the device).
  EXPECT_NE(client->extractor().parameters()[0]->value, e_before);
  EXPECT_NE(client->discriminator().parameters()[1]->value, d_before);
  EXPECT_EQ(update->num_examples, 64);
  EXPECT_GT(update->gamma, 0.0);
  EXPECT_GT(update->distance_loss, 0.0);
}

TEST(FedCgTrainerTest, LearnsTheLocalTaskWithPrivateExtractorAndUploadedClassifier) {
  model::FedCgShape shape;
  FedCgClientOptions options = SmallOptions();
  options.local_epochs = 15;
  auto client = std::move(FedCgClient::Create(shape, options, 4)).value();
  v1::ModelProto global = InitialGlobal(shape);
  const data::Dataset train = MakeImages(96, 5), test = MakeImages(64, 6);
  const double before = client->Evaluate(global, test).value();
  auto update = client->TrainRound(global, train, 0);
  ASSERT_TRUE(update.ok()) << update.status();
  // Apply the client's own delta: its E with its uploaded C solves the task.
  for (int i = 0; i < global.parameters_size(); ++i) {
    auto* t = global.mutable_parameters(i);
    for (int j = 0; j < t->values_size(); ++j) {
      t->set_values(j, t->values(j) + update->delta.parameters(i).values(j));
    }
  }
  const double after = client->Evaluate(global, test).value();
  EXPECT_GT(update->train_accuracy, 0.9);
  EXPECT_LT(before, 0.5);
  EXPECT_GT(after, 0.9);
  EXPECT_EQ(update->gamma, 0.0);  // round 0: no distance term yet
}

TEST(FedCgTrainerTest, RejectsAGlobalModelWithMissingOrExtraTensors) {
  model::FedCgShape shape;
  auto client = std::move(FedCgClient::Create(shape, SmallOptions(), 1)).value();
  const data::Dataset data = MakeImages(16, 2);
  v1::ModelProto missing = InitialGlobal(shape);
  missing.mutable_parameters()->RemoveLast();
  EXPECT_EQ(client->TrainRound(missing, data, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::ModelProto extra = InitialGlobal(shape);
  auto* e = extra.add_parameters();
  e->set_name("E.conv1.weight");
  EXPECT_EQ(client->TrainRound(extra, data, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::ModelProto nan = InitialGlobal(shape);
  nan.mutable_parameters(0)->set_values(0, std::nanf(""));
  EXPECT_EQ(client->TrainRound(nan, data, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  data::Dataset small = data;
  small.shape = {1, 28, 28};
  small.features.resize(16 * 28 * 28);
  EXPECT_EQ(client->TrainRound(InitialGlobal(shape), small, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FedCgTrainerTest, GammaFollowsThePapersRamp) {
  EXPECT_FLOAT_EQ(FedCgGamma(0, 50), 0.0f);
  EXPECT_NEAR(FedCgGamma(25, 50), 2.0 / (1.0 + std::exp(-5.0)) - 1.0, 1e-6);
  EXPECT_NEAR(FedCgGamma(50, 50), 2.0 / (1.0 + std::exp(-10.0)) - 1.0, 1e-6);
  EXPECT_FLOAT_EQ(FedCgGamma(500, 50), FedCgGamma(50, 50));
  EXPECT_LT(FedCgGamma(5, 50), FedCgGamma(10, 50));
}

}  // namespace
}  // namespace fedge::client
