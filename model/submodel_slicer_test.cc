#include "model/submodel_slicer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/match.h"
#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::model {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::ModelProto RandomModel(const v1::ModelSpec& spec, uint64_t seed) {
  auto net = Sequential::Create(spec);
  EXPECT_THAT(net, IsOk());
  (*net)->InitParameters(seed);
  // Non-zero biases too, so that a wrong bias mapping shows.
  base::Rng rng(seed + 1000);
  v1::ModelProto proto = (*net)->ToProto();
  for (v1::TensorProto& t : *proto.mutable_parameters()) {
    for (float& v : *t.mutable_values()) {
      if (v == 0.0f) v = static_cast<float>(rng.Uniform() - 0.5);
    }
    if (absl::EndsWith(t.name(), ".bias")) {
      for (float& v : *t.mutable_values()) v = static_cast<float>(rng.Uniform() - 0.5);
    }
  }
  return proto;
}

const TensorSlice& SliceNamed(const SubModelSlicer& s, const std::string& name) {
  for (const TensorSlice& t : s.slices()) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no slice " << name;
  return s.slices().front();
}

std::vector<float> Logits(const v1::ModelProto& model, const std::vector<float>& x, int batch) {
  auto net = Sequential::FromProto(model);
  EXPECT_THAT(net, IsOk());
  const float* y = (*net)->Forward(x.data(), batch, ComputeMode::kFp32, false);
  return std::vector<float>(y, y + static_cast<size_t>(batch) * (*net)->output_size());
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Zeroes, in every weight of `full`, the input coordinates the sub-model does not hold
// (the outgoing weights of dropped units), leaving their incoming weights and biases, so
// that dropped units still compute non-zero activations that must not reach the output.
void ZeroOutgoingWeightsOfDroppedUnits(const SubModelSlicer& s, v1::ModelProto* full) {
  for (const TensorSlice& slice : s.slices()) {
    if (slice.full_shape.size() < 2) continue;
    TensorSlice inputs_only = slice;
    inputs_only.kept[0].resize(static_cast<size_t>(slice.full_shape[0]));
    std::iota(inputs_only.kept[0].begin(), inputs_only.kept[0].end(), int64_t{0});
    const std::vector<int64_t> held = SubModelSlicer::HeldIndices(inputs_only);
    for (v1::TensorProto& t : *full->mutable_parameters()) {
      if (t.name() != slice.name) continue;
      std::vector<bool> keep(t.values_size(), false);
      for (int64_t i : held) keep[i] = true;
      for (int i = 0; i < t.values_size(); ++i) {
        if (!keep[i]) t.set_values(i, 0.0f);
      }
    }
  }
}

std::vector<float> RandomInput(int n, uint64_t seed) {
  base::Rng rng(seed);
  std::vector<float> x(n);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  return x;
}

TEST(SubModelSlicerTest, LeadingMlpHalvesEveryHiddenLayerAndKeepsInputAndOutput) {
  auto s = SubModelSlicer::Create(MlpSpec({20, 8, 6, 3}), 0.5, SubModelExtraction::kLeading, 0);
  ASSERT_THAT(s, IsOk());
  const v1::ModelSpec& sub = s->sub_spec();
  EXPECT_EQ(sub.layers(0).dense().in_features(), 20);
  EXPECT_EQ(sub.layers(0).dense().out_features(), 4);
  EXPECT_EQ(sub.layers(2).dense().in_features(), 4);
  EXPECT_EQ(sub.layers(2).dense().out_features(), 3);
  EXPECT_EQ(sub.layers(4).dense().in_features(), 3);
  EXPECT_EQ(sub.layers(4).dense().out_features(), 3);
  EXPECT_THAT(Sequential::Create(sub), IsOk());
  ASSERT_EQ(s->slices().size(), 6u);
  EXPECT_EQ(s->slices()[0].name, "fc1.weight");
  EXPECT_THAT(s->slices()[0].sub_shape(), ElementsAre(4, 20));
  EXPECT_THAT(s->slices()[1].sub_shape(), ElementsAre(4));
  EXPECT_THAT(s->slices()[2].sub_shape(), ElementsAre(3, 4));
  EXPECT_THAT(s->slices()[4].sub_shape(), ElementsAre(3, 3));
  EXPECT_EQ(s->slices()[5].name, "fc3.bias");
  EXPECT_THAT(s->slices()[5].kept[0], ElementsAre(0, 1, 2));
  for (const TensorSlice& t : s->slices()) EXPECT_TRUE(t.leading()) << t.name;
}

// HeteroFL's scalers follow every sliced hidden layer (not the output layer); the scaled
// sub-model has the same parameters and runs with hidden activations ×1/r.
TEST(SubModelSlicerTest, ScaledSubSpecPutsAScalerAfterEveryHiddenLayer) {
  auto s = SubModelSlicer::Create(MlpSpec({20, 8, 6, 3}), 0.5, SubModelExtraction::kLeading, 0);
  ASSERT_THAT(s, IsOk());
  const v1::ModelSpec& scaled = s->scaled_sub_spec();
  ASSERT_EQ(scaled.layers_size(), s->sub_spec().layers_size() + 2);
  EXPECT_EQ(scaled.layers(1).name(), "fc1_scaler");
  EXPECT_FLOAT_EQ(scaled.layers(1).scaler().rate(), 0.5f);
  EXPECT_EQ(scaled.layers(4).name(), "fc2_scaler");
  EXPECT_TRUE(scaled.layers(scaled.layers_size() - 1).has_dense());  // fc3: no scaler
  auto plain = Sequential::Create(s->sub_spec());
  auto with = Sequential::Create(scaled);
  ASSERT_THAT(plain, IsOk());
  ASSERT_THAT(with, IsOk());
  (*plain)->InitParameters(3);
  ASSERT_THAT((*with)->SetParameters((*plain)->ToProto()), IsOk());
  std::vector<float> x(2 * 20);
  base::Rng rng(5);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  const float* a = (*plain)->Forward(x.data(), 2, ComputeMode::kFp32, false);
  std::vector<float> ya(a, a + 6);
  // Scaling a layer's output by 2 is the same as doubling its weights and bias: the plain
  // sub-model with fc1 and fc2 doubled computes what the scaled one computes.
  v1::ModelProto doubled = (*plain)->ToProto();
  for (v1::TensorProto& t : *doubled.mutable_parameters()) {
    if (t.name().rfind("fc3.", 0) == 0) continue;
    for (float& v : *t.mutable_values()) v *= 2.0f;
  }
  ASSERT_THAT((*plain)->SetParameters(doubled), IsOk());
  const float* want = (*plain)->Forward(x.data(), 2, ComputeMode::kFp32, false);
  std::vector<float> y_want(want, want + 6);
  const float* got = (*with)->Forward(x.data(), 2, ComputeMode::kFp32, false);
  double diff = 0;
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(got[i], y_want[i], 1e-5f * (1 + std::fabs(y_want[i])));
    diff += std::fabs(got[i] - ya[i]);
  }
  EXPECT_GT(diff, 1e-3);  // and differs from the unscaled sub-model
  auto full = SubModelSlicer::Create(MlpSpec({20, 8, 6, 3}), 1.0, SubModelExtraction::kLeading, 0);
  ASSERT_THAT(full, IsOk());
  EXPECT_EQ(full->scaled_sub_spec().layers_size(), full->sub_spec().layers_size());
}

