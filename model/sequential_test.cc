#include "model/sequential.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/loss.h"
#include "model/optimizer.h"
#include "model/serialize.h"
#include "model/trainer.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::model {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

std::unique_ptr<Sequential> Build(const v1::ModelSpec& spec, uint64_t seed = 1) {
  auto net = Sequential::Create(spec);
  EXPECT_THAT(net, IsOk());
  (*net)->InitParameters(seed);
  return std::move(net).value();
}

TEST(SequentialTest, BuildsTheZooModels) {
  auto mlp = Build(*ArchitectureByName("mlp"));
  EXPECT_EQ(mlp->input_size(), 784);
  EXPECT_EQ(mlp->output_size(), 10);
  EXPECT_EQ(mlp->num_parameters(), 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10);
  auto cnn = Build(*ArchitectureByName("cnn"));
  EXPECT_EQ(cnn->input_size(), 784);
  EXPECT_EQ(cnn->output_size(), 10);
  // conv1 6·25+6, conv2 16·150+16, fc 256·120+120, 120·84+84, 84·10+10.
  EXPECT_EQ(cnn->num_parameters(), 156 + 2416 + 30840 + 10164 + 850);
  EXPECT_THAT(ArchitectureByName("resnet"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                     HasSubstr("resnet")));
}

// A conv2d whose im2col scratch would be huge is refused when the spec is read: the fuzzing
// run's 4.3M-parameter spec (28×28×1 → 1×1 conv padded by 64 to 256 channels → a 129×129
// conv padded by 64 → dense) wanted ~415 GB for one example.
TEST(SequentialTest, RefusesAConvolutionWhoseScratchWouldBeHuge) {
  v1::ModelSpec spec;
  spec.add_input_shape(28);
  spec.add_input_shape(28);
  spec.add_input_shape(1);
  v1::LayerSpec* a = spec.add_layers();
  a->set_name("wide");
  a->mutable_conv2d()->set_in_channels(1);
  a->mutable_conv2d()->set_out_channels(256);
  a->mutable_conv2d()->set_kernel_size(1);
  a->mutable_conv2d()->set_padding(64);
  v1::LayerSpec* b = spec.add_layers();
  b->set_name("huge");
  b->mutable_conv2d()->set_in_channels(256);
  b->mutable_conv2d()->set_out_channels(1);
  b->mutable_conv2d()->set_kernel_size(129);
  b->mutable_conv2d()->set_padding(64);
  EXPECT_THAT(Sequential::Create(spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("huge"), HasSubstr("scratch"))));
}

TEST(SequentialTest, RejectsBadSpecsWithTheLayerName) {
  v1::ModelSpec spec = MlpSpec({784, 200, 10});
  spec.mutable_layers(2)->mutable_dense()->set_in_features(100);
  EXPECT_THAT(Sequential::Create(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc2")));

  v1::ModelSpec conv_on_vector = MlpSpec({784, 10});
  v1::LayerSpec* c = conv_on_vector.mutable_layers(0);
  c->clear_dense();
  c->mutable_conv2d()->set_in_channels(1);
  c->mutable_conv2d()->set_out_channels(4);
  c->mutable_conv2d()->set_kernel_size(3);
  EXPECT_THAT(Sequential::Create(conv_on_vector),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[H, W, C]")));

  v1::ModelSpec dup = MlpSpec({4, 4, 4});
  dup.mutable_layers(2)->set_name("fc1");
  EXPECT_THAT(Sequential::Create(dup),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));

  v1::ModelSpec huge = MlpSpec({1 << 20, 1 << 20});
  EXPECT_THAT(Sequential::Create(huge),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("parameters")));

  v1::ModelSpec empty;
  empty.add_input_shape(3);
  EXPECT_THAT(Sequential::Create(empty), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no layers")));

  // The new layer kinds: a transposed convolution on a vector, one whose channels do not
  // match, one whose output collapses, one whose scratch would be huge, a bad batch norm.
  auto single = [](int h, const std::string& text_name) {
    v1::ModelSpec s;
    s.add_input_shape(h);
    s.add_input_shape(h);
    s.add_input_shape(3);
    s.add_layers()->set_name(text_name);
    return s;
  };
  v1::ModelSpec convt = single(2, "up");
  auto* ct = convt.mutable_layers(0)->mutable_conv_transpose2d();
  ct->set_in_channels(3);
  ct->set_out_channels(4);
  ct->set_kernel_size(2);
  EXPECT_THAT(Sequential::Create(convt), IsOk());
  ct->set_in_channels(5);
  EXPECT_THAT(Sequential::Create(convt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("in_channels 5")));
  ct->set_in_channels(3);
  ct->set_padding(3);  // (2 − 1)·1 − 6 + 2 < 1
  EXPECT_THAT(Sequential::Create(convt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("output")));
  ct->set_padding(0);
  ct->set_init_std(-1);
  EXPECT_THAT(Sequential::Create(convt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("init_std")));
  v1::ModelSpec big = single(64, "up");
  auto* bt = big.mutable_layers(0)->mutable_conv_transpose2d();
  bt->set_in_channels(3);
  bt->set_out_channels(1000);
  bt->set_kernel_size(64);
  EXPECT_THAT(Sequential::Create(big),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));
  v1::ModelSpec bn = single(2, "norm");
  bn.mutable_layers(0)->mutable_batch_norm2d()->set_momentum(1.5f);
  EXPECT_THAT(Sequential::Create(bn),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("norm")));
  bn.mutable_layers(0)->mutable_batch_norm2d()->set_momentum(0.1f);
  bn.mutable_layers(0)->mutable_batch_norm2d()->set_epsilon(-1e-5f);
  EXPECT_THAT(Sequential::Create(bn),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("epsilon")));

  v1::ModelSpec unset = MlpSpec({4, 4});
  unset.add_layers()->set_name("blank");
  EXPECT_THAT(Sequential::Create(unset),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("blank")));
}

