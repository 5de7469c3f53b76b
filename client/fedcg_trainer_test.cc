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

// The paper's convolutional G and D: the upload still holds only C.* and G.* (G's batch
// norm running statistics among them, moved by the GAN step), and D's stay on the device.
TEST(FedCgTrainerTest, ConvolutionalGanUploadsOnlyClassifierAndGenerator) {
  model::FedCgShape shape;
  shape.gan = model::FedCgGanArchitecture::kConvBatchNorm;
  auto client = std::move(FedCgClient::Create(shape, SmallOptions(), 1)).value();
  const v1::ModelProto global = InitialGlobal(shape);
  auto update = client->TrainRound(global, MakeImages(48, 2), /*round=*/3);
  ASSERT_TRUE(update.ok()) << update.status();
  ASSERT_EQ(update->delta.parameters_size(), global.parameters_size());
  bool running_moved = false;
  for (const v1::TensorProto& t : update->delta.parameters()) {
    EXPECT_TRUE(t.name().rfind("C.", 0) == 0 || t.name().rfind("G.", 0) == 0) << t.name();
    if (t.name() == "G.bn2.running_var") {
      for (float v : t.values()) running_moved |= v != 0.0f;
    }
  }
  EXPECT_TRUE(running_moved);
  bool d_has_bn = false;
  for (model::Parameter* p : client->discriminator().parameters()) {
    d_has_bn |= p->name == "D.bn3.running_mean";
  }
  EXPECT_TRUE(d_has_bn);
  EXPECT_GT(update->distance_loss, 0.0);
  EXPECT_TRUE(std::isfinite(update->d_loss));
  EXPECT_TRUE(std::isfinite(update->g_loss));
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

// ---- what a FedCG task means on a device ----

TEST(FedCgDeviceTest, InputsAreResizedToTheShapeAndMappedToSymmetricRange) {
  data::Dataset raw;
  raw.num_examples = 2;
  raw.shape = {1, 28, 28};
  raw.num_classes = 10;
  raw.labels = {3, 4};
  raw.features.assign(2 * 784, 1.0f);
  model::FedCgShape shape;
  auto in = FedCgInputs(raw, shape);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->shape, (std::vector<int>{32, 32, 1}));
  EXPECT_EQ(in->labels, raw.labels);
  for (float x : in->features) ASSERT_FLOAT_EQ(x, 1.0f);  // 1 in [0, 1] is 1 in [−1, 1]
  raw.shape = {784};  // flat square images are accepted
  EXPECT_TRUE(FedCgInputs(raw, shape).ok());
  raw.shape = {4, 14, 14};  // not one channel
  EXPECT_EQ(FedCgInputs(raw, shape).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FedCgDeviceTest, HoldOutIsSeededDisjointAndLeavesTrainingExamples) {
  data::Dataset d = MakeImages(40, 3);
  for (int i = 0; i < 40; ++i) d.features[static_cast<size_t>(i) * 1024] = static_cast<float>(i);
  const FedCgDeviceData a = FedCgHoldOut(d, 0.25, 7), b = FedCgHoldOut(d, 0.25, 7);
  ASSERT_EQ(a.eval.num_examples, 10);
  ASSERT_EQ(a.train.num_examples, 30);
  EXPECT_EQ(a.eval.features, b.eval.features);
  std::vector<int> seen(40, 0);
  for (const data::Dataset* part : {&a.train, &a.eval}) {
    for (int i = 0; i < part->num_examples; ++i) ++seen[static_cast<int>(part->example(i)[0])];
  }
  for (int i = 0; i < 40; ++i) EXPECT_EQ(seen[i], 1) << i;
  EXPECT_NE(FedCgHoldOut(d, 0.25, 8).eval.features, a.eval.features);
  EXPECT_EQ(FedCgHoldOut(d, 0, 7).eval.num_examples, 0);
  EXPECT_EQ(FedCgHoldOut(MakeImages(1, 3), 0.5, 7).train.num_examples, 1);
}

TEST(FedCgDeviceTest, DeviceRoundEvaluatesFirstAndCanBeCancelled) {
  model::FedCgShape shape;
  auto client = std::move(FedCgClient::Create(shape, SmallOptions(), 1)).value();
  const v1::ModelProto global = InitialGlobal(shape);
  FedCgDeviceData data = FedCgHoldOut(MakeImages(40, 5), 0.25, 1);
  const double before = client->Evaluate(global, data.eval).value();
  auto u = FedCgDeviceRound(*client, global, data, 0);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->eval_examples, 10);
  EXPECT_DOUBLE_EQ(u->eval_accuracy, before);  // measured before training
  EXPECT_EQ(u->num_examples, 30);
  EXPECT_GT(u->delta_norm, 0);
  auto cancelled = FedCgDeviceRound(*client, global, data, 1, [] { return true; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
}

// The device's memory estimate for a FedCG task, counted by hand for the dense networks:
// E 2,572, C 59,134, G 131,316 and D 105,573 floats (spectral norm's u, v aside), each with
// its gradient and two Adam moments, and C and G four more times (global, received, Δ,
// upload); the rest is one batch's activations and the convolutions' scratch.
TEST(FedCgDeviceTest, MemoryEstimateCountsEveryNetworkAndTheSharedCopies) {
  const model::FedCgShape dense;
  const int64_t e = 6 * 25 + 6 + 16 * 150 + 16;
  const int64_t c = 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10;
  const int64_t g = 10 * 10 + 110 * 256 + 256 + 256 * 400 + 400;
  const int64_t d = 10 * 10 + 410 * 256 + 256 + 256 + 1;
  const int64_t param_bytes = 4 * (4 * (e + c + g + d) + 4 * (c + g));
  const absl::StatusOr<int64_t> at8 = EstimateFedCgRoundMemoryBytes(dense, 8);
  ASSERT_TRUE(at8.ok()) << at8.status();
  EXPECT_GT(*at8, param_bytes);
  EXPECT_LT(*at8, param_bytes + 3'000'000);  // E's two convolutions: 1.6 MB of scratch
  const absl::StatusOr<int64_t> at64 = EstimateFedCgRoundMemoryBytes(dense, 64);
  ASSERT_TRUE(at64.ok());
  EXPECT_GT(*at64, *at8);  // activations grow with the batch
  // The paper's convolutional G and D: about 0.89 M and 0.67 M floats instead of 0.13 M and
  // 0.11 M, so about 1.3 M more floats at 16 to 32 bytes each (49.9 MB in all at batch 8).
  model::FedCgShape conv;
  conv.gan = model::FedCgGanArchitecture::kConvBatchNorm;
  const absl::StatusOr<int64_t> conv8 = EstimateFedCgRoundMemoryBytes(conv, 8);
  ASSERT_TRUE(conv8.ok());
  EXPECT_GT(*conv8, *at8 + 16 * 1'300'000);
  EXPECT_LT(*conv8, *at8 + 32 * 1'400'000 + 5'000'000);  // + D's convolution scratch
  // What the networks refuse, the estimate refuses.
  EXPECT_EQ(EstimateFedCgRoundMemoryBytes(dense, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  conv.image_size = 28;
  EXPECT_EQ(EstimateFedCgRoundMemoryBytes(conv, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// What a device takes from a FedCG task header is checked before it builds anything.
TEST(FedCgDeviceTest, TaskSharedModelRefusesWhatTheDeviceCannotTrust) {
  v1::TaskHeader task;
  task.mutable_fed_cg();
  auto shared = FedCgTaskSharedModel(task);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(shared->parameters_size(),
            FedCgSharedModel(model::FedCgShape{}).value().parameters_size());
  auto refused = [](const v1::TaskHeader& t, const std::string& what) {
    const absl::Status s = FedCgTaskSharedModel(t).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
  };
  v1::TaskHeader big = task;
  big.mutable_fed_cg()->set_image_size(100000);  // would allocate gigabytes
  refused(big, "out of bounds");
  v1::TaskHeader wide = task;
  wide.mutable_fed_cg()->set_embed_dim(1 << 20);
  refused(wide, "out of bounds");
  v1::TaskHeader newer = task;
  newer.mutable_fed_cg()->set_gan_architecture(static_cast<v1::FedCgGanArchitecture>(7));
  refused(newer, "unknown gan_architecture 7");
  v1::TaskHeader teacher = task;
  teacher.mutable_teacher_spec()->add_input_shape(4);
  refused(teacher, "teacher");
  v1::TaskHeader conv28 = task;
  conv28.mutable_fed_cg()->set_gan_architecture(v1::FEDCG_GAN_CONV_BATCHNORM);
  conv28.mutable_fed_cg()->set_image_size(28);
  refused(conv28, "5 x 5");
}

TEST(FedCgDeviceTest, OptionsComeFromTheTask) {
  v1::TaskHeader t;
  t.mutable_training()->set_epochs(3);
  t.mutable_training()->set_batch_size(16);
  t.mutable_training()->set_learning_rate(0.001);
  t.mutable_training()->set_weight_decay(0.01);
  t.mutable_fed_cg()->set_gan_epochs(2);
  t.mutable_fed_cg()->set_gan_learning_rate(0.0005);
  t.mutable_fed_cg()->set_gamma_ramp_rounds(7);
  const FedCgClientOptions o = FedCgOptionsFromTask(t);
  EXPECT_EQ(o.local_epochs, 3);
  EXPECT_EQ(o.batch_size, 16);
  EXPECT_FLOAT_EQ(o.learning_rate, 0.001f);
  EXPECT_FLOAT_EQ(o.weight_decay, 0.01f);
  EXPECT_EQ(o.gan_epochs, 2);
  EXPECT_FLOAT_EQ(o.gan_learning_rate, 0.0005f);
  EXPECT_EQ(o.gamma_ramp_rounds, 7);
  t.mutable_fed_cg()->set_image_size(16);
  EXPECT_EQ(model::FedCgShapeFromParams(t.fed_cg()).image_size, 16);
  auto shared = FedCgSharedModel(model::FedCgShapeFromParams(t.fed_cg()));
  ASSERT_TRUE(shared.ok());
  for (const v1::TensorProto& p : shared->parameters()) {
    EXPECT_TRUE(p.name().rfind("C.", 0) == 0 || p.name().rfind("G.", 0) == 0) << p.name();
  }
}

}  // namespace
}  // namespace fedge::client
