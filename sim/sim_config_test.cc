#include "sim/sim_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::sim {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A 16-feature, 4-class synthetic task for a tiny MLP.
constexpr char kJob[] = R"pb(
  job {
    name: "tiny"
    model_spec {
      name: "tiny-mlp"
      input_shape: 16
      layers { name: "fc1" dense { in_features: 16 out_features: 8 } }
      layers { name: "relu1" relu {} }
      layers { name: "fc2" dense { in_features: 8 out_features: 4 } }
    }
    rounds: 2
    selection { clients_per_round: 5 }
    round_policy { deadline_seconds: 60 }
  }
)pb";

absl::StatusOr<v1::SimConfig> Load(const std::string& rest) {
  absl::StatusOr<v1::SimConfig> parsed = ParseSimConfig(std::string(kJob) + rest, "test.textproto");
  if (!parsed.ok()) return parsed.status();
  return ValidateSimConfig(*parsed);
}

constexpr char kSynthetic[] =
    "population: 20 data { synthetic { features: 16 classes: 4 examples_per_client: 10 } }";

TEST(SimConfigTest, SyntheticConfigValidatesWithDefaults) {
  absl::StatusOr<v1::SimConfig> c = Load(kSynthetic);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->population(), 20);
  EXPECT_DOUBLE_EQ(c->devices().compute_speed().constant(), 1000);
  EXPECT_DOUBLE_EQ(c->devices().availability().constant(), 1);
  EXPECT_DOUBLE_EQ(c->links().bandwidth_up_mbps().constant(), 5);
  EXPECT_DOUBLE_EQ(c->data().synthetic().separation(), 3);
  EXPECT_EQ(c->data().synthetic().test_examples(), 2000);
  EXPECT_EQ(c->job().round_policy().quorum(), 5);  // the job's own defaults filled too
}

TEST(SimConfigTest, UnknownFieldIsNamedWithItsLine) {
  EXPECT_THAT(Load(std::string(kSynthetic) + " populaton: 3"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("SimConfig"), HasSubstr("test.textproto:"),
                             HasSubstr("populaton"))));
}

TEST(SimConfigTest, NegativeCountsAreNamed) {
  EXPECT_THAT(Load("population: -5 data { synthetic { features: 16 classes: 4 "
                   "examples_per_client: -1 } }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("population must be in [1, 1000000], got -5"),
                             HasSubstr("data.synthetic.examples_per_client"))));
  EXPECT_THAT(Load(std::string(kSynthetic) + " threads: -1"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("threads")));
}

TEST(SimConfigTest, ClientsPerRoundAbovePopulationIsRefused) {
  EXPECT_THAT(Load("population: 3 data { synthetic { features: 16 classes: 4 "
                   "examples_per_client: 10 } }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job.selection.clients_per_round (5) exceeds population (3)")));
}

TEST(SimConfigTest, MissingDatasetIsNamed) {
  EXPECT_THAT(Load("population: 20"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("data a dataset is required (fashion_mnist, synthetic or brown)")));
}

TEST(SimConfigTest, MissingJobIsNamed) {
  absl::StatusOr<v1::SimConfig> parsed = ParseSimConfig(kSynthetic);
  ASSERT_THAT(parsed, IsOk());
  EXPECT_THAT(ValidateSimConfig(*parsed),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job is required")));
}

TEST(SimConfigTest, SecureAggregationIsSimulated) {
  absl::StatusOr<v1::SimConfig> parsed = ParseSimConfig(std::string(kJob) + kSynthetic);
  ASSERT_THAT(parsed, IsOk());
  parsed->mutable_job()->mutable_privacy()->set_clip_norm(1.0);
  parsed->mutable_job()->mutable_privacy()->set_secure_aggregation_threshold(2);
  parsed->mutable_job()->mutable_round_policy()->set_quorum(2);
  EXPECT_THAT(ValidateSimConfig(*parsed), IsOk());
}

constexpr char kFedCgJob[] = R"pb(
  job { name: "fedcg" rounds: 2 strategy { fed_cg {} } selection { clients_per_round: 4 } }
  population: 4
)pb";

TEST(SimConfigTest, FedCgNeedsImagesAndTheFashionMnistShape) {
  absl::StatusOr<v1::SimConfig> ok = ParseSimConfig(
      std::string(kFedCgJob) +
      "data { fashion_mnist { partitions: 4 max_examples_per_partition: 2000 "
      "client_test_sets: true } }");
  ASSERT_THAT(ok, IsOk());
  EXPECT_THAT(ValidateSimConfig(*ok), IsOk());
  absl::StatusOr<v1::SimConfig> synthetic = ParseSimConfig(
      std::string(kFedCgJob) + "data { synthetic { features: 16 classes: 4 examples_per_client: 10 } }");
  ASSERT_THAT(synthetic, IsOk());
  EXPECT_THAT(ValidateSimConfig(*synthetic),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("data"), HasSubstr("images"))));
  absl::StatusOr<v1::SimConfig> few = ParseSimConfig(
      std::string(kFedCgJob) +
      "data { fashion_mnist { partitions: 4 test_examples: 4 client_test_sets: true } }");
  ASSERT_THAT(few, IsOk());
  EXPECT_THAT(ValidateSimConfig(*few),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("data.fashion_mnist.client_test_sets")));
}