TEST(SubModelSlicerTest, KeptCountIsTheCeilingWithoutFloatingPointCreep) {
  // 0.1 · 30 = 3.0000000000000004 in double: still 3 units.
  auto a = SubModelSlicer::Create(MlpSpec({5, 30, 2}), 0.1, SubModelExtraction::kLeading, 0);
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->sub_spec().layers(0).dense().out_features(), 3);
  // ⌈0.25 · 6⌉ = 2; ⌈0.01 · 10⌉ = 1 (never zero units).
  auto b = SubModelSlicer::Create(MlpSpec({5, 6, 2}), 0.25, SubModelExtraction::kLeading, 0);
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(b->sub_spec().layers(0).dense().out_features(), 2);
  auto c = SubModelSlicer::Create(MlpSpec({5, 10, 2}), 0.01, SubModelExtraction::kRandomSubset, 3);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->sub_spec().layers(0).dense().out_features(), 1);
}

TEST(SubModelSlicerTest, FlattenMapsKeptChannelsToNhwcColumns) {
  // conv2 has 6 channels on a 2×2 map before the flatten; keep 3 of them.
  const v1::ModelSpec spec = SimpleCnnSpec(20, 20, 1, 4, 6, {5}, 3);
  auto s = SubModelSlicer::Create(spec, 0.5, SubModelExtraction::kRandomSubset, 11);
  ASSERT_THAT(s, IsOk());
  const std::vector<int64_t>& channels = SliceNamed(*s, "conv2.weight").kept[0];
  ASSERT_EQ(channels.size(), 3u);
  // conv2's in-channel slice = conv1's kept channels.
  EXPECT_EQ(SliceNamed(*s, "conv2.weight").kept[3], SliceNamed(*s, "conv1.weight").kept[0]);
  EXPECT_EQ(SliceNamed(*s, "conv2.bias").kept[0], channels);
  // 20 → conv 16 → pool 8 → conv 4 → pool 2: the flatten sees [2, 2, 6].
  std::vector<int64_t> want;
  for (int64_t hw = 0; hw < 4; ++hw) {
    for (int64_t c : channels) want.push_back(hw * 6 + c);
  }
  const TensorSlice& fc1 = SliceNamed(*s, "fc1.weight");
  EXPECT_THAT(fc1.full_shape, ElementsAre(5, 24));
  EXPECT_EQ(fc1.kept[1], want);
  EXPECT_EQ(s->sub_spec().layers(7).dense().in_features(), 12);
  EXPECT_THAT(Sequential::Create(s->sub_spec()), IsOk());
}

