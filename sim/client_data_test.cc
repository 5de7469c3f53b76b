#include "sim/client_data.h"

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/status_macros.h"
#include "sim/sim_config.h"
#include "tests/status_matchers.h"

namespace fedge::sim {
namespace {

using ::fedge::testing::IsOk;

v1::SimConfig Synthetic(double label_alpha) {
  absl::StatusOr<v1::SimConfig> c = ParseSimConfig(R"pb(
    job {
      name: "t"
      model_spec {
        name: "m"
        input_shape: 8
        layers { name: "fc" dense { in_features: 8 out_features: 5 } }
      }
      rounds: 1
      selection { clients_per_round: 2 }
    }
    population: 1000
    data { synthetic { features: 8 classes: 5 examples_per_client: 200 test_examples: 300 seed: 4 } }
  )pb");
  FEDGE_CHECK_OK(c.status());
  c->mutable_data()->mutable_synthetic()->set_label_alpha(label_alpha);
  absl::StatusOr<v1::SimConfig> v = ValidateSimConfig(*c);
  FEDGE_CHECK_OK(v.status());
  return *v;
}

int DistinctLabels(const data::Dataset& d) {
  return static_cast<int>(std::set<int32_t>(d.labels.begin(), d.labels.end()).size());
}

TEST(ClientDataTest, SyntheticClientsAreRegeneratedIdentically) {
  absl::StatusOr<std::unique_ptr<ClientDataSource>> source = MakeClientDataSource(Synthetic(0));
  ASSERT_THAT(source, IsOk());
  const data::Dataset a = (*source)->ClientData(7);
  const data::Dataset b = (*source)->ClientData(7);
  const data::Dataset other = (*source)->ClientData(8);
  EXPECT_THAT(data::ValidateDataset(a), IsOk());
  EXPECT_EQ(a.num_examples, 200);
  EXPECT_EQ((*source)->NumExamples(7), 200);
  EXPECT_EQ(a.features, b.features);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_NE(a.features, other.features);
  EXPECT_EQ(DistinctLabels(a), 5);  // uniform labels: 200 draws hit all 5 classes
  EXPECT_EQ((*source)->TestData()->num_examples, 300);
}

TEST(ClientDataTest, SyntheticLabelSkewConcentratesLabels) {
  absl::StatusOr<std::unique_ptr<ClientDataSource>> skewed = MakeClientDataSource(Synthetic(0.05));
  ASSERT_THAT(skewed, IsOk());
  int few = 0;
  for (int c = 0; c < 20; ++c) few += DistinctLabels((*skewed)->ClientData(c)) <= 2;
  EXPECT_GE(few, 15);  // Dir(0.05) puts nearly all mass on one or two classes
}

TEST(ClientDataTest, FashionMnistThousandsOfDirichletShards) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed";
  }
  absl::StatusOr<v1::SimConfig> c = ParseSimConfig(R"pb(
    job { name: "t" architecture: "mlp" rounds: 1 selection { clients_per_round: 10 } }
    population: 10000
    data { fashion_mnist { dirichlet { alpha: 0.5 } partitions: 6000 test_examples: 100 } }
  )pb");
  ASSERT_THAT(c, IsOk());
  absl::StatusOr<v1::SimConfig> v = ValidateSimConfig(*c);
  ASSERT_THAT(v, IsOk());
  absl::StatusOr<std::unique_ptr<ClientDataSource>> source = MakeClientDataSource(*v);
  ASSERT_THAT(source, IsOk());
  int64_t total = 0;
  int skewed = 0;
  for (int s = 0; s < 6000; ++s) {
    const int64_t n = (*source)->NumExamples(s);
    EXPECT_GE(n, 2) << "shard " << s;
    total += n;
  }
  for (int s = 0; s < 100; ++s) skewed += DistinctLabels((*source)->ClientData(s)) <= 4;
  EXPECT_EQ(total, 60000);  // the shards' sizes add up to the train split
  // Label skew survives the split into groups: IID shards of ~10 examples have <= 4
  // distinct labels about 2% of the time.
  EXPECT_GT(skewed, 50) << skewed;
  // Client 6000 + c shares shard c.
  EXPECT_EQ((*source)->ClientData(6003).labels, (*source)->ClientData(3).labels);
  EXPECT_EQ((*source)->TestData()->num_examples, 100);
}

// FedCG's paper split: shards capped at max_examples_per_partition, and per-client test sets
// (the test half of each shard's part of the test split), disjoint between shards.
TEST(ClientDataTest, FashionMnistCappedShardsAndClientTestSets) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed";
  }
  absl::StatusOr<v1::SimConfig> c = ParseSimConfig(R"pb(
    job { name: "t" architecture: "mlp" rounds: 1 selection { clients_per_round: 4 } }
    population: 8
    data {
      fashion_mnist {
        partitions: 4
        max_examples_per_partition: 50
        test_examples: 100
        client_test_sets: true
      }
    }
  )pb");
  ASSERT_THAT(c, IsOk());
  absl::StatusOr<v1::SimConfig> v = ValidateSimConfig(*c);
  ASSERT_THAT(v, IsOk());
  absl::StatusOr<std::unique_ptr<ClientDataSource>> source = MakeClientDataSource(*v);
  ASSERT_THAT(source, IsOk());
  std::set<std::vector<float>> seen;
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ((*source)->NumExamples(s), 50);
    EXPECT_EQ((*source)->ClientData(s).num_examples, 50);
    const data::Dataset test = (*source)->ClientTestData(s);
    EXPECT_EQ(test.num_examples, 13);  // parts of 25, halves of 12 (validation) and 13 (test)
    for (int i = 0; i < test.num_examples; ++i) {
      std::vector<float> x(test.feature_size());
      test.CopyExample(i, x.data());  // Fashion-MNIST is held in 8-bit storage
      seen.insert(std::move(x));
    }
  }
  EXPECT_EQ(seen.size(), 4u * 13);  // disjoint
  // Client 4 + s shares shard s, and its test set.
  EXPECT_EQ((*source)->ClientTestData(5).labels, (*source)->ClientTestData(1).labels);
  EXPECT_EQ((*source)->TestData()->num_examples, 100);  // the coordinator's is unchanged
}

}  // namespace
}  // namespace fedge::sim