TEST(SimConfigTest, ExampleFedCgConfigValidates) {
  absl::StatusOr<v1::SimConfig> c = LoadSimConfigFile(
      std::string(FEDGE_SOURCE_DIR) + "/examples/sim_fedcg.textproto");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->population(), 4);
  EXPECT_EQ(c->data().fashion_mnist().max_examples_per_partition(), 2000);
  EXPECT_EQ(c->job().strategy().fed_cg().distill_steps(), 2000);
}

TEST(SimConfigTest, EveryExampleConfigValidates) {
  for (const char* name : {"sim_fleet", "sim_hetero", "sim_10k", "sim_100k", "sim_100k_synthetic",
                           "sim_throughput", "sim_fedcg", "sim_secagg"}) {
    EXPECT_THAT(LoadSimConfigFile(std::string(FEDGE_SOURCE_DIR) + "/examples/" + name +
                                  ".textproto")
                    .status(),
                IsOk())
        << name;
  }
}

TEST(SimConfigTest, JobErrorsArePrefixed) {
  absl::StatusOr<v1::SimConfig> parsed = ParseSimConfig(std::string(kJob) + kSynthetic);
  ASSERT_THAT(parsed, IsOk());
  parsed->mutable_job()->mutable_local_training()->set_batch_size(0);
  EXPECT_THAT(ValidateSimConfig(*parsed),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("job:"), HasSubstr("local_training.batch_size"))));
}

TEST(SimConfigTest, BadDistributionsAreNamed) {
  EXPECT_THAT(Load(std::string(kSynthetic) +
                   " devices { compute_speed { choices { values: [1, 2] weights: [1] } } "
                   "availability { uniform { min: 0.5 max: 1.5 } } }"
                   " links { latency_ms { lognormal { median: -1 sigma: 1 } } }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("devices.compute_speed.choices.weights has 1 entries"),
                             HasSubstr("devices.availability.uniform.max"),
                             HasSubstr("links.latency_ms.lognormal.median"))));
  EXPECT_THAT(Load(std::string(kSynthetic) + " devices { compute_speed { constant: 0 } }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("devices.compute_speed.constant must be in (0, inf]")));
}

TEST(SimConfigTest, DropoutsNeedADeadline) {
  absl::StatusOr<v1::SimConfig> parsed =
      ParseSimConfig(std::string(kJob) + kSynthetic + " devices { dropout { constant: 0.1 } }");
  ASSERT_THAT(parsed, IsOk());
  parsed->mutable_job()->mutable_round_policy()->set_deadline_seconds(0);
  EXPECT_THAT(ValidateSimConfig(*parsed),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job.round_policy.deadline_seconds must be > 0")));
  // Without dropouts or offline devices no deadline is fine.
  parsed->mutable_devices()->clear_dropout();
  EXPECT_THAT(ValidateSimConfig(*parsed), IsOk());
}

TEST(SimConfigTest, ModelMustFitTheData) {
  EXPECT_THAT(Load("population: 20 data { synthetic { features: 10 classes: 4 "
                   "examples_per_client: 10 } }"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job.model_spec takes 16 inputs and gives 4 outputs; the data "
                                 "has 10 features and 4 classes")));
}

TEST(SimConfigTest, FashionMnistPartitionsAreBoundedAndDefaulted) {
  absl::StatusOr<v1::SimConfig> parsed = ParseSimConfig(R"pb(
    job { name: "f" architecture: "mlp" rounds: 1 selection { clients_per_round: 10 } }
    population: 100000
    data { fashion_mnist { dirichlet { alpha: 0.5 } } }
  )pb");
  ASSERT_THAT(parsed, IsOk());
  absl::StatusOr<v1::SimConfig> c = ValidateSimConfig(*parsed);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->data().fashion_mnist().partitions(), kMaxFashionMnistPartitions);
  EXPECT_EQ(c->data().fashion_mnist().min_examples(), 2);  // more than 100 shards
  parsed->mutable_data()->mutable_fashion_mnist()->set_partitions(7000);
  parsed->mutable_data()->mutable_fashion_mnist()->mutable_dirichlet()->set_alpha(0);
  EXPECT_THAT(ValidateSimConfig(*parsed),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("data.fashion_mnist.partitions must be in [0, 6000]"),
                             HasSubstr("data.fashion_mnist.dirichlet.alpha"))));
}

TEST(SimConfigTest, NumpyStreamIsForIidAndDirichletWith32BitSeeds) {
  absl::StatusOr<v1::SimConfig> parsed = ParseSimConfig(R"pb(
    job { name: "f" architecture: "mlp" rounds: 1 selection { clients_per_round: 10 } }
    population: 10
    data { fashion_mnist { dirichlet { alpha: 0.5 } numpy_stream: true } }
  )pb");
  ASSERT_THAT(parsed, IsOk());
  EXPECT_THAT(ValidateSimConfig(*parsed), IsOk());
  parsed->mutable_data()->mutable_fashion_mnist()->mutable_k_classes()->set_k(2);
  parsed->mutable_data()->mutable_fashion_mnist()->set_seed(1ULL << 32);
  EXPECT_THAT(ValidateSimConfig(*parsed),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("data.fashion_mnist.numpy_stream reproduces NIID-Bench's "
                                       "iid and dirichlet splits only"),
                             HasSubstr("data.fashion_mnist.seed (4294967296) must be below 2^32"))));
}

}  // namespace
}  // namespace fedge::sim