// The whole network's backward pass, including the input gradient, against finite
// differences (a small CNN covers conv, relu, pool, flatten, dense chained).
TEST(SequentialTest, NetworkGradientMatchesFiniteDifferences) {
  auto net = Build(SimpleCnnSpec(16, 16, 2, 3, 4, {6}, 3), 5);
  base::Rng rng(6);
  const int batch = 2;
  std::vector<float> x(batch * net->input_size());
  for (float& v : x) v = static_cast<float>(rng.Normal());
  const std::vector<int32_t> labels = {0, 2};
  std::vector<float> dlogits(batch * 3), dx(x.size());
  net->ZeroGrad();
  const float* logits = net->Forward(x.data(), batch, ComputeMode::kFp32, true);
  SoftmaxCrossEntropy(logits, labels.data(), batch, 3, dlogits.data());
  net->Backward(dlogits.data(), dx.data());
  auto loss_at = [&]() {
    return SoftmaxCrossEntropy(net->Forward(x.data(), batch, ComputeMode::kFp32, false),
                               labels.data(), batch, 3, nullptr);
  };
  const float eps = 5e-3f;
  int checked = 0;
  for (size_t i = 0; i < x.size(); i += 7) {
    const float saved = x[i];
    x[i] = saved + eps;
    const double lp = loss_at();
    x[i] = saved - eps;
    const double lm = loss_at();
    x[i] = saved;
    EXPECT_NEAR(dx[i], (lp - lm) / (2 * eps), 2e-3) << "dx " << i;
    ++checked;
  }
  for (Parameter* p : net->parameters()) {
    for (size_t i = 0; i < p->value.size(); i += 5) {
      const float saved = p->value[i];
      p->value[i] = saved + eps;
      const double lp = loss_at();
      p->value[i] = saved - eps;
      const double lm = loss_at();
      p->value[i] = saved;
      EXPECT_NEAR(p->grad[i], (lp - lm) / (2 * eps), 2e-3) << p->name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(SequentialTest, ProtoRoundTripGivesIdenticalOutputs) {
  auto net = Build(*ArchitectureByName("cnn"), 3);
  auto copy = Sequential::FromProto(net->ToProto());
  ASSERT_THAT(copy, IsOk());
  base::Rng rng(4);
  std::vector<float> x(4 * 784);
  for (float& v : x) v = static_cast<float>(rng.Uniform());
  const float* a = net->Forward(x.data(), 4, ComputeMode::kFp32, false);
  std::vector<float> ya(a, a + 40);
  const float* b = (*copy)->Forward(x.data(), 4, ComputeMode::kFp32, false);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(ya[i], b[i]);
}

TEST(SequentialTest, SaveAndLoadFile) {
  auto net = Build(*ArchitectureByName("mlp"), 7);
  const std::string path = ::testing::TempDir() + "/mlp.fedgemodel";
  ASSERT_THAT(SaveModel(path, net->ToProto()), IsOk());
  auto loaded = LoadModel(path);
  ASSERT_THAT(loaded, IsOk());
  auto copy = Sequential::FromProto(*loaded);
  ASSERT_THAT(copy, IsOk());
  EXPECT_EQ((*copy)->FindParameter("fc2.weight")->value, net->FindParameter("fc2.weight")->value);
}

TEST(SequentialTest, LoadRejectsMissingAndCorruptFiles) {
  EXPECT_THAT(LoadModel("/nonexistent/model.bin"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/model.bin")));
  const std::string path = ::testing::TempDir() + "/garbage.fedgemodel";
  {
    std::ofstream out(path, std::ios::binary);
    out << "\xff\xff\xff\xff this is not a protobuf";
  }
  EXPECT_THAT(LoadModel(path), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
  // A truncated real model.
  auto net = Build(*ArchitectureByName("mlp"));
  std::string bytes = net->ToProto().SerializeAsString();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), bytes.size() / 2);
  }
  EXPECT_THAT(LoadModel(path), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST(SequentialTest, SetParametersValidatesBeforeChangingAnything) {
  auto net = Build(*ArchitectureByName("mlp"), 1);
  const std::vector<float> before = net->FindParameter("fc1.weight")->value;
  v1::ModelProto proto = net->ToProto();
  for (v1::TensorProto& t : *proto.mutable_parameters()) {
    for (float& v : *t.mutable_values()) v = 0.5f;
  }
  {
    v1::ModelProto bad = proto;
    bad.mutable_parameters(4)->set_values(3, NAN);
    EXPECT_THAT(net->SetParameters(bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("non-finite")));
  }
  {
    v1::ModelProto bad = proto;
    bad.mutable_parameters(2)->set_shape(0, 7);
    EXPECT_THAT(net->SetParameters(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc2.weight")));
  }
  {
    v1::ModelProto bad = proto;
    bad.mutable_parameters()->RemoveLast();
    EXPECT_THAT(net->SetParameters(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing")));
  }
  {
    v1::ModelProto bad = proto;
    bad.add_parameters()->set_name("evil.weight");
    EXPECT_THAT(net->SetParameters(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("evil.weight")));
  }
  {
    v1::ModelProto bad = proto;
    bad.mutable_parameters(0)->mutable_values()->RemoveLast();
    EXPECT_THAT(net->SetParameters(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("values")));
  }
  EXPECT_EQ(net->FindParameter("fc1.weight")->value, before);
  EXPECT_THAT(net->SetParameters(proto), IsOk());
  EXPECT_EQ(net->FindParameter("fc1.weight")->value[0], 0.5f);
}

// A small synthetic 3-class problem: both fp32 and int8-QAT training drive the loss down and
// classify the training set.
TEST(SequentialTest, LearnsASyntheticProblemInFp32AndInt8) {
  for (ComputeMode mode : {ComputeMode::kFp32, ComputeMode::kInt8}) {
    auto net = Build(MlpSpec({8, 32, 3}), 2);
    auto sgd = Sgd::Create({0.1f, 0.9f, 0.0f, false});
    ASSERT_THAT(sgd, IsOk());
    base::Rng rng(3);
    const int n = 96;
    std::vector<float> x(n * 8);
    std::vector<int32_t> y(n);
    for (int i = 0; i < n; ++i) {
      y[i] = i % 3;
      for (int j = 0; j < 8; ++j) {
        x[i * 8 + j] = static_cast<float>(rng.Normal() * 0.5 + (j % 3 == y[i] ? 1.5 : 0.0));
      }
    }
    std::vector<float> grad(n * 3);
    float first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
      net->ZeroGrad();
      const float* logits = net->Forward(x.data(), n, mode, true);
      last = SoftmaxCrossEntropy(logits, y.data(), n, 3, grad.data());
      if (step == 0) first = last;
      net->Backward(grad.data());
      (*sgd)->Step(net->parameters());
    }
    EXPECT_LT(last, first * 0.2f) << ComputeModeName(mode);
    const float* logits = net->Forward(x.data(), n, mode, false);
    EXPECT_GE(CountCorrect(logits, y.data(), n, 3), n * 0.95) << ComputeModeName(mode);
  }
}

// Evaluate reads 8-bit storage a batch at a time: the same loss and accuracy as floats, for
// batches that do and do not divide the examples.
TEST(SequentialTest, EvaluateGivesTheSameResultOnEightBitStorage) {
  auto net = std::move(Sequential::Create(*ArchitectureByName("mlp"))).value();
  net->InitParameters(3);
  data::Dataset floats;
  floats.num_examples = 37;
  floats.shape = {784};
  floats.num_classes = 10;
  base::Rng rng(5);
  for (int i = 0; i < 37 * 784; ++i) {
    floats.features.push_back(static_cast<float>(rng.NextU64() % 256) * (1.0f / 255.0f));
  }
  for (int i = 0; i < 37; ++i) floats.labels.push_back(i % 10);
  data::Dataset u8 = floats;
  ASSERT_TRUE(data::CompactToU8(u8));
  for (int batch : {1, 8, 37, 64}) {
    const EvalResult a = Evaluate(*net, floats, ComputeMode::kFp32, batch);
    const EvalResult b = Evaluate(*net, u8, ComputeMode::kFp32, batch);
    EXPECT_EQ(a.loss, b.loss) << batch;
    EXPECT_EQ(a.accuracy, b.accuracy) << batch;
    EXPECT_EQ(b.examples, 37);
  }
}

}  // namespace
}  // namespace fedge::model