// The real test of the mapping: in a full model whose dropped units have zero OUTGOING
// weights (but still compute non-zero activations), the full model's logits equal the
// sliced model's. Any misplaced column, channel or bias would read a live dropped unit.
TEST(SubModelSlicerTest, SlicedCnnComputesWhatTheFullCnnComputesWithoutDroppedUnits) {
  // 20 → conv 16 → pool 8 → conv 4 → pool 2: a 2×2 map, so that flatten order matters
  // (on a 1×1 map NHWC and channel-major orders coincide).
  const v1::ModelSpec spec = SimpleCnnSpec(20, 20, 2, 6, 8, {10, 7}, 4);
  for (SubModelExtraction e : {SubModelExtraction::kLeading, SubModelExtraction::kRandomSubset}) {
    for (double r : {0.25, 0.5, 0.75}) {
      auto s = SubModelSlicer::Create(spec, r, e, 42);
      ASSERT_THAT(s, IsOk());
      v1::ModelProto full = RandomModel(spec, 5);
      const int batch = 3;
      const std::vector<float> x = RandomInput(batch * 20 * 20 * 2, 9);
      const std::vector<float> before = Logits(full, x, batch);
      ZeroOutgoingWeightsOfDroppedUnits(*s, &full);
      auto sub = s->Slice(full);
      ASSERT_THAT(sub, IsOk());
      const std::vector<float> full_logits = Logits(full, x, batch);
      // The zeroing matters (else this test could not fail)...
      EXPECT_GT(MaxAbsDiff(before, full_logits), 1e-3f);
      // ...and the sub-model computes exactly the masked full model.
      EXPECT_LT(MaxAbsDiff(full_logits, Logits(*sub, x, batch)), 1e-4f)
          << "r=" << r << " random=" << (e == SubModelExtraction::kRandomSubset);
    }
  }
}

