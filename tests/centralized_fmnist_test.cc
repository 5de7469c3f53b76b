// End-to-end: the real Fashion-MNIST through data/, model/ and kernels/.
//   Quick (label "integration"): a slice of the data learns in fp32 and int8-QAT.
//   Slow (label "slow"): the full 15-epoch recipe meets the foundation's accuracy bar —
//     mlp ≥ 88.5% and cnn ≥ 89.5% in fp32, int8-QAT within 1.0 point of fp32.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "data/idx_reader.h"
#include "gtest/gtest.h"
#include "model/centralized.h"
#include "tests/status_matchers.h"

namespace fedge {
namespace {

using ::fedge::testing::IsOk;

class CentralizedFmnistTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto fm = data::LoadFashionMnist();
    ASSERT_THAT(fm, IsOk()) << "install the Debian package dataset-fashion-mnist";
    data_ = new data::FashionMnist(*std::move(fm));
    data::Standardize(data_->train, data::kFashionMnistMean, data::kFashionMnistStd);
    data::Standardize(data_->test, data::kFashionMnistMean, data::kFashionMnistStd);
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }

  // Trains with the default recipe and returns the last epoch's test accuracy.
  static double Train(const std::string& arch, model::ComputeMode mode, int epochs,
                      const data::Dataset& train) {
    model::CentralizedOptions options;
    options.architecture = arch;
    options.mode = mode;
    options.epochs = epochs;
    double accuracy = 0;
    auto net = model::TrainCentralized(options, train, data_->test,
                                       [&](const model::CentralizedEpoch& e) {
                                         accuracy = e.test.accuracy;
                                         std::printf("%s %s epoch %d: test accuracy %.4f\n",
                                                     arch.c_str(),
                                                     std::string(ComputeModeName(mode)).c_str(),
                                                     e.epoch, e.test.accuracy);
                                       });
    EXPECT_THAT(net, IsOk());
    return accuracy;
  }

  static data::FashionMnist* data_;
};

data::FashionMnist* CentralizedFmnistTest::data_ = nullptr;

TEST_F(CentralizedFmnistTest, MlpLearnsASliceInFp32AndInt8) {
  std::vector<int> first(10000);
  for (int i = 0; i < 10000; ++i) first[i] = i;
  const data::Dataset slice = data::Subset(data_->train, first);
  EXPECT_GE(Train("mlp", model::ComputeMode::kFp32, 2, slice), 0.80);
  EXPECT_GE(Train("mlp", model::ComputeMode::kInt8, 2, slice), 0.80);
}

TEST_F(CentralizedFmnistTest, CnnLearnsASliceInInt8) {
  std::vector<int> first(5000);
  for (int i = 0; i < 5000; ++i) first[i] = i;
  EXPECT_GE(Train("cnn", model::ComputeMode::kInt8, 2, data::Subset(data_->train, first)), 0.75);
}

TEST_F(CentralizedFmnistTest, RejectsInt4TrainingAndMismatchedData) {
  model::CentralizedOptions options;
  options.mode = model::ComputeMode::kInt4;
  EXPECT_FALSE(model::TrainCentralized(options, data_->test, data_->test, nullptr).ok());
  options.mode = model::ComputeMode::kFp32;
  data::Dataset wrong = data_->test;
  wrong.num_classes = 5;
  for (int32_t& y : wrong.labels) y %= 5;
  EXPECT_FALSE(model::TrainCentralized(options, wrong, data_->test, nullptr).ok());
}

// The acceptance bar (slow: the full 15-epoch recipe, four runs).
class CentralizedFmnistBarTest : public CentralizedFmnistTest,
                                 public ::testing::WithParamInterface<const char*> {};

TEST_P(CentralizedFmnistBarTest, MeetsAccuracyBarInFp32AndInt8) {
  const std::string arch = GetParam();
  const double bar = arch == "mlp" ? 0.885 : 0.895;
  const double fp32 = Train(arch, model::ComputeMode::kFp32, 15, data_->train);
  const double int8 = Train(arch, model::ComputeMode::kInt8, 15, data_->train);
  std::printf("%s: fp32 %.4f, int8-QAT %.4f (bar %.3f, int8 within 0.010)\n", arch.c_str(),
              fp32, int8, bar);
  EXPECT_GE(fp32, bar);
  EXPECT_GE(int8, fp32 - 0.010);
}

INSTANTIATE_TEST_SUITE_P(Models, CentralizedFmnistBarTest, ::testing::Values("mlp", "cnn"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace fedge