// A convolution without bias slices to one without bias (and the masked full model still
// equals its sub-model).
TEST(SubModelSlicerTest, ConvolutionsWithoutBiasSlice) {
  v1::ModelSpec spec = SimpleCnnSpec(20, 20, 2, 6, 8, {10, 7}, 4);
  for (v1::LayerSpec& l : *spec.mutable_layers()) {
    if (l.has_conv2d()) l.mutable_conv2d()->set_no_bias(true);
  }
  auto s = SubModelSlicer::Create(spec, 0.5, SubModelExtraction::kLeading, 42);
  ASSERT_THAT(s, IsOk());
  v1::ModelProto full = RandomModel(spec, 5);
  ZeroOutgoingWeightsOfDroppedUnits(*s, &full);
  auto sub = s->Slice(full);
  ASSERT_THAT(sub, IsOk());
  const std::vector<float> x = RandomInput(2 * 20 * 20 * 2, 9);
  EXPECT_LT(MaxAbsDiff(Logits(full, x, 2), Logits(*sub, x, 2)), 1e-4f);
}

TEST(SubModelSlicerTest, SlicedMlpComputesWhatTheFullMlpComputesWithoutDroppedUnits) {
  const v1::ModelSpec spec = MlpSpec({12, 9, 7, 5});
  auto s = SubModelSlicer::Create(spec, 0.4, SubModelExtraction::kRandomSubset, 7);
  ASSERT_THAT(s, IsOk());
  v1::ModelProto full = RandomModel(spec, 3);
  ZeroOutgoingWeightsOfDroppedUnits(*s, &full);
  auto sub = s->Slice(full);
  ASSERT_THAT(sub, IsOk());
  const std::vector<float> x = RandomInput(4 * 12, 1);
  EXPECT_LT(MaxAbsDiff(Logits(full, x, 4), Logits(*sub, x, 4)), 1e-5f);
}

TEST(SubModelSlicerTest, SliceThenUnsliceIsTheIdentityOnHeldCoordinatesOnly) {
  const v1::ModelSpec spec = SimpleCnnSpec(20, 20, 1, 4, 6, {9}, 3);
  auto s = SubModelSlicer::Create(spec, 0.5, SubModelExtraction::kRandomSubset, 123);
  ASSERT_THAT(s, IsOk());
  const v1::ModelProto full = RandomModel(spec, 8);
  auto sub = s->Slice(full);
  ASSERT_THAT(sub, IsOk());
  ASSERT_EQ(sub->parameters_size(), full.parameters_size());
  constexpr float kSentinel = -12345.0f;
  int64_t held_total = 0, untouched_total = 0;
  for (size_t i = 0; i < s->slices().size(); ++i) {
    const TensorSlice& slice = s->slices()[i];
    const v1::TensorProto& ft = full.parameters(static_cast<int>(i));
    const v1::TensorProto& st = sub->parameters(static_cast<int>(i));
    ASSERT_EQ(st.name(), slice.name);
    std::vector<float> back(ft.values_size(), kSentinel);
    ASSERT_THAT(s->Unslice(slice, st.values(), absl::MakeSpan(back)), IsOk());
    std::vector<bool> held(back.size(), false);
    for (int64_t j : SubModelSlicer::HeldIndices(slice)) held[j] = true;
    for (size_t j = 0; j < back.size(); ++j) {
      if (held[j]) {
        EXPECT_EQ(back[j], ft.values(static_cast<int>(j))) << slice.name << " " << j;
        ++held_total;
      } else {
        EXPECT_EQ(back[j], kSentinel) << slice.name << " " << j;
        ++untouched_total;
      }
    }
  }
  EXPECT_GT(held_total, 0);
  EXPECT_GT(untouched_total, 0);
}

TEST(SubModelSlicerTest, RatioOneIsTheIdentity) {
  const v1::ModelSpec spec = SimpleCnnSpec(20, 20, 1, 4, 6, {9}, 3);
  const v1::ModelProto full = RandomModel(spec, 2);
  for (SubModelExtraction e : {SubModelExtraction::kLeading, SubModelExtraction::kRandomSubset}) {
    auto s = SubModelSlicer::Create(spec, 1.0, e, 99);
    ASSERT_THAT(s, IsOk());
    EXPECT_EQ(s->sub_spec().SerializeAsString(), spec.SerializeAsString());
    for (const TensorSlice& t : s->slices()) {
      EXPECT_TRUE(t.leading()) << t.name;
      EXPECT_EQ(t.sub_shape(), t.full_shape) << t.name;
    }
    auto sub = s->Slice(full);
    ASSERT_THAT(sub, IsOk());
    EXPECT_EQ(sub->SerializeAsString(), full.SerializeAsString());
  }
}

TEST(SubModelSlicerTest, RandomSubsetIsDeterministicPerSeedAndDiffersAcrossSeeds) {
  const v1::ModelSpec spec = MlpSpec({10, 40, 40, 3});
  auto kept = [&](uint64_t seed) {
    auto s = SubModelSlicer::Create(spec, 0.25, SubModelExtraction::kRandomSubset, seed);
    EXPECT_THAT(s, IsOk());
    return std::make_pair(s->slices()[0].kept[0], s->slices()[2].kept[0]);
  };
  const auto a = kept(1), b = kept(1), c = kept(2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a.first.size(), 10u);
  EXPECT_TRUE(std::is_sorted(a.first.begin(), a.first.end()));
  EXPECT_EQ(std::adjacent_find(a.first.begin(), a.first.end()), a.first.end());  // distinct
  EXPECT_GE(a.first.front(), 0);
  EXPECT_LT(a.first.back(), 40);
  // Not the prefix (10 of 40 drawn at random: a prefix has probability 1/C(40,10)).
  EXPECT_NE(a.first, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Layers draw independently: fc2's kept inputs are fc1's kept units.
  auto s = SubModelSlicer::Create(spec, 0.25, SubModelExtraction::kRandomSubset, 1);
  EXPECT_EQ(s->slices()[2].kept[1], a.first);
}

TEST(SubModelSlicerTest, HeldIndicesAreTheRowMajorOffsetsOfTheSubTensor) {
  TensorSlice t{"w", {3, 4}, {{0, 2}, {1, 3}}};
  EXPECT_THAT(SubModelSlicer::HeldIndices(t), ElementsAre(1, 3, 9, 11));
  TensorSlice c{"conv.weight", {2, 2, 2, 3}, {{1}, {0, 1}, {0, 1}, {0, 2}}};
  // Offsets of (1, kh, kw, c∈{0,2}) in a [2,2,2,3] tensor: 12 + (kh·2 + kw)·3 + c.
  EXPECT_THAT(SubModelSlicer::HeldIndices(c), ElementsAre(12, 14, 15, 17, 18, 20, 21, 23));
  TensorSlice bias{"b", {5}, {{1, 4}}};
  EXPECT_THAT(SubModelSlicer::HeldIndices(bias), ElementsAre(1, 4));
  auto s = SubModelSlicer::Create(MlpSpec({784, 400, 400, 10}), 0.25,
                                  SubModelExtraction::kLeading, 0);
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ(SubModelSlicer::HeldIndices(s->slices()[0]).size(), 100u * 784);
  EXPECT_EQ(SubModelSlicer::HeldIndices(s->slices()[2]).size(), 100u * 100);
  EXPECT_EQ(SubModelSlicer::HeldIndices(s->slices()[4]).size(), 10u * 100);
}

TEST(SubModelSlicerTest, RejectsBadRatiosAndModels) {
  const v1::ModelSpec spec = MlpSpec({4, 4, 2});
  for (double r : {0.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN(),
                   std::numeric_limits<double>::infinity()}) {
    EXPECT_THAT(SubModelSlicer::Create(spec, r, SubModelExtraction::kLeading, 0),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("width_ratio"))) << r;
  }
  v1::ModelSpec broken = spec;
  broken.mutable_layers(2)->mutable_dense()->set_in_features(3);
  EXPECT_THAT(SubModelSlicer::Create(broken, 0.5, SubModelExtraction::kLeading, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc2")));
}

TEST(SubModelSlicerTest, SliceAndUnsliceRejectMismatchedTensors) {
  const v1::ModelSpec spec = MlpSpec({4, 6, 2});
  auto s = SubModelSlicer::Create(spec, 0.5, SubModelExtraction::kLeading, 0);
  ASSERT_THAT(s, IsOk());
  const v1::ModelProto full = RandomModel(spec, 1);
  v1::ModelProto wrong_shape = full;
  wrong_shape.mutable_parameters(0)->set_shape(0, 5);
  EXPECT_THAT(s->Slice(wrong_shape),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.weight")));
  v1::ModelProto missing = full;
  missing.mutable_parameters()->RemoveLast();
  EXPECT_THAT(s->Slice(missing),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc2.bias")));
  v1::ModelProto extra = full;
  extra.add_parameters()->set_name("fc9.weight");
  EXPECT_THAT(s->Slice(extra), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc9")));
  std::vector<float> sub(11), buf(24);
  EXPECT_THAT(s->Unslice(s->slices()[0], sub, absl::MakeSpan(buf)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.weight")));
}

TEST(SubModelSlicerTest, TrainingMemoryGrowsWithWidthAndIsAboutQuadraticForDenseModels) {
  const v1::ModelSpec mlp = MlpSpec({784, 400, 400, 10});
  const v1::ModelSpec cnn = SimpleCnnSpec(28, 28, 1, 32, 64, {512}, 10);
  for (const v1::ModelSpec* spec : {&mlp, &cnn}) {
    int64_t last = 0;
    for (double r : {0.125, 0.25, 0.5, 1.0}) {
      auto s = SubModelSlicer::Create(*spec, r, SubModelExtraction::kLeading, 0);
      ASSERT_THAT(s, IsOk());
      const int64_t bytes = EstimateTrainingMemoryBytes(s->sub_spec(), 64, false);
      EXPECT_GT(bytes, last) << spec->name() << " r=" << r;
      last = bytes;
    }
  }
  // The parameters alone of mlp 784-400-400-10: 4·(3 + 1)·P bytes with SGD.
  const int64_t p = 784 * 400 + 400 + 400 * 400 + 400 + 400 * 10 + 10;
  const int64_t full = EstimateTrainingMemoryBytes(mlp, 1, false);
  EXPECT_GE(full, 16 * p);
  EXPECT_LT(full, 18 * p);
  EXPECT_GT(EstimateTrainingMemoryBytes(mlp, 64, true), EstimateTrainingMemoryBytes(mlp, 64, false));
  EXPECT_GT(EstimateTrainingMemoryBytes(mlp, 128, false), EstimateTrainingMemoryBytes(mlp, 64, false));
  // Hidden-to-hidden weights shrink as r², input and output layers as r: at r = 1/2 the
  // mlp needs between r² and r of the full model's memory.
  auto half = SubModelSlicer::Create(mlp, 0.5, SubModelExtraction::kLeading, 0);
  ASSERT_THAT(half, IsOk());
  const double ratio = static_cast<double>(EstimateTrainingMemoryBytes(half->sub_spec(), 1, false)) /
                       static_cast<double>(full);
  EXPECT_GT(ratio, 0.25);
  EXPECT_LT(ratio, 0.5);
  v1::ModelSpec broken = mlp;
  broken.mutable_layers(2)->mutable_dense()->set_in_features(3);
  EXPECT_EQ(EstimateTrainingMemoryBytes(broken, 64, false), -1);
  EXPECT_EQ(EstimateTrainingMemoryBytes(mlp, 0, false), -1);
}

}  // namespace
}  // namespace fedge::model
